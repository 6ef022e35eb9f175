// Drives the dashboard in Debian's headless Chromium with playwright-core and reports what a
// person would see, as JSON on stdout; tests/integration/test_dashboard.py makes the
// assertions. Usage:
//   node dashboard.mjs '{"url": ..., "token": ..., "emptyToken": ..., "screenshot": ...}'
//
// Steps: a wrong token is refused; the right token signs in; the page is read (tiles,
// breakdown tables, the k notice, the stream list); storage and cookies are read; a
// screenshot is saved; a reload keeps the session (sessionStorage); sign-out forgets it;
// an account without data shows its empty states (on a phone-sized screen).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const options = JSON.parse(process.argv[2]);
const executablePath = options.chromium ?? process.env.CHROMIUM ?? '/usr/bin/chromium';
const TIMEOUT = 20_000;

async function readPage(page) {
  return page.evaluate(() => {
    const text = (id) => document.getElementById(id)?.textContent.trim() ?? null;
    const tile = (id) => ({ text: text(id), value: document.getElementById(id)?.dataset.value });
    const tables = {};
    for (const card of document.querySelectorAll('.table-card')) {
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
    return {
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
      charts: [...document.querySelectorAll('.chart-box')].map((box) => ({
        id: box.id,
        svg: box.querySelector('svg[role="img"]') !== null,
        marks: box.querySelectorAll('.series rect, .series circle').length,
      })),
      cookie: document.cookie,
      localStorage: { ...window.localStorage },
      sessionStorage: { ...window.sessionStorage },
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

  // A reload keeps the session: the token is in this tab's sessionStorage.
  await page.reload({ waitUntil: 'networkidle' });
  await waitUpdated(page);
  report.reloaded = await readPage(page);

  // Another range: the page asks again and draws minute windows.
  await page.selectOption('#range', '1h');
  await page.waitForFunction(() => document.getElementById('charts-subtitle').textContent.includes('minute'));
  await waitUpdated(page);
  report.lastHour = await readPage(page);
  await page.screenshot({ path: options.screenshot.replace(/\.png$/, '-last-hour.png'), fullPage: true });

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
    await page.screenshot({ path: options.screenshot.replace(/\.png$/, '-empty-phone.png'), fullPage: true });
    await page.click('#sign-out');
  }
  report.cookies = await context.cookies();
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(report));
