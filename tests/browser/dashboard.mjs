// Drives the dashboard in Debian's headless Chromium with playwright-core and reports what a
// person would see, as JSON on stdout; tests/integration/test_dashboard.py makes the
// assertions. Usage:
//   node dashboard.mjs '{"url": ..., "token": ..., "emptyToken": ..., "screenshot": ..., "stream": ...}'
//
// Steps: a wrong token is refused; the right token signs in; the page is read (tiles,
// scores, charts, breakdown tables, the k notice, the stream list); axe-core checks it;
// storage and cookies are read; screenshots are saved; the CSV of the view and the full
// export are downloaded; the real-time view refreshes every 15 s (on Playwright's clock) and
// pauses while the tab is hidden; a reload keeps the session (sessionStorage); a stream is
// chosen by clicking it; the previous period is compared; sign-out forgets the token; an
// account without data shows its empty states (on a phone-sized screen). With `dp` ({from, to}:
// a range of the account's dp day), only: sign in, show that range, read the noise margins
// and the sentence, run axe-core.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const options = JSON.parse(process.argv[2]);
const executablePath = options.chromium ?? process.env.CHROMIUM ?? '/usr/bin/chromium';
const TIMEOUT = 20_000;
const shot = (name) => options.screenshot.replace(/\.png$/, `-${name}.png`);

