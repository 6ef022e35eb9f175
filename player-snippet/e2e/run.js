/**
 * End-to-end driver (tests/snippet/test_e2e.py): Debian's chromium, through playwright-core,
 * opens e2e/page.html in one fresh browser context per client IP, all at once. The page plays
 * a stream with the snippet reporting to a running `streamtally serve`; the driver waits for
 * the end of playback (or a fatal error) and for the last report, then prints one JSON
 * document on stdout:
 *
 *   {contexts: [{ip, outcome, reports: [{method, path, status, failure, closed?}],
 *                wire: [{method, path, status, headers, body?}],
 *                storage: {local, session, cookie, indexedDB}, cookies, errors}]}
 *
 * `reports`: the page's requests to the collector as playwright saw them; `wire`: as they
 * went over the wire, CORS preflights included, with the text of plain (`application/cmcd`)
 * reports that players send without the snippet.
 *
 * Each context goes through its own forward proxy (in this process, on 127.0.0.1) that sets
 * `X-Forwarded-For: IP` on every request, as a load balancer would; the collector trusts it
 * from 127.0.0.1, so it sees distinct viewers. Playwright's `extraHTTPHeaders` would make the
 * page itself send the header, turning every cross-origin fetch into a preflighted one that
 * no real browser sends (GET /v1/keys then fails CORS); its request routing would answer
 * preflights itself instead of the collector.
 *
 *   node e2e/run.js --page URL --collector URL --key EMBED_KEY --src URL [--mode hlsjs|video|shaka|shaka-debug|shaka-plain|dashjs|dashjs-adapter|videojs]
 *                   [--ip 8.8.8.8 --ip 193.0.0.1] [--cid NAME] [--timeout 30]
 *                   [--param flush=0 --param seal=never] [--close-after SECONDS]
 *
 * `--param`: more page parameters (page.html). `--close-after`: close the page once the
 * video has played this many seconds, mid-batch, instead of at the end of playback; the
 * outcome then has `closedAt`. Every context's `handed` is the number of CMCD events the
 * player handed to the snippet (hls.js mode), read just before the page closes.
 * (the page's origin must be among the account's origins)
 */
import { request as httpRequest, createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const { values: args } = parseArgs({
  options: {
    page: { type: 'string' },
    collector: { type: 'string' },
    key: { type: 'string' },
    src: { type: 'string' },
    mode: { type: 'string', default: 'hlsjs' },
    cid: { type: 'string', default: 'e2e' },
    ip: { type: 'string', multiple: true, default: ['8.8.8.8'] },
    timeout: { type: 'string', default: '30' },
    param: { type: 'string', multiple: true, default: [] },
    'close-after': { type: 'string' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
  },
});
for (const name of ['page', 'collector', 'key', 'src']) {
  if (!args[name]) throw new Error(`--${name} is required`);
}
const TIMEOUT_MS = Number(args.timeout) * 1000;
const QUIET_MS = 1000; // no report in flight for this long: the page has sent what it had
const collector = args.collector.replace(/\/+$/, '');
// Request headers the driver reports from the wire.
const WIRE_HEADERS = ['origin', 'cookie', 'referer', 'content-type', 'access-control-request-method', 'access-control-request-headers'];

const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  timeout: 30000,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required'],
});
// Every context loads its page, then all start playing at once, never within a few seconds
// of a minute's end: the collector counts views per minute under k, and two viewers whose
// views fell into two minutes would each be alone in theirs.
let loaded = 0;
let startAll;
const started = new Promise((resolve) => { startAll = resolve; });
async function ready() {
  loaded += 1;
  if (loaded === args.ip.length) {
    // The snippet holds events up to its flush interval (5 s): keep the first reports of all
    // contexts within the same minute.
    const second = (Date.now() / 1000) % 60;
    if (second > 45) await new Promise((resolve) => setTimeout(resolve, (61 - second) * 1000));
    startAll();
  }
  await started;
}

try {
  const contexts = await Promise.all(args.ip.map((ip) => play(ip)));
  console.log(JSON.stringify({ contexts }, null, 1));
} finally {
  await browser.close();
}

/**
 * A forward HTTP proxy on 127.0.0.1 that sets `X-Forwarded-For: ip` on every request. `wire`
 * gets each request to the collector as it went over the wire, CORS preflights included
 * (which playwright's request events leave out); `wire.open` counts those still unanswered.
 */
