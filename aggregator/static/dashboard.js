// StreamTally dashboard: reads the stats API of the signed-in account and draws it.
//
// The API token lives in sessionStorage only (this tab, until it closes): never in a
// cookie, never in localStorage. Requests go to this origin only, with the token as a
// Bearer header, no credentials and no referrer.

import { timeChart } from './svgchart.js';

const TOKEN_KEY = 'streamtally.token';
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const RANGES = { '1h': HOUR, '24h': DAY, '7d': 7 * DAY, '30d': 30 * DAY };
const STEPS = { minute: MINUTE, hour: HOUR, day: DAY };
const DIMENSIONS = [
  ['country', 'Country'], ['device', 'Device'], ['os', 'Operating system'],
  ['browser', 'Browser'], ['player', 'Player'],
];
const OTHER = '(other)';

const $ = (id) => document.getElementById(id);
const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const percent = new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: 2 });
const regions = typeof Intl.DisplayNames === 'function'
  ? new Intl.DisplayNames(undefined, { type: 'region' }) : null;

// ---- formatting ----------------------------------------------------------------------

const fmtInt = (v) => (Number.isFinite(v) ? integer.format(v) : '–');
const fmtPct = (v) => (Number.isFinite(v) ? percent.format(v) : '–');
function fmtMs(v) {
  if (!Number.isFinite(v)) return '–';
  if (v < 1000) return `${integer.format(Math.round(v))} ms`;
  return `${(v / 1000).toLocaleString(undefined, { maximumFractionDigits: v < 10_000 ? 2 : 1 })} s`;
}
function valueName(dimension, value) {
  if (dimension === 'country' && regions && /^[A-Z]{2}$/.test(value)) {
    try {
      return `${regions.of(value)} (${value})`;
    } catch {
      return value;
    }
  }
  return value;
}

// ---- the API ---------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail, key) {
    super(detail);
    this.status = status;
    this.key = key;
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY);

async function api(path, params = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  const response = await fetch(url, {
    headers: { Authorization: `Bearer ${token()}`, Accept: 'application/json' },
    credentials: 'omit',
    cache: 'no-store',
    referrerPolicy: 'no-referrer',
  });
  if (!response.ok) {
    let problem = {};
    try {
      problem = await response.json();
    } catch {
      // not a problem document
    }
    throw new ApiError(response.status, problem.detail || response.statusText, problem.key);
  }
  return response.json();
}

/** Stream names from GET /v1/streams, whatever the list's element shape. */
function streamNames(body) {
  const list = Array.isArray(body) ? body : body.streams ?? [];
  return list.map((s) => (typeof s === 'string' ? s : s.stream ?? s.name)).filter(Boolean);
}

// ---- sums over rows ------------------------------------------------------------------

function windowsOf(rows) {
  const windows = new Map();
  for (const row of rows) {
    const t = Date.parse(row.window_start);
    if (!windows.has(t)) windows.set(t, []);
    windows.get(t).push(row);
  }
  return windows;
}

/**
 * Figures of a set of rows. Views, failures, playing and stalled seconds add up exactly.
 * Unique and concurrent viewers do not add up across windows (one person watching in two
 * windows is one viewer in each), so over a range they are the highest in one window.
 * Startup quantiles of several rows are their view-weighted mean (marked approximate).
 */
function summarise(rows) {
  const s = {
    views: 0, failures: 0, playing: 0, stalled: 0, unique: 0, concurrent: 0,
    p50: NaN, p95: NaN, approximate: false,
  };
  let weight = 0;
  let p50 = 0;
  let p95 = 0;
  let timed = 0;
  for (const row of rows) {
    s.views += row.views ?? 0;
    s.failures += row.failures ?? 0;
    s.playing += row.playing_seconds ?? 0;
    s.stalled += row.rebuffer_seconds ?? 0;
    if (Number.isFinite(row.startup_ms_p50) && Number.isFinite(row.startup_ms_p95)) {
      const w = Math.max(1, row.views ?? 0);
      p50 += row.startup_ms_p50 * w;
      p95 += row.startup_ms_p95 * w;
      weight += w;
      timed += 1;
    }
  }
  if (weight > 0) {
    s.p50 = p50 / weight;
    s.p95 = p95 / weight;
    s.approximate = timed > 1;
  }
  for (const windowRows of windowsOf(rows).values()) {
    s.unique = Math.max(s.unique, windowRows.reduce((a, r) => a + (r.unique_viewers ?? 0), 0));
    s.concurrent = Math.max(s.concurrent, windowRows.reduce((a, r) => a + (r.concurrent_peak ?? 0), 0));
  }
  s.rebufferRatio = s.playing + s.stalled > 0 ? s.stalled / (s.playing + s.stalled) : NaN;
  return s;
}