async function readPage(page) {
  return page.evaluate(() => {
    const text = (id) => document.getElementById(id)?.textContent.trim() ?? null;
    const tile = (id) => ({ text: text(id), value: document.getElementById(id)?.dataset.value });
    const tables = {};
    for (const card of document.querySelectorAll('#breakdowns .table-card')) {
      tables[card.dataset.dimension] = {
        rows: [...card.querySelectorAll('tbody tr')].map((tr) => ({
          value: tr.dataset.value ?? null,
          cells: [...tr.children].map((c) => c.textContent.trim()),
        })),
        empty: card.querySelector('.empty-note')?.textContent.trim() ?? null,
      };
    }
    const hidden = {};
    for (const item of document.querySelectorAll('#privacy-hidden li')) {
      hidden[item.dataset.dimension] = item.querySelector('b').textContent.trim();
    }
    const inside = (inner, outer) => {
      const a = inner.getBoundingClientRect();
      const b = outer.getBoundingClientRect();
      return a.left >= b.left - 0.5 && a.right <= b.right + 0.5 && a.top >= b.top - 0.5 && a.bottom <= b.bottom + 0.5;
    };
    const tileIds = [...document.querySelectorAll('.tiles .tile .value[id^="total-"]')].map((n) => n.id);
    return {
      tileIds,
      allTiles: Object.fromEntries(tileIds.map((id) => [id, tile(id)])),
      deltas: Object.fromEntries([...document.querySelectorAll('.tile .delta[id]')].map((n) => [n.id, n.textContent.trim()])),
      scores: Object.fromEntries([...document.querySelectorAll('.tile.score')].map((t) => [t.dataset.score, {
        text: t.querySelector('.value').textContent.trim(),
        value: t.querySelector('.value').dataset.value,
        title: t.title,
        formula: t.querySelector('.formula').textContent.trim(),
      }])),
      streamRows: [...document.querySelectorAll('#streams-card tbody tr')].map((tr) => ({
        value: tr.dataset.value, cells: [...tr.children].map((c) => c.textContent.trim()),
      })),
      codes: [...document.querySelectorAll('#codes-card tbody tr')].map((tr) => ({
        value: tr.dataset.value, cells: [...tr.children].map((c) => c.textContent.trim()),
      })),
      codesEmpty: document.querySelector('#codes-card .empty-note')?.textContent.trim() ?? null,
      selectedStream: document.getElementById('stream').value,
      releaseSentence: text('release-sentence'),
      dpNoteVisible: !document.getElementById('dp-note').hidden,
      marginsVisible: [...document.querySelectorAll('.tile .margin')].filter((m) => !m.hidden).length,
      chartMargins: [...document.querySelectorAll('.chart-box')].reduce((a, b) => a + Number(b.dataset.margins ?? 0), 0),
      realtime: {
        state: document.getElementById('realtime').dataset.state,
        loads: Number(document.getElementById('realtime').dataset.loads),
        now: text('realtime-now'),
        latest: text('realtime-latest'),
        delay: text('realtime-delay'),
        note: text('realtime-note'),
        chart: document.querySelector('#chart-realtime .uplot canvas') !== null,
        points: Number(document.getElementById('chart-realtime').dataset.points ?? 0),
        slots: Number(document.getElementById('chart-realtime').dataset.slots ?? 0),
      },
      scripts: [...document.scripts].map((s) => s.src),
      uplot: typeof window.uPlot === 'function',
      signInVisible: !document.getElementById('sign-in').hidden,
      dashboardVisible: !document.getElementById('dashboard').hidden,
      status: text('status'),
      accountId: text('account-id'),
      k: text('k-value'),
      tiles: {
        views: tile('total-views'),
        unique: tile('total-unique'),
        concurrent: tile('total-concurrent'),
        startup: tile('total-startup'),
        rebuffer: tile('total-rebuffer'),
        failures: tile('total-failures'),
      },
      privacy: text('privacy-text'),
      hidden,
      tables,
      streams: [...document.querySelectorAll('#stream option')].map((o) => o.value),
      chartsVisible: !document.getElementById('charts-section').hidden,
      charts: [...document.querySelectorAll('.chart-card .chart-box')].map((box) => ({
        id: box.id,
        uplot: box.querySelector('.uplot canvas') !== null,
        label: box.getAttribute('aria-label'),
        points: Number(box.dataset.points ?? 0),
        slots: Number(box.dataset.slots ?? 0),
        // The whole chart, axis labels included (uPlot draws them inside its canvas), lies
        // within its card.
        inside: box.querySelector('.uplot') !== null && inside(box.querySelector('.uplot'), box.closest('.chart-card')),
        canvasInside: box.querySelector('canvas') !== null && inside(box.querySelector('canvas'), box.closest('.chart-card')),
        rects: [box.querySelector('.uplot'), box.querySelector('canvas'), box.closest('.chart-card')].map((n) => {
          const r = n?.getBoundingClientRect();
          return r ? [Math.round(r.left), Math.round(r.right), Math.round(r.top), Math.round(r.bottom)] : null;
        }),
        scrollWidth: document.documentElement.scrollWidth,
      })),
      cookie: document.cookie,
      localStorage: { ...window.localStorage },
      sessionStorage: { ...window.sessionStorage },
    };
  });
}

/** What a dp account's page shows of the noise: the sentence, each tile's margin, the whiskers. */
async function readDp(page) {
  return page.evaluate(() => {
    const node = (id) => document.getElementById(id);
    const visible = (n) => n !== null && !n.hidden && n.getBoundingClientRect().height > 0;
    const margins = {};
    for (const key of ['views', 'unique', 'playing', 'failures']) {
      const m = node(`margin-${key}`);
      margins[key] = { text: m.textContent.trim(), value: m.dataset.value, visible: visible(m) };
    }
    return {
      sentence: node('dp-note').textContent.trim(),
      sentenceVisible: visible(node('dp-note')),
      margins,
      otherMargins: [...document.querySelectorAll('.tile .margin')].filter((m) => !m.hidden).length,
      tiles: Object.fromEntries(['views', 'unique', 'playing', 'failures'].map((key) => [key, node(`total-${key}`).dataset.value])),
      subtitle: node('charts-subtitle').textContent,
      charts: Object.fromEntries([...document.querySelectorAll('.chart-card .chart-box')].map((box) => [box.id, {
        margins: Number(box.dataset.margins ?? 0), label: box.getAttribute('aria-label'),
      }])),
    };
  });
}

