// StreamTally dashboard: reads the stats API of the signed-in account and draws it.
//
// The API token lives in sessionStorage only (this tab, until it closes): never in a
// cookie, never in localStorage. Requests go to this origin only, with the token as a
// Bearer header, no credentials and no referrer.

import { resizeCharts, timeChart } from './charts.js';
import { SCORES, scoresOf } from './scores.js';

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
// The merged small values never read "Other": a browser family is really named that.
const MERGED_LABEL = 'Merged small values';
const REALTIME_EVERY = 15_000;

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
function fmtDuration(seconds) {
  if (!Number.isFinite(seconds)) return '–';
  if (seconds < 60) return `${integer.format(Math.round(seconds))} s`;
  if (seconds < 3600) return `${(seconds / 60).toLocaleString(undefined, { maximumFractionDigits: 1 })} min`;
  return `${(seconds / 3600).toLocaleString(undefined, { maximumFractionDigits: 1 })} h`;
}
const fmtKbps = (v) => (Number.isFinite(v)
  ? (v >= 1000 ? `${(v / 1000).toLocaleString(undefined, { maximumFractionDigits: 2 })} Mbit/s`
    : `${integer.format(Math.round(v))} kbit/s`) : '–');
const fmtScore = (v) => (Number.isFinite(v) ? integer.format(Math.round(v)) : '–');
function valueName(dimension, value) {
  if (value === OTHER) return MERGED_LABEL;
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
 * Figures of a set of rows. Views, failures, exits, rebuffers, bitrate changes, playing and
 * stalled seconds add up exactly. Unique and concurrent viewers do not add up across windows
 * (one person watching in two windows is one viewer in each), so over a range they are the
 * highest in one window. Startup quantiles of several rows are their view-weighted mean,
 * bitrate and latency averages their playing-time-weighted mean (marked approximate).
 */
function summarise(rows) {
  const s = {
    views: 0, failures: 0, playing: 0, stalled: 0, unique: 0, concurrent: 0, exits: 0,
    rebuffers: 0, bitrateChanges: 0, codes: new Map(),
    p50: NaN, p95: NaN, approximate: false, bitrate: NaN, bitrateApprox: false,
    latency: NaN, latencyApprox: false,
  };
  let weight = 0;
  let p50 = 0;
  let p95 = 0;
  let timed = 0;
  const weighted = { bitrate: [0, 0, 0], latency: [0, 0, 0] };
  for (const row of rows) {
    s.views += row.views ?? 0;
    s.failures += row.failures ?? 0;
    s.playing += row.playing_seconds ?? 0;
    s.stalled += row.rebuffer_seconds ?? 0;
    s.exits += row.exits_before_start ?? 0;
    s.rebuffers += row.rebuffer_count ?? 0;
    s.bitrateChanges += row.bitrate_changes ?? 0;
    for (const [code, n] of Object.entries(row.failures_by_code ?? {})) {
      s.codes.set(code, (s.codes.get(code) ?? 0) + n);
    }
    if (Number.isFinite(row.startup_ms_p50) && Number.isFinite(row.startup_ms_p95)) {
      const w = Math.max(1, row.views ?? 0);
      p50 += row.startup_ms_p50 * w;
      p95 += row.startup_ms_p95 * w;
      weight += w;
      timed += 1;
    }
    for (const [key, field] of [['bitrate', 'bitrate_kbps_avg'], ['latency', 'latency_ms_avg']]) {
      if (Number.isFinite(row[field])) {
        const w = Math.max(1e-9, row.playing_seconds ?? 0);
        weighted[key][0] += row[field] * w;
        weighted[key][1] += w;
        weighted[key][2] += 1;
      }
    }
  }
  if (weight > 0) {
    s.p50 = p50 / weight;
    s.p95 = p95 / weight;
    s.approximate = timed > 1;
  }
  for (const key of ['bitrate', 'latency']) {
    const [sum, w, n] = weighted[key];
    if (n > 0) {
      s[key] = sum / w;
      s[`${key}Approx`] = n > 1;
    }
  }
  s.margins = margins(rows);
  for (const windowRows of windowsOf(rows).values()) {
    const unique = windowRows.reduce((a, r) => a + (r.unique_viewers ?? 0), 0);
    if (unique >= s.unique && s.margins) s.margins.unique = margins(windowRows).unique;
    s.unique = Math.max(s.unique, unique);
    s.concurrent = Math.max(s.concurrent, windowRows.reduce((a, r) => a + (r.concurrent_peak ?? 0), 0));
  }
  s.rebufferRatio = s.playing + s.stalled > 0 ? s.stalled / (s.playing + s.stalled) : NaN;
  s.failurePct = s.views > 0 ? s.failures / s.views : NaN;
  // A view that fails before its first frame is both a failure and an exit before start;
  // the cells do not tell those views apart, so this is an upper bound.
  s.startupFailurePct = s.views > 0 ? Math.min(s.failures, s.exits) / s.views : NaN;
  s.scores = scoresOf(s);
  return s;
}

// dp accounts (docs/privacy.md): the noisy metrics, their field in a row's `noise`, and the
// figure of summarise() they belong to.
const NOISY = [['views', 'views'], ['unique', 'unique_viewers'], ['playing', 'playing_seconds'], ['failures', 'failures']];

/**
 * The 95 % margins (± half-width) of the noisy figures of some rows, or null when no row
 * carries noise (k mode). One row: its own ci95, as the API gives it. Several: the noise of
 * each row is drawn on its own, so the margins of a sum add up as the square root of the
 * sum of their squares (the normal approximation the API uses for a day of hours too).
 */
function margins(rows) {
  const noisy = rows.filter((r) => r.noise);
  if (noisy.length === 0) return null;
  const out = {};
  for (const [key, field] of NOISY) {
    const cis = noisy.map((r) => r.noise[field]?.ci95 ?? 0);
    out[key] = cis.length === 1 ? cis[0] : Math.sqrt(cis.reduce((a, c) => a + c * c, 0));
  }
  return out;
}

// ---- state -----------------------------------------------------------------------------

let lastRender = null;
let realtimeTimer = 0;

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

/**
 * The period of the same length just before: it ends where the range's first window starts
 * (the API serves every window that overlaps a range, so the window holding `from` belongs
 * to the range, not to both). The granularity is the one `auto` picks for that length.
 */
function previousPeriod(range) {
  const span = range.to - range.from;
  const step = span <= 3 * HOUR ? MINUTE : span <= 7 * DAY ? HOUR : DAY;
  const end = Math.floor(range.from / step) * step;
  return { from: new Date(end - span).toISOString(), to: new Date(end).toISOString() };
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

// [tile id, delta id, pick, format, higher is better]
const TILES = [
  ['total-views', 'delta-views', (s) => s.views, fmtInt, true],
  ['total-unique', 'delta-unique', (s) => s.unique, fmtInt, true],
  ['total-concurrent', 'delta-concurrent', (s) => s.concurrent, fmtInt, true],
  ['total-playing', 'delta-playing', (s) => s.playing, fmtDuration, true],
  ['total-startup', 'delta-startup', (s) => s.p50, fmtMs, false],
  ['total-rebuffer', 'delta-rebuffer', (s) => s.rebufferRatio, fmtPct, false],
  ['total-failures', 'delta-failures', (s) => s.failures, fmtInt, false],
  ['total-failure-pct', 'delta-failure-pct', (s) => s.failurePct, fmtPct, false],
  ['total-startup-failure-pct', 'delta-startup-failure-pct', (s) => s.startupFailurePct, fmtPct, false],
  ['total-exits', 'delta-exits', (s) => s.exits, fmtInt, false],
  ['total-bitrate', 'delta-bitrate', (s) => s.bitrate, fmtKbps, true],
  ['total-bitrate-changes', 'delta-bitrate-changes', (s) => s.bitrateChanges, fmtInt, false],
  ['total-latency', 'delta-latency', (s) => s.latency, fmtMs, false],
];

function renderTiles(total, granularity, previous) {
  for (const [id, deltaId, pick, format, better] of TILES) {
    const value = pick(total);
    setText(id, format(value), value);
    const delta = $(deltaId);
    delta.className = 'delta';
    delta.textContent = '';
    if (!previous) continue;
    const before = pick(previous);
    delta.dataset.previous = String(before);
    if (!Number.isFinite(before) || !Number.isFinite(value)) {
      delta.textContent = `previous period: ${format(before)}`;
      continue;
    }
    const change = before === 0 ? (value === 0 ? 0 : Infinity) : (value - before) / Math.abs(before);
    const arrow = change > 0 ? '▲' : change < 0 ? '▼' : '=';
    const size = Number.isFinite(change) ? percent.format(Math.abs(change)) : 'new';
    delta.textContent = `${arrow} ${size} vs ${format(before)}`;
    if (change !== 0) delta.classList.add((change > 0) === better ? 'good' : 'bad');
  }
  for (const [key, , format] of [['views', 0, fmtInt], ['unique', 0, fmtInt], ['playing', 0, fmtDuration], ['failures', 0, fmtInt]]) {
    const node = $(`margin-${key}`);
    const margin = total.margins?.[key];
    node.hidden = margin === undefined;
    node.textContent = margin === undefined ? '' : `± ${format(margin)}`;
    node.dataset.value = margin === undefined ? '' : String(margin);
  }
  $('dp-note').hidden = !total.margins;
  setText('unique-note', `most in one ${granularity}`);
  const approx = total.approximate ? '≈ ' : '';
  setText('total-startup', Number.isFinite(total.p50) ? `${approx}${fmtMs(total.p50)}` : '–', total.p50);
  setText('startup-note', Number.isFinite(total.p95)
    ? `median · p95 ${approx}${fmtMs(total.p95)}` : 'median and 95th percentile');
  $('startup-note').dataset.value = String(total.p95);
  setText('rebuffer-note', `of watching time, stalled · ${fmtInt(total.rebuffers)} rebuffer${total.rebuffers === 1 ? '' : 's'}`);
  if (total.bitrateApprox) setText('total-bitrate', `≈ ${fmtKbps(total.bitrate)}`, total.bitrate);
  if (total.latencyApprox) setText('total-latency', `≈ ${fmtMs(total.latency)}`, total.latency);
}

function renderScores(total, previous) {
  const container = $('score-tiles');
  container.replaceChildren();
  for (const { key, name, formula } of SCORES) {
    const tile = document.createElement('div');
    tile.className = 'tile score';
    tile.dataset.score = key;
    tile.title = formula;
    const heading = document.createElement('h3');
    heading.textContent = name;
    const value = document.createElement('p');
    value.className = 'value';
    value.id = `score-${key}`;
    value.textContent = fmtScore(total.scores[key]);
    value.dataset.value = String(total.scores[key]);
    const explained = document.createElement('p');
    explained.className = 'note formula';
    explained.textContent = formula;
    tile.append(heading, value);
    if (previous) {
      const delta = document.createElement('p');
      delta.className = 'delta';
      delta.textContent = `previous period: ${fmtScore(previous.scores[key])}`;
      tile.append(delta);
    }
    tile.append(explained);
    container.append(tile);
  }
}

function renderCharts(rows, range, granularity) {
  const step = STEPS[granularity] ?? HOUR;
  const perWindow = new Map([...windowsOf(rows)].map(([t, windowRows]) => [t, summarise(windowRows)]));
  const values = (pick) => new Map([...perWindow].map(([t, s]) => [t, pick(s)]));
  // dp: each window's 95 % margin, drawn as whiskers on views, unique viewers, playing time, failures
  const marginsOf = (key) => (perWindow.size && [...perWindow.values()].some((s) => s.margins)
    ? new Map([...perWindow].map(([t, s]) => [t, s.margins?.[key] ?? null])) : undefined);
  const noisy = { Views: 'views', 'Unique viewers': 'unique', 'Playing time': 'playing', Failures: 'failures' };
  // From the start of the first window to the end of the last, so every window has a slot.
  const common = { from: Math.floor(range.from / step) * step, to: Math.ceil(range.to / step) * step, step };
  const charts = [
    ['chart-views', 'Views', 'bar', fmtInt, [['Views', '--s-views', (s) => s.views]]],
    ['chart-unique', 'Unique viewers', 'line', fmtInt, [['Unique viewers', '--s-unique', (s) => s.unique]]],
    ['chart-concurrent', 'Concurrent viewers', 'line', fmtInt, [['Peak concurrent', '--s-concurrent', (s) => s.concurrent]]],
    ['chart-playing', 'Playing time', 'bar', fmtDuration, [['Playing time', '--s-views', (s) => s.playing]]],
    ['chart-startup', 'Startup time', 'line', fmtMs, [
      ['p50 (median)', '--s-p50', (s) => s.p50], ['p95', '--s-p95', (s) => s.p95]]],
    ['chart-rebuffer', 'Rebuffer ratio', 'line', fmtPct, [['Rebuffer ratio', '--s-rebuffer', (s) => s.rebufferRatio]]],
    ['chart-failures', 'Failures and exits before start', 'bar', fmtInt, [
      ['Failures', '--s-failures', (s) => s.failures], ['Exits before start', '--s-p95', (s) => s.exits]]],
    ['chart-bitrate', 'Average bitrate', 'line', fmtKbps, [['Average bitrate', '--s-unique', (s) => s.bitrate]]],
    ['chart-latency', 'Live latency', 'line', fmtMs, [['Average latency', '--s-concurrent', (s) => s.latency]]],
    ['chart-scores', 'Viewer experience score', 'line', fmtScore, [
      ['Overall', '--s-views', (s) => s.scores.overall], ['Startup', '--s-p95', (s) => s.scores.startup],
      ['Smoothness', '--s-rebuffer', (s) => s.scores.smoothness], ['Success', '--s-concurrent', (s) => s.scores.success]]],
  ];
  const counts = new Set(['chart-views', 'chart-unique', 'chart-concurrent', 'chart-failures']);
  for (const [id, label, kind, format, series] of charts) {
    timeChart($(id), {
      ...common, kind, format, integer: counts.has(id), label: `${label} per ${granularity}`,
      series: series.map(([name, color, pick]) => ({
        name, color, values: values(pick), margins: noisy[name] ? marginsOf(noisy[name]) : undefined,
      })),
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

function tableHead(columns) {
  const head = document.createElement('thead');
  const headRow = document.createElement('tr');
  for (const [text, cls, hint] of columns) {
    const th = document.createElement('th');
    th.scope = 'col';
    th.textContent = text;
    if (cls) th.className = cls;
    if (hint) th.title = hint;
    headRow.append(th);
  }
  head.append(headRow);
  return head;
}

const OVERALL_HINT = SCORES[0].formula;

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
    const head = tableHead([[title, 'name-col'], ['Views', 'num'], ['Share', 'share-col', 'Share of all views'],
      ['Viewers', 'num', 'Unique viewers: most in one window'], ['Startup', 'num', 'Median startup time'],
      ['Rebuffer', 'num', 'Rebuffer ratio'], ['Failures', 'num'], ['Score', 'num', `Viewer experience: ${OVERALL_HINT}`]]);
    const body = document.createElement('tbody');
    for (const [value, s] of entries) {
      const tr = document.createElement('tr');
      tr.dataset.value = value;
      const name = document.createElement('th');
      name.scope = 'row';
      name.append(valueName(dimension, value));
      if (value === OTHER) {
        tr.className = 'merged-row';
        const note = document.createElement('span');
        note.className = 'row-note';
        note.textContent = `${title.toLowerCase()} values each under k = ${k}, pooled`;
        name.append(note);
      } else if (value === 'Other') {
        const note = document.createElement('span');
        note.className = 'row-note';
        note.textContent = `a ${title.toLowerCase()} the user agent did not name`;
        name.append(note);
      }
      const share = cell('', 'share-col');
      share.append(shareBar(total.views > 0 ? s.views / total.views : 0));
      tr.append(name, cell(fmtInt(s.views), 'num views'), share, cell(fmtInt(s.unique), 'num unique'),
        cell(`${s.approximate ? '≈ ' : ''}${fmtMs(s.p50)}`, 'num'), cell(fmtPct(s.rebufferRatio), 'num'),
        cell(fmtInt(s.failures), 'num failures'), cell(fmtScore(s.scores.overall), 'num score'));
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
        cell('–', 'num'), cell('–', 'num'), cell('–', 'num'), cell('–', 'num'), cell('–', 'num'));
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

/** Streams of the range: a button per stream filters the page to it. */
function renderStreams(rows) {
  const card = $('streams-card');
  card.replaceChildren();
  const byStream = new Map();
  for (const row of rows) {
    if (!byStream.has(row.stream)) byStream.set(row.stream, []);
    byStream.get(row.stream).push(row);
  }
  if (byStream.size === 0) {
    const note = document.createElement('p');
    note.className = 'empty-note';
    note.textContent = 'No stream has published numbers in this range.';
    card.append(note);
    return;
  }
  const table = document.createElement('table');
  table.className = 'breakdown streams';
  const caption = document.createElement('caption');
  caption.textContent = $('stream').value ? 'The stream shown' : 'Streams in the range';
  const body = document.createElement('tbody');
  const entries = [...byStream].map(([stream, streamRows]) => [stream, summarise(streamRows)])
    .sort((a, b) => b[1].views - a[1].views || String(a[0]).localeCompare(String(b[0])));
  for (const [stream, s] of entries) {
    const tr = document.createElement('tr');
    tr.dataset.value = stream;
    const name = document.createElement('th');
    name.scope = 'row';
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'link';
    button.dataset.stream = stream;
    button.textContent = stream === OTHER ? 'Merged small streams' : stream;
    button.title = `Show only ${stream === OTHER ? 'the merged small streams' : stream}`;
    button.addEventListener('click', () => {
      $('stream').value = stream;
      refresh();
    });
    name.append(button);
    tr.append(name, cell(fmtInt(s.views), 'num views'), cell(fmtDuration(s.playing), 'num'),
      cell(`${s.approximate ? '≈ ' : ''}${fmtMs(s.p50)}`, 'num'), cell(fmtPct(s.rebufferRatio), 'num'),
      cell(fmtInt(s.failures), 'num failures'), cell(fmtScore(s.scores.overall), 'num score'));
    body.append(tr);
  }
  table.append(caption, tableHead([['Stream', 'name-col'], ['Views', 'num'], ['Playing', 'num'],
    ['Startup', 'num', 'Median startup time'], ['Rebuffer', 'num'], ['Failures', 'num'],
    ['Score', 'num', `Viewer experience: ${OVERALL_HINT}`]]), body);
  card.append(table);
  if ($('stream').value) {
    const all = document.createElement('button');
    all.type = 'button';
    all.className = 'secondary';
    all.id = 'all-streams';
    all.textContent = 'Show all streams';
    all.addEventListener('click', () => {
      $('stream').value = '';
      refresh();
    });
    card.append(all);
  }
}

function renderCodes(total) {
  const card = $('codes-card');
  card.replaceChildren();
  if (total.codes.size === 0) {
    const note = document.createElement('p');
    note.className = 'empty-note';
    note.textContent = total.failures > 0
      ? 'The players sent no error code with these failures.' : 'No failures in this range.';
    card.append(note);
    return;
  }
  const table = document.createElement('table');
  table.className = 'breakdown codes';
  const caption = document.createElement('caption');
  caption.textContent = 'Failures by error code';
  const body = document.createElement('tbody');
  for (const [code, n] of [...total.codes].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))) {
    const tr = document.createElement('tr');
    tr.dataset.value = code;
    const name = document.createElement('th');
    name.scope = 'row';
    name.textContent = code === OTHER ? 'Merged rare codes' : code;
    tr.append(name, cell(fmtInt(n), 'num count'), cell(fmtPct(total.failures ? n / total.failures : NaN), 'num'));
    body.append(tr);
  }
  table.append(caption, tableHead([['Code', 'name-col'], ['Failures', 'num'], ['Of all failures', 'num']]), body);
  card.append(table);
}

/** The k notice: what the breakdowns leave out, as the API counts it (viewers per window). */
function renderPrivacy(k, hidden) {
  $('privacy-text').textContent = `Every number on this page stands for at least k = ${k} `
    + `distinct viewers. Smaller groups are pooled into “${MERGED_LABEL}” or left out, so that no one `
    + 'can be singled out; streams with fewer than k viewers are pooled into “Merged small streams” '
    + 'or left out, and as nothing under k is stored, those cannot be counted.';
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

// ---- real time ---------------------------------------------------------------------------

async function loadRealtime() {
  const section = $('realtime');
  try {
    const body = await api('/v1/realtime', { minutes: 60, stream: $('stream').value });
    section.dataset.loads = String(Number(section.dataset.loads) + 1);
    const values = new Map();
    for (const point of body.series) values.set(Date.parse(point.window_start), point.concurrent_viewers);
    const from = Date.parse(body.from);
    const to = Date.parse(body.to);
    timeChart($('chart-realtime'), {
      from, to, step: MINUTE, kind: 'bar', format: fmtInt, integer: true, label: 'Concurrent viewers per minute, last hour',
      series: [{ name: 'Concurrent viewers', color: '--s-concurrent', values }],
    });
    const latest = body.latest_window_start ? Date.parse(body.latest_window_start) : NaN;
    const latestPoint = body.series.find((p) => Date.parse(p.window_start) === latest);
    setText('realtime-now', fmtInt(latestPoint?.concurrent_viewers ?? NaN), latestPoint?.concurrent_viewers ?? '');
    const clock = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });
    if (Number.isFinite(latest)) {
      const behind = Math.max(0, Math.round((Date.now() - (latest + MINUTE)) / MINUTE));
      setText('realtime-latest', `in the minute from ${clock.format(new Date(latest))}`);
      setText('realtime-delay', `Delay: that minute ended ${behind} min ago; a minute appears a few seconds after it ends, once at least k = ${body.k} viewers watched it.`, behind);
    } else {
      setText('realtime-latest', 'no published minute in the last hour');
      setText('realtime-delay', `Delay: a minute appears a few seconds after it ends, once at least k = ${body.k} viewers watched it.`, '');
    }
    setText('realtime-note', body.note);
  } catch (error) {
    if (error.status === 401) {
      signOut('Your token was not accepted. Please sign in again.');
      return;
    }
    setText('realtime-delay', `Could not load the last hour: ${error.message}`);
  }
}

function stopRealtime(state = 'stopped') {
  clearInterval(realtimeTimer);
  realtimeTimer = 0;
  $('realtime').dataset.state = state;
}

function startRealtime() {
  stopRealtime();
  if (!token() || document.visibilityState === 'hidden') {
    $('realtime').dataset.state = token() ? 'paused' : 'stopped';
    return;
  }
  $('realtime').dataset.state = 'running';
  loadRealtime();
  realtimeTimer = setInterval(loadRealtime, REALTIME_EVERY);
}

// ---- downloads -------------------------------------------------------------------------------

async function download(path, params, fallbackName) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(params)) if (value) url.searchParams.set(key, value);
  showStatus('Preparing the download…');
  try {
    const response = await fetch(url, {
      headers: { Authorization: `Bearer ${token()}` },
      credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer',
    });
    if (!response.ok) throw new ApiError(response.status, response.statusText);
    const disposition = response.headers.get('Content-Disposition') ?? '';
    const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] ?? fallbackName;
    const link = document.createElement('a');
    link.href = URL.createObjectURL(await response.blob());
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    showStatus(`Downloaded ${name}`);
  } catch (error) {
    showStatus(`Could not download: ${error.message}`, true);
  }
}