async function forwardProxy(ip, wire) {
  wire.open = 0;
  const server = createServer((req, res) => {
    const target = new URL(req.url); // a proxy is asked for absolute URLs
    const headers = { ...req.headers, 'x-forwarded-for': ip };
    delete headers['proxy-connection'];
    const entry = target.origin === new URL(collector).origin ? {
      method: req.method,
      path: target.pathname + target.search,
      status: null,
      headers: Object.fromEntries(WIRE_HEADERS.filter((h) => h in req.headers).map((h) => [h, req.headers[h]])),
    } : null;
    if (entry) {
      wire.push(entry);
      wire.open += 1;
      wire.lastActivity = Date.now();
      res.on('close', () => {
        wire.open -= 1;
        wire.lastActivity = Date.now();
      });
    }
    if (entry && req.headers['content-type'] === 'application/cmcd') {
      // A plain report (no snippet): keep its text, to check what the player sends.
      entry.body = '';
      req.on('data', (chunk) => { entry.body += chunk.toString('utf8'); });
    }
    const upstream = httpRequest(
      { host: target.hostname, port: target.port, path: target.pathname + target.search, method: req.method, headers },
      (answer) => {
        if (entry) entry.status = answer.statusCode;
        res.writeHead(answer.statusCode, answer.rawHeaders);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/** Until `busy()` is false and has been for QUIET_MS, at most `ms`. */
async function quiet(busy, lastActivity, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && (busy() || Date.now() - lastActivity() < QUIET_MS)) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** One viewer: a fresh context whose requests all reach the servers with `X-Forwarded-For: ip`. */
async function play(ip) {
  const wire = [];
  const proxy = await forwardProxy(ip, wire);
  try {
    const result = await playThrough(ip, `http://127.0.0.1:${proxy.address().port}`, wire);
    // Closing the page fires `pagehide`, when the snippet sends what it still holds
    // (keepalive; sealed first): let those reports reach the collector before the proxy goes
    // away, counting the quiet time from the close at the earliest.
    const closed = Date.now() + 1000;
    await quiet(() => wire.open > 0, () => Math.max(wire.lastActivity ?? 0, closed), 8000);
    return { ...result, wire };
  } finally {
    proxy.closeAllConnections();
    proxy.close();
  }
}

async function playThrough(ip, proxyUrl, wire) {
  // '<-loopback>': chromium sends requests for 127.0.0.1 to the proxy too.
  const context = await browser.newContext({ proxy: { server: proxyUrl, bypass: '<-loopback>' } });
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  const errors = [];
  const reports = [];
  let inFlight = 0;
  let lastActivity = Date.now();
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') errors.push(`[console] ${msg.text()}`);
  });
  page.on('pageerror', (error) => errors.push(`[page error] ${error.message}`));
  // request -> its entry in reports. The status is taken from the `response` event itself:
  // asking a finished request for its response afterwards is a round trip to the browser
  // that a busy machine or the context's close can leave unanswered (status null).
  const pending = new Map();
  const settle = (request, failure) => {
    const report = pending.get(request);
    if (!report) return;
    pending.delete(request);
    report.failure = failure;
    inFlight -= 1;
    lastActivity = Date.now();
  };
  page.on('request', (request) => {
    if (!request.url().startsWith(collector)) return;
    inFlight += 1;
    lastActivity = Date.now();
    const report = { method: request.method(), path: request.url().slice(collector.length), status: null, failure: null };
    reports.push(report);
    pending.set(request, report);
  });
  page.on('response', (response) => {
    const report = pending.get(response.request());
    if (report) report.status = response.status();
  });
  page.on('requestfinished', (request) => settle(request, null));
  page.on('requestfailed', (request) => settle(request, request.failure()?.errorText ?? 'failed'));

  const query = new URLSearchParams({ mode: args.mode, collector, key: args.key, src: args.src, cid: args.cid });
  for (const param of args.param) query.append(...param.split(/=(.*)/s, 2));
  await page.goto(`${args.page}?${query}`);
  await page.waitForFunction(() => typeof window.go === 'function');
  await ready();
  await page.evaluate(() => window.go());
  const closeAfter = args['close-after'] === undefined ? null : Number(args['close-after']);
  const outcome = await Promise.race([
    closeAfter === null
      ? page.evaluate(() => window.outcome)
      : page.waitForFunction((s) => document.querySelector('video').currentTime >= s, closeAfter)
        .then(() => page.evaluate(() => ({ closedAt: document.querySelector('video').currentTime, error: null }))),
    page.waitForTimeout(TIMEOUT_MS).then(() => page.evaluate(() => {
      const video = document.querySelector('video'); // where it stood, for the test's message
      return {
        timedOut: true,
        currentTime: video?.currentTime,
        duration: video?.duration,
        readyState: video?.readyState,
        paused: video?.paused,
      };
    })),
  ]);
  // The last reports (sta=e / sta=f) are sent after the event that ended playback: wait
  // until nothing is in flight, as playwright and as the proxy see it.
  await quiet(
    () => inFlight > 0 || wire.open > 0,
    () => Math.max(lastActivity, wire.lastActivity ?? 0),
    10000,
  );
  const storage = await page.evaluate(async () => ({
    local: localStorage.length,
    session: sessionStorage.length,
    cookie: document.cookie,
    indexedDB: (await indexedDB.databases()).map((db) => db.name),
  }));
  const cookies = await context.cookies();
  const handed = await page.evaluate(() => window.handed ?? null);
  // Still open when the page goes: playwright will not see these end (the wire will).
  for (const report of pending.values()) report.closed = true;
  // The page goes as a closed tab does: `pagehide`, when the snippet sends what it holds
  // with keepalive. The browser context stays until those reports are through (a report
  // whose CORS preflight is not cached yet needs it: closing the context would cancel it).
  await page.close();
  const closed = Date.now() + 1000;
  await quiet(() => wire.open > 0, () => Math.max(wire.lastActivity ?? 0, closed), 8000);
  await context.close();
  return { ip, outcome, reports, storage, cookies, errors, handed };
}
