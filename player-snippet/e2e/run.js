/**
 * End-to-end harness: Debian's chromium (playwright-core) plays a page with the snippet.
 * Phase 1: a stand-in collector in this process (GET /v1/keys, POST /v1/r/… opened with the
 * private key). Phase 2: pass --collector http://127.0.0.1:PORT to report to `streamtally serve`.
 *
 *   node e2e/run.js [--mode sender|hlsjs|video] [--seconds 8] [--collector URL --key EMBED_KEY --port N]
 * (a real collector must list this harness's origin, printed on stderr, among the account's origins)
 */
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { ROOT } from '../scripts/bundle.js';
import { keyConfig, keyPair, ohttpKeys, openFrame } from '../test/helpers.js';

const { values: args } = parseArgs({
  options: {
    mode: { type: 'string', default: 'sender' },
    seconds: { type: 'string', default: '8' },
    collector: { type: 'string' },
    key: { type: 'string' },
    port: { type: 'string', default: '0' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
  },
});
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.m3u8': 'application/vnd.apple.mpegurl', '.ts': 'video/mp2t' };
const pair = await keyPair();
const KEY_ID = 9;
const reports = [];

const server = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/v1/keys') {
    res.writeHead(200, { 'Content-Type': 'application/ohttp-keys', 'Cache-Control': 'max-age=60' });
    res.end(ohttpKeys(keyConfig(KEY_ID, pair.publicBytes)));
    return;
  }
  if (req.method === 'POST' && url.pathname.startsWith('/v1/r/')) {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = new Uint8Array(Buffer.concat(chunks));
    const type = req.headers['content-type'];
    const text = type === 'application/vnd.streamtally.sealed' ? await openFrame(body, pair.privateKey) : new TextDecoder().decode(body);
    reports.push({ path: url.pathname + url.search, type, cookie: req.headers.cookie, referer: req.headers.referer, text });
    res.writeHead(204).end();
    return;
  }
  const file = normalize(join(url.pathname === '/' ? '/e2e/page.html' : url.pathname.startsWith('/stream/') ? `/e2e${url.pathname}` : url.pathname));
  const path = join(ROOT, file);
  if (!path.startsWith(ROOT) || !existsSync(path)) return res.writeHead(404).end();
  res.writeHead(200, { 'Content-Type': TYPES[extname(path)] ?? 'application/octet-stream' });
  res.end(await readFile(path));
});
await new Promise((resolve) => server.listen(Number(args.port), '127.0.0.1', resolve));
const origin = `http://127.0.0.1:${server.address().port}`;
console.error(`harness origin: ${origin}`);

const profile = mkdtempSync(join(tmpdir(), 'streamtally-e2e-'));
// A fresh profile per run (playwright passes it to chromium as --user-data-dir).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: args.chromium,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required'],
});
try {
  const page = await browser.newPage();
  page.on('console', (msg) => console.error(`[page] ${msg.text()}`));
  page.on('pageerror', (error) => console.error(`[page error] ${error.message}`));
  const query = new URLSearchParams({ mode: args.mode, ...(args.collector ? { collector: args.collector } : {}), ...(args.key ? { key: args.key } : {}) });
  await page.goto(`${origin}/?${query}`);
  const result = await page.evaluate(() => window.result);
  if (args.mode !== 'sender') await page.waitForTimeout(Number(args.seconds) * 1000);
  const storage = await page.evaluate(() => ({ local: localStorage.length, session: sessionStorage.length, cookie: document.cookie }));
  console.log(JSON.stringify({ result, storage, reports }, null, 1));
  const problems = check(args.mode, result, storage, reports);
  for (const problem of problems) console.error(`FAIL: ${problem}`);
  process.exitCode = problems.length ? 1 : 0;
} finally {
  await browser.close();
  server.close();
  rmSync(profile, { recursive: true, force: true });
}

/** What a user relies on, checked on what the stand-in collector received. */
function check(mode, result, storage, reports) {
  const problems = [];
  const lines = reports.flatMap((r) => r.text.trimEnd().split('\n'));
  if (storage.local || storage.session || storage.cookie) problems.push('page storage was used');
  if (reports.some((r) => r.cookie || r.referer)) problems.push('a report carried a cookie or referer');
  if (args.collector) return problems; // reports went to a real collector
  if (!reports.length) problems.push('no reports arrived');
  if (reports.some((r) => r.type !== 'application/vnd.streamtally.sealed')) problems.push('a report was not sealed');
  if (mode === 'sender' && result !== 204) problems.push(`send() resolved to ${result}`);
  if (mode !== 'sender') {
    if (!lines.some((l) => /e=ps,.*sta=p/.test(l))) problems.push('no ps event with sta=p');
    if (!lines.some((l) => /e=t,/.test(l))) problems.push('no t event');
    if (new Set(lines.map((l) => /sid="([^"]+)"/.exec(l)?.[1])).size !== 1) problems.push('not one sid');
  }
  return problems;
}