// ---- state -----------------------------------------------------------------------------

let lastRender = null;

function selectedRange() {
  const choice = $('range').value;
  if (choice === 'custom') {
    const from = Date.parse($('from').value);
    const to = Date.parse($('to').value);
    if (!Number.isFinite(from) || !Number.isFinite(to) || from >= to) {
      throw new ApiError(0, 'Choose a start and an end time, the start before the end.');
    }
    return { from, to };
  }
  const to = Date.now();
  return { from: to - RANGES[choice], to };
}

function showStatus(text, isError = false) {
  const status = $('status');
  status.textContent = text;
  status.classList.toggle('error', isError);
}

function signedIn(yes) {
  $('sign-in').hidden = yes;
  $('dashboard').hidden = !yes;
  $('session').hidden = !yes;
}

// ---- rendering ------------------------------------------------------------------------

function setText(id, text, raw) {
  const node = $(id);
  node.textContent = text;
  if (raw !== undefined) node.dataset.value = String(raw);
}

function renderTiles(total, granularity) {
  setText('total-views', fmtInt(total.views), total.views);
  setText('total-unique', fmtInt(total.unique), total.unique);
  setText('unique-note', `most in one ${granularity}`);
  setText('total-concurrent', fmtInt(total.concurrent), total.concurrent);
  const approx = total.approximate ? '≈ ' : '';
  setText('total-startup', Number.isFinite(total.p50) ? `${approx}${fmtMs(total.p50)}` : '–', total.p50);
  setText('startup-note', Number.isFinite(total.p95)
    ? `median · p95 ${approx}${fmtMs(total.p95)}` : 'median and 95th percentile');
  setText('total-rebuffer', fmtPct(total.rebufferRatio), total.rebufferRatio);
  setText('total-failures', fmtInt(total.failures), total.failures);
}