const waitUpdated = (page) => page.waitForFunction(
  () => document.getElementById('status')?.textContent.startsWith('Updated'),
  null,
  { timeout: TIMEOUT },
);

const profile = mkdtempSync(join(tmpdir(), 'streamtally-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
  viewport: { width: 1360, height: 900 },
  deviceScaleFactor: 1,
  acceptDownloads: true,
  locale: 'en-US',
  timezoneId: 'UTC',
  colorScheme: 'light',
});
const report = { requests: [], consoleErrors: [], pageErrors: [] };
try {
  context.on('request', (request) => report.requests.push(request.url()));
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (message) => {
    if (message.type() === 'error') report.consoleErrors.push(message.text());
  });
  page.on('pageerror', (error) => report.pageErrors.push(String(error)));

  const response = await page.goto(`${options.url}/`, { waitUntil: 'networkidle' });
  report.headers = response.headers();

  if (options.dp) {
    // A dp account (docs/privacy.md): sign in, show its first dp day, read the margins.
    await page.fill('#token', options.token);
    await page.click('#sign-in-form button[type="submit"]');
    await waitUpdated(page);
    await page.selectOption('#range', 'custom');
    await page.fill('#from', options.dp.from);
    await page.fill('#to', options.dp.to);
    await page.click('#controls button[type="submit"]');
    await page.waitForFunction(() => !document.getElementById('dp-note').hidden
      && document.getElementById('status').textContent.startsWith('Updated'));
    report.dp = await readDp(page);
    await page.screenshot({ path: shot('dp'), fullPage: true });
    await page.evaluate(AXE_SOURCE);
    report.axeDp = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] }))
      .violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help })));
  } else {
    // A wrong token is refused and not kept.
    await page.fill('#token', 'st_not_a_real_token');
    await page.click('#sign-in-form button[type="submit"]');
    await page.waitForFunction(() => document.getElementById('sign-in-error').textContent !== '');
    report.wrongToken = await readPage(page);
    report.wrongToken.error = await page.textContent('#sign-in-error');
    report.consoleErrors.length = 0; // the 401 above is logged by Chromium; expected

    // The right token.
    await page.fill('#token', options.token);
    await page.click('#sign-in-form button[type="submit"]');
    await waitUpdated(page);
    report.signedIn = await readPage(page);
    await page.screenshot({ path: options.screenshot, fullPage: true });
    await page.locator('#charts-section').screenshot({ path: shot('charts') });

    // Accessibility: axe-core, evaluated through the DevTools protocol (the page's CSP allows
    // no injected script tags, rightly).
    await page.evaluate(AXE_SOURCE);
    report.axe = await page.evaluate(async () => {
      const result = await window.axe.run(document, { resultTypes: ['violations'] });
      return result.violations.map((v) => ({
        id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5),
      }));
    });

    // The CSV of this view, and the full export, as downloads.
    const [viewDownload] = await Promise.all([page.waitForEvent('download'), page.click('#download-view')]);
    report.viewCsv = { name: viewDownload.suggestedFilename(), text: readFileSync(await viewDownload.path(), 'utf8') };
    const [exportDownload] = await Promise.all([page.waitForEvent('download'), page.click('#download-export')]);
    report.exportCsv = { name: exportDownload.suggestedFilename(), text: readFileSync(await exportDownload.path(), 'utf8') };

    // A reload keeps the session: the token is in this tab's sessionStorage.
    await page.reload({ waitUntil: 'networkidle' });
    await waitUpdated(page);
    report.reloaded = await readPage(page);

    // The real-time view, on Playwright's clock: asked again after 15 s, not while hidden.
    await page.clock.install();
    await page.reload({ waitUntil: 'networkidle' });
    await waitUpdated(page);
    await page.waitForFunction(() => Number(document.getElementById('realtime').dataset.loads) >= 1);
    const loads = async () => page.evaluate(() => Number(document.getElementById('realtime').dataset.loads));
    const state = async () => page.evaluate(() => document.getElementById('realtime').dataset.state);
    const rt = { first: await readPage(page) };
    rt.before = await loads();
    await page.clock.runFor(15_500);
    await page.waitForFunction((n) => Number(document.getElementById('realtime').dataset.loads) > n, rt.before);
    rt.after15s = await loads();
    await page.evaluate(() => {
      Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true });
      document.dispatchEvent(new Event('visibilitychange'));
    });
    rt.hiddenState = await state();
    const hiddenAt = await loads();
    await page.clock.runFor(60_000);
    await page.waitForTimeout(300);
    rt.hiddenLoads = (await loads()) - hiddenAt;
    await page.evaluate(() => {
      Object.defineProperty(document, 'visibilityState', { value: 'visible', configurable: true });
      document.dispatchEvent(new Event('visibilitychange'));
    });
    await page.waitForFunction((n) => Number(document.getElementById('realtime').dataset.loads) > n, hiddenAt);
    rt.visibleState = await state();
    rt.afterVisible = (await loads()) - hiddenAt;
    report.realtime = rt;
    await page.locator('#realtime').screenshot({ path: shot('realtime') });

    // Click a stream: the page shows that stream only.
    if (options.stream) {
      await page.click(`#streams-card button[data-stream="${options.stream}"]`);
      await page.waitForFunction((s) => document.getElementById('stream').value === s
        && document.getElementById('status').textContent.startsWith('Updated'), options.stream);
      await waitUpdated(page);
      report.stream = await readPage(page);
      await page.click('#all-streams');
      await page.waitForFunction(() => document.getElementById('stream').value === '');
      await waitUpdated(page);
    }

    // Compare with the previous period.
    await page.check('#compare');
    await page.waitForFunction(() => document.getElementById('delta-views').textContent !== '');
    await waitUpdated(page);
    report.compare = await readPage(page);
    await page.screenshot({ path: shot('compare'), fullPage: true });
    await page.uncheck('#compare');
    await waitUpdated(page);

    // A phone-sized screen with data: the charts shrink to their cards, labels inside.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.waitForFunction(() => [...document.querySelectorAll('.chart-card .chart-box')].every((box) => {
      const canvas = box.querySelector('canvas');
      return canvas && canvas.getBoundingClientRect().width <= box.closest('.chart-card').getBoundingClientRect().width;
    }));
    report.phone = await readPage(page);
    await page.screenshot({ path: shot('phone'), fullPage: true });
    await page.setViewportSize({ width: 1360, height: 900 });

    // Another range: the page asks again and draws minute windows.
    await page.selectOption('#range', '1h');
    await page.waitForFunction(() => document.getElementById('charts-subtitle').textContent.includes('minute'));
    await waitUpdated(page);
    report.lastHour = await readPage(page);
    await page.screenshot({ path: shot('last-hour'), fullPage: true });

    await page.click('#sign-out');
    report.signedOut = await readPage(page);

    // An account without data, on a phone-sized screen: the empty states.
    if (options.emptyToken) {
      await page.setViewportSize({ width: 400, height: 860 });
      await page.fill('#token', options.emptyToken);
      await page.click('#sign-in-form button[type="submit"]');
      await waitUpdated(page);
      report.empty = await readPage(page);
      report.empty.emptyText = await page.textContent('#empty');
      report.empty.emptyVisible = await page.isVisible('#empty');
      await page.screenshot({ path: shot('empty-phone'), fullPage: true });
      await page.evaluate(AXE_SOURCE);
      report.axeEmpty = await page.evaluate(async () => (await window.axe.run(document, { resultTypes: ['violations'] }))
        .violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help })));
      await page.click('#sign-out');
    }
  }
  report.cookies = await context.cookies();
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(report));