function viewParams() {
  const range = lastRender?.range ?? selectedRange();
  return {
    from: new Date(range.from).toISOString(),
    to: new Date(range.to).toISOString(),
    stream: $('stream').value,
    granularity: 'auto',
  };
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
    options.push(new Option(name === OTHER ? 'Merged small streams (each under k)' : name, name));
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
  const compare = $('compare').checked;
  try {
    const [totals, breakdowns, before] = await Promise.all([
      stats(params),
      stats({ ...params, by: DIMENSIONS.map(([d]) => d).join(',') }),
      compare ? stats({ ...params, ...previousPeriod(range) }) : null,
    ]);
    if ($('stream').options.length <= 1) await loadStreams(totals.rows);
    const k = totals.k;
    const granularity = totals.granularity;
    $('account-id').textContent = totals.account_id;
    setText('k-value', String(k), k);
    const total = summarise(totals.rows);
    const previous = before ? summarise(before.rows) : null;
    renderTiles(total, granularity, previous);
    renderScores(total, previous);
    renderCharts(totals.rows, range, granularity);
    renderStreams(totals.rows);
    renderCodes(total);
    renderBreakdowns(breakdowns.rows, total, k);
    renderPrivacy(k, breakdowns.hidden);
    const empty = $('empty');
    empty.hidden = totals.rows.length > 0;
    $('charts-section').hidden = totals.rows.length === 0;
    empty.textContent = `No data yet for this range — numbers appear once at least ${k} viewers watched.`;
    lastRender = { rows: totals.rows, range, granularity };
    if (!realtimeTimer) startRealtime();
    else loadRealtime();
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
  stopRealtime();
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
  $('compare').addEventListener('change', refresh);
  $('download-view').addEventListener('click', () => {
    download('/v1/stats', { ...viewParams(), format: 'csv' }, 'streamtally-view.csv');
  });
  $('download-export').addEventListener('click', () => {
    download('/v1/export', { format: 'csv' }, 'streamtally-export.csv');
  });
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
  // The real-time view asks every 15 s while the tab is shown, never while it is hidden.
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'hidden') stopRealtime('paused');
    else if (token() && lastRender) startRealtime();
  });
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(resizeCharts, 150);
  });
  if (token()) {
    signedIn(true);
    refresh();
  } else {
    signedIn(false);
  }
}

init();