function renderCharts(rows, range, granularity) {
  const step = STEPS[granularity] ?? HOUR;
  const perWindow = [...windowsOf(rows)].map(([t, windowRows]) => [t, summarise(windowRows)]);
  const points = (pick) => perWindow.map(([t, s]) => [t, pick(s)]);
  // From the start of the first window to the end of the last, so every bar fits.
  const common = { from: Math.floor(range.from / step) * step, to: Math.ceil(range.to / step) * step, step };
  const charts = [
    ['chart-views', 'Views', 'bar', true, fmtInt, [['Views', 's-views', (s) => s.views]]],
    ['chart-unique', 'Unique viewers', 'line', true, fmtInt, [['Unique viewers', 's-unique', (s) => s.unique]]],
    ['chart-concurrent', 'Concurrent viewers', 'line', true, fmtInt, [['Peak concurrent', 's-concurrent', (s) => s.concurrent]]],
    ['chart-startup', 'Startup time', 'line', false, fmtMs, [
      ['p50 (median)', 's-p50', (s) => s.p50], ['p95', 's-p95', (s) => s.p95]]],
    ['chart-rebuffer', 'Rebuffer ratio', 'line', false, fmtPct, [['Rebuffer ratio', 's-rebuffer', (s) => s.rebufferRatio]]],
    ['chart-failures', 'Failures', 'bar', true, fmtInt, [['Failures', 's-failures', (s) => s.failures]]],
  ];
  for (const [id, label, kind, whole, format, series] of charts) {
    timeChart($(id), {
      ...common, kind, integer: whole, format, label: `${label} per ${granularity}`,
      series: series.map(([name, cls, pick]) => ({ name, cls, points: points(pick) })),
    });
  }
  $('charts-subtitle').textContent = `per ${granularity}, times in your time zone`;
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function shareBar(share) {
  const NS = 'http://www.w3.org/2000/svg';
  const bar = document.createElementNS(NS, 'svg');
  bar.setAttribute('viewBox', '0 0 100 8');
  bar.setAttribute('class', 'share');
  bar.setAttribute('aria-hidden', 'true');
  const back = document.createElementNS(NS, 'rect');
  back.setAttribute('width', '100');
  back.setAttribute('height', '8');
  back.setAttribute('class', 'share-back');
  const fill = document.createElementNS(NS, 'rect');
  fill.setAttribute('width', String(Math.max(0, Math.min(100, share * 100))));
  fill.setAttribute('height', '8');
  fill.setAttribute('class', 'share-fill');
  bar.append(back, fill);
  return bar;
}

/** The breakdown tables, each with a row for the views that no published value shows. */
function renderBreakdowns(rows, total, k) {
  const container = $('breakdowns');
  container.replaceChildren();
  for (const [dimension, title] of DIMENSIONS) {
    const byValue = new Map();
    for (const row of rows) {
      if (!(dimension in row)) continue;
      const value = row[dimension];
      if (!byValue.has(value)) byValue.set(value, []);
      byValue.get(value).push(row);
    }
    const entries = [...byValue].map(([value, valueRows]) => [value, summarise(valueRows)]);
    entries.sort((a, b) => (a[0] === OTHER) - (b[0] === OTHER) || b[1].views - a[1].views
      || String(a[0]).localeCompare(String(b[0])));
    const shown = entries.reduce((a, [, s]) => a + s.views, 0);
    const missing = Math.max(0, total.views - shown);

    const table = document.createElement('table');
    table.className = 'breakdown';
    table.dataset.dimension = dimension;
    const caption = document.createElement('caption');
    caption.textContent = title;
    table.append(caption);
    const head = document.createElement('thead');
    const headRow = document.createElement('tr');
    for (const [text, cls, hint] of [[title, 'name-col'], ['Views', 'num'], ['Share', 'share-col', 'Share of all views'],
      ['Viewers', 'num', 'Unique viewers: most in one window'], ['Startup', 'num', 'Median startup time'],
      ['Rebuffer', 'num', 'Rebuffer ratio'], ['Failures', 'num']]) {
      const th = document.createElement('th');
      th.scope = 'col';
      th.textContent = text;
      if (cls) th.className = cls;
      if (hint) th.title = hint;
      headRow.append(th);
    }
    head.append(headRow);
    const body = document.createElement('tbody');
    for (const [value, s] of entries) {
      const tr = document.createElement('tr');
      tr.dataset.value = value;
      const name = document.createElement('th');
      name.scope = 'row';
      if (value === OTHER) {
        const note = document.createElement('span');
        note.className = 'row-note';
        note.textContent = `values under k = ${k}, merged`;
        name.append('Other', note);
      } else {
        name.textContent = valueName(dimension, value);
      }
      const share = cell('', 'share-col');
      share.append(shareBar(total.views > 0 ? s.views / total.views : 0));
      tr.append(name, cell(fmtInt(s.views), 'num views'), share, cell(fmtInt(s.unique), 'num unique'),
        cell(`${s.approximate ? '≈ ' : ''}${fmtMs(s.p50)}`, 'num'), cell(fmtPct(s.rebufferRatio), 'num'),
        cell(fmtInt(s.failures), 'num failures'));
      body.append(tr);
    }
    if (missing > 0) {
      const tr = document.createElement('tr');
      tr.className = 'hidden-row';
      tr.dataset.value = '(hidden)';
      const name = document.createElement('th');
      name.scope = 'row';
      const note = document.createElement('span');
      note.className = 'row-note';
      note.textContent = `fewer than ${k} viewers`;
      name.append('Hidden', note);
      tr.append(name, cell(fmtInt(missing), 'num views'), cell('', 'share-col'),
        cell('–', 'num'), cell('–', 'num'), cell('–', 'num'), cell('–', 'num'));
      body.append(tr);
    }
    const card = document.createElement('div');
    card.className = 'table-card';
    card.dataset.dimension = dimension;
    if (entries.length === 0 && missing === 0) {
      const heading = document.createElement('h3');
      heading.textContent = title;
      const note = document.createElement('p');
      note.className = 'empty-note';
      note.textContent = `No data yet — rows appear once at least ${k} viewers watched.`;
      card.append(heading, note);
    } else {
      table.append(head, body);
      card.append(table);
    }
    container.append(card);
  }
}

/** The k notice: what the breakdowns leave out, as the API counts it (viewers per window). */
function renderPrivacy(k, hidden) {
  $('privacy-text').textContent = `Every number on this page stands for at least k = ${k} `
    + 'distinct viewers. Smaller groups are merged into “Other” or left out, so that no one '
    + 'can be singled out; streams with fewer than k viewers are merged into the stream '
    + '“Other” or left out, and as nothing under k is stored, those cannot be counted.';
  const list = $('privacy-hidden');
  list.replaceChildren();
  const by = hidden?.by ?? {};
  for (const [dimension, title] of DIMENSIONS) {
    const item = document.createElement('li');
    item.dataset.dimension = dimension;
    const count = by[dimension]?.viewers_not_in_breakdown;
    const windows = by[dimension]?.windows_with_hidden_viewers ?? 0;
    const label = document.createElement('span');
    label.textContent = `${title}: `;
    const number = document.createElement('b');
    number.textContent = fmtInt(count ?? NaN);
    number.dataset.value = String(count);
    item.append(label, number, count === 1 ? ' viewer hidden' : ' viewers hidden');
    if (windows > 0) item.append(` (in ${fmtInt(windows)} window${windows === 1 ? '' : 's'})`);
    list.append(item);
  }
}

// ---- loading ---------------------------------------------------------------------------

async function stats(params) {
  return api('/v1/stats', { granularity: 'auto', ...params });
}

async function loadStreams(fallbackRows) {
  let names;
  try {
    names = streamNames(await api('/v1/streams'));
  } catch (error) {
    if (error.status === 401) throw error;
    names = [...new Set(fallbackRows.map((r) => r.stream))];
  }
  const select = $('stream');
  const current = select.value;
  const options = [new Option('All streams', '')];
  for (const name of names.sort((a, b) => a.localeCompare(b))) {
    options.push(new Option(name === OTHER ? 'Other (streams under k, merged)' : name, name));
  }
  select.replaceChildren(...options);
  select.value = names.includes(current) ? current : '';
}

async function refresh() {
  let range;
  try {
    range = selectedRange();
  } catch (error) {
    showStatus(error.message, true);
    return;
  }
  showStatus('Loading…');
  $('dashboard').setAttribute('aria-busy', 'true');
  const params = {
    from: new Date(range.from).toISOString(),
    to: new Date(range.to).toISOString(),
    stream: $('stream').value,
  };
  try {
    const [totals, breakdowns] = await Promise.all([
      stats(params),
      stats({ ...params, by: DIMENSIONS.map(([d]) => d).join(',') }),
    ]);
    if (!$('stream').options.length || $('stream').options.length === 1) await loadStreams(totals.rows);
    const k = totals.k;
    const granularity = totals.granularity;
    $('account-id').textContent = totals.account_id;
    setText('k-value', String(k), k);
    const total = summarise(totals.rows);
    renderTiles(total, granularity);
    renderCharts(totals.rows, range, granularity);
    renderBreakdowns(breakdowns.rows, total, k);
    renderPrivacy(k, breakdowns.hidden);
    const empty = $('empty');
    empty.hidden = totals.rows.length > 0;
    $('charts-section').hidden = totals.rows.length === 0;
    empty.textContent = `No data yet for this range — numbers appear once at least ${k} viewers watched.`;
    lastRender = { rows: totals.rows, range, granularity };
    const when = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' }).format(new Date());
    showStatus(`Updated ${when}`);
  } catch (error) {
    if (error.status === 401) {
      signOut('Your token was not accepted. Please sign in again.');
      return;
    }
    showStatus(`Could not load statistics: ${error.message}`, true);
  } finally {
    $('dashboard').removeAttribute('aria-busy');
  }
}

function signOut(message = '') {
  sessionStorage.removeItem(TOKEN_KEY);
  $('stream').replaceChildren(new Option('All streams', ''));
  $('breakdowns').replaceChildren();
  lastRender = null;
  signedIn(false);
  $('sign-in-error').textContent = message;
  $('token').value = '';
  $('token').focus();
}

async function signIn(event) {
  event.preventDefault();
  const value = $('token').value.trim();
  if (!value) {
    $('sign-in-error').textContent = 'Paste your API token first.';
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, value);
  $('token').value = '';
  $('sign-in-error').textContent = '';
  signedIn(true);
  await refresh();
}

function init() {
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', () => signOut());
  $('controls').addEventListener('submit', (event) => {
    event.preventDefault();
    refresh();
  });
  $('stream').addEventListener('change', refresh);
  $('range').addEventListener('change', () => {
    const custom = $('range').value === 'custom';
    $('custom-range').hidden = !custom;
    if (custom && !$('from').value) {
      // Start from the last 24 hours, in local time as datetime-local expects.
      const local = (t) => new Date(t - new Date(t).getTimezoneOffset() * MINUTE).toISOString().slice(0, 16);
      $('to').value = local(Date.now());
      $('from').value = local(Date.now() - DAY);
    }
    if (!custom) refresh();
  });
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (lastRender) renderCharts(lastRender.rows, lastRender.range, lastRender.granularity);
    }, 150);
  });
  if (token()) {
    signedIn(true);
    refresh();
  } else {
    signedIn(false);
  }
}

init();
