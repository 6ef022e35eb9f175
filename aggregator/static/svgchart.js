// StreamTally's chart module: time-series line and bar charts drawn as SVG.
//
// Small on purpose (no dependency, ~6 KB): the dashboard needs one kind of chart, values
// over time windows, and it must run under a strict Content-Security-Policy (no inline
// styles: colours come from classes in dashboard.css) and offline. Each chart is an
// <svg role="img"> with a text summary as its accessible name; every point or bar has a
// <title>, which browsers show on hover. Windows without published data are gaps, never
// zeros: a missing cell may be one with fewer than k viewers.

const NS = 'http://www.w3.org/2000/svg';
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const TIME_STEPS = [MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR,
  3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY];

function svg(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Evenly spaced round numbers from 0 to at least `max` (about `count` steps). */
export function niceTicks(max, count = 4, integer = false) {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / magnitude;
  let step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * magnitude;
  if (integer) step = Math.max(1, Math.round(step));
  const ticks = [];
  for (let i = 0; ticks.length === 0 || ticks[ticks.length - 1] < max; i += 1) {
    ticks.push(Number((i * step).toPrecision(12)));
  }
  return ticks;
}

/** Tick times between `from` and `to` (ms), on round local times, at most `most` of them. */
export function timeTicks(from, to, most = 6) {
  const span = to - from;
  const step = TIME_STEPS.find((s) => span / s <= most) ?? Math.ceil(span / most / DAY) * DAY;
  const offset = new Date(from).getTimezoneOffset() * MINUTE; // local midnight alignment
  const first = Math.ceil((from - offset) / step) * step + offset;
  const ticks = [];
  for (let t = first; t <= to; t += step) ticks.push(t);
  return { ticks, step };
}

function timeLabel(t, span) {
  const options = span <= 36 * HOUR
    ? { hour: '2-digit', minute: '2-digit' }
    : { month: 'short', day: 'numeric' };
  return new Intl.DateTimeFormat(undefined, options).format(new Date(t));
}

function windowLabel(t, step) {
  const options = { month: 'short', day: 'numeric' };
  if (step < DAY) Object.assign(options, { hour: '2-digit', minute: '2-digit' });
  return new Intl.DateTimeFormat(undefined, options).format(new Date(t));
}

/**
 * Draw a chart into `container` (its content is replaced) and return the <svg>.
 *
 * options: {
 *   label: accessible name, e.g. "Views per hour",
 *   from, to: the time range (ms), step: window length (ms),
 *   series: [{ name, cls, points: [[windowStartMs, value], ...] }],
 *   kind: 'line' | 'bar', integer: whether values are whole numbers,
 *   format: (value) => string, for axis labels and titles,
 *   height: pixels (default 180)
 * }
 */
export function timeChart(container, options) {
  const { from, to, step, series, kind = 'line', integer = false } = options;
  const format = options.format ?? String;
  const width = Math.max(260, Math.round(container.clientWidth || 480));
  const height = options.height ?? 180;
  const m = { left: 52, right: 12, top: 10, bottom: 26 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const yTicks = niceTicks(Math.max(0, ...values), 4, integer);
  const yMax = yTicks[yTicks.length - 1];
  const x = (t) => m.left + ((t - from) / (to - from)) * plotW;
  const y = (v) => m.top + plotH - (v / yMax) * plotH;

  const root = svg('svg', {
    viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', class: `chart chart-${kind}`,
  });
  const peak = values.length ? format(Math.max(...values)) : 'none';
  root.append(svg('title', {}, `${options.label}: ${values.length} values, highest ${peak}`));

  const grid = svg('g', { class: 'grid', 'aria-hidden': 'true' });
  for (const v of yTicks) {
    grid.append(svg('line', { x1: m.left, x2: width - m.right, y1: y(v), y2: y(v) }));
    grid.append(svg('text', { x: m.left - 6, y: y(v), class: 'y-label', 'dominant-baseline': 'middle', 'text-anchor': 'end' }, format(v)));
  }
  const span = to - from;
  for (const t of timeTicks(from, to, Math.max(2, Math.floor(plotW / 60))).ticks) {
    grid.append(svg('line', { x1: x(t), x2: x(t), y1: m.top + plotH, y2: m.top + plotH + 4 }));
    grid.append(svg('text', { x: x(t), y: height - 6, class: 'x-label', 'text-anchor': 'middle' }, timeLabel(t, span)));
  }
  grid.append(svg('line', { class: 'axis', x1: m.left, x2: width - m.right, y1: m.top + plotH, y2: m.top + plotH }));
  root.append(grid);

  const slot = (step / span) * plotW;
  series.forEach((s, index) => {
    const group = svg('g', { class: `series ${s.cls ?? `series-${index}`}` });
    const points = s.points.filter((p) => Number.isFinite(p[1])).sort((a, b) => a[0] - b[0]);
    if (kind === 'bar') {
      const barW = Math.max(1.5, Math.min(slot * 0.8, 40) / series.length);
      for (const [t, v] of points) {
        const left = x(t + step / 2) - (barW * series.length) / 2 + index * barW;
        const bar = svg('rect', { x: left, y: y(v), width: barW, height: Math.max(0, y(0) - y(v)) });
        bar.append(svg('title', {}, `${s.name}, ${windowLabel(t, step)}: ${format(v)}`));
        group.append(bar);
      }
    } else {
      let d = '';
      let previous = null;
      for (const [t, v] of points) {
        const joined = previous !== null && t - previous <= step * 1.5;
        d += `${joined ? 'L' : 'M'}${x(t + step / 2).toFixed(1)},${y(v).toFixed(1)}`;
        previous = t;
      }
      if (d) group.append(svg('path', { d, fill: 'none' }));
      const r = points.length <= 60 ? 3 : 1.5;
      for (const [t, v] of points) {
        const dot = svg('circle', { cx: x(t + step / 2), cy: y(v), r });
        dot.append(svg('title', {}, `${s.name}, ${windowLabel(t, step)}: ${format(v)}`));
        group.append(dot);
      }
    }
    root.append(group);
  });

  container.replaceChildren(root);
  if (series.length > 1) {
    const legend = document.createElement('ul');
    legend.className = 'legend';
    series.forEach((s, index) => {
      const item = document.createElement('li');
      const swatch = document.createElement('span');
      swatch.className = `swatch ${s.cls ?? `series-${index}`}`;
      swatch.setAttribute('aria-hidden', 'true');
      item.append(swatch, s.name);
      legend.append(item);
    });
    container.append(legend);
  }
  return root;
}
