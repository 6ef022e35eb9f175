// Time charts drawn by uPlot (aggregator/api/static/vendor/, copied from npm by dashboard/build.mjs
// and loaded by index.html as a classic script that defines window.uPlot).
//
// Every chart spans the whole range asked for, one slot per window, so one busy minute in a
// day still stands where it happened; lone values are drawn as points (a line needs two),
// counts as bars. The y axis starts at 0 and its width is measured from its own labels, so
// the labels stay inside the card. The box carries a text summary for screen readers.

const charts = new Map();

const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || '#2f6fb0';

let measureContext = null;
function textWidth(text) {
  measureContext ??= document.createElement('canvas').getContext('2d');
  measureContext.font = '11px system-ui, "DejaVu Sans", sans-serif';
  return measureContext.measureText(text).width;
}

/**
 * Draw (or redraw) a chart into `box`.
 * options: { from, to, step (ms), kind: 'bar' | 'line', format(v), label, integer (whole ticks),
 *            series: [{ name, color: '--css-var', values: Map<ms, number|null>,
 *                       margins?: Map<ms, number|null> }] }
 * `margins` (dp accounts): each window's 95 % margin, drawn as a whisker from value − margin
 * to value + margin over the bar or point.
 */
export function timeChart(box, options) {
  const { from, to, step, kind, format, label, series, integer = false } = options;
  const slots = [];
  for (let t = from; t < to; t += step) slots.push(t);
  const xs = slots.map((t) => t / 1000);
  const ys = series.map((s) => slots.map((t) => {
    const v = s.values.get(t);
    return Number.isFinite(v) ? v : null;
  }));
  const ms = series.map((s) => (s.margins ? slots.map((t) => {
    const m = s.margins.get(t);
    return Number.isFinite(m) ? m : null;
  }) : null));
  let top = 0;
  let drawn = 0;
  let whiskers = 0;
  ys.forEach((column, i) => column.forEach((v, j) => {
    if (v === null) return;
    drawn += 1;
    const m = ms[i]?.[j] ?? null;
    if (m !== null) whiskers += 1;
    top = Math.max(top, v + (m ?? 0));
  }));
  const yMax = top > 0 ? top * 1.15 : 1;
  const axisFont = '11px system-ui, "DejaVu Sans", sans-serif';
  const axisColor = cssVar('--muted');
  const gridColor = cssVar('--grid');
  const width = Math.max(200, Math.floor(box.clientWidth || box.parentElement.clientWidth || 360));
  // Bars of several series stand side by side, not on top of each other.
  const barsOf = (i) => {
    if (kind !== 'bar') return undefined;
    if (series.length === 1) return uPlot.paths.bars({ size: [0.7, 48, 4], align: 0 });
    return uPlot.paths.bars({ size: [0.35, 24, 3], align: i === 0 ? -1 : 1 });
  };
  const whole = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 1e7, 1e8];
  const opts = {
    width,
    height: 190,
    legend: { show: series.length > 1, live: false },
    cursor: { drag: { x: false, y: false }, points: { size: 7 } },
    scales: {
      x: { time: true, range: () => [from / 1000, (to - (kind === 'bar' ? 0 : step)) / 1000] },
      y: { range: () => [0, yMax] },
    },
    axes: [
      { stroke: axisColor, font: axisFont, grid: { stroke: gridColor, width: 1 }, ticks: { stroke: gridColor } },
      {
        stroke: axisColor,
        font: axisFont,
        grid: { stroke: gridColor, width: 1 },
        ticks: { stroke: gridColor },
        values: (u, splits) => splits.map((v) => format(v)),
        ...(integer ? { incrs: whole } : {}),
        // As wide as the widest label plus the tick and a margin: never cut off.
        size: (u, values) => Math.ceil(Math.max(0, ...(values ?? []).map((v) => textWidth(String(v))))) + 18,
      },
    ],
    series: [
      { value: (u, v) => (v === null ? '–' : new Date(v * 1000).toLocaleString()) },
      ...series.map((s, i) => ({
        label: s.name,
        stroke: cssVar(s.color),
        fill: kind === 'bar' ? cssVar(s.color) : undefined,
        width: 2,
        paths: barsOf(i),
        spanGaps: false,
        points: { show: kind !== 'bar', size: 8, fill: cssVar(s.color) },
        value: (u, v) => (v === null ? '–' : format(v)),
      })),
    ],
  };
  if (whiskers > 0) opts.hooks = { draw: [(u) => drawWhiskers(u, ys, ms, kind, series.length)] };
  charts.get(box)?.destroy();
  box.replaceChildren();
  const chart = new uPlot(opts, [xs, ...ys], box);
  charts.set(box, chart);
  box.setAttribute('role', 'img');
  box.dataset.points = String(drawn);
  box.dataset.slots = String(slots.length);
  const summary = drawn === 0 ? 'no published windows'
    : `${drawn} published value${drawn === 1 ? '' : 's'} in ${slots.length} windows, highest ${format(top)}`;
  box.dataset.margins = String(whiskers);
  const noise = whiskers > 0 ? ', each shown with its 95 % margin' : '';
  box.setAttribute('aria-label', `${label}: ${summary}${noise}`);
  return chart;
}

/** The 95 % margins as whiskers with caps, in the text colour, over each bar or point. */
function drawWhiskers(u, ys, ms, kind, count) {
  const { ctx } = u;
  const ratio = devicePixelRatio || 1;
  const xs = u.data[0];
  const slotPx = xs.length > 1 ? Math.abs(u.valToPos(xs[1], 'x', true) - u.valToPos(xs[0], 'x', true)) : 0;
  ctx.save();
  ctx.strokeStyle = cssVar('--text');
  ctx.lineWidth = 1.5 * ratio;
  ys.forEach((column, i) => {
    if (!ms[i]) return;
    // side-by-side bars (bars of several series) stand left and right of their slot
    const shift = kind === 'bar' && count > 1 ? (i === 0 ? -0.175 : 0.175) * slotPx : 0;
    column.forEach((v, j) => {
      const m = ms[i][j];
      if (v === null || m === null) return;
      const x = u.valToPos(xs[j], 'x', true) + shift;
      const lo = u.valToPos(Math.max(0, v - m), 'y', true);
      const hi = u.valToPos(v + m, 'y', true);
      const cap = 4 * ratio;
      ctx.beginPath();
      ctx.moveTo(x, lo);
      ctx.lineTo(x, hi);
      ctx.moveTo(x - cap, lo);
      ctx.lineTo(x + cap, lo);
      ctx.moveTo(x - cap, hi);
      ctx.lineTo(x + cap, hi);
      ctx.stroke();
    });
  });
  ctx.restore();
}

/** Fit every chart to its box again (after a resize). */
export function resizeCharts() {
  for (const [box, chart] of charts) {
    if (!box.isConnected) {
      chart.destroy();
      charts.delete(box);
      continue;
    }
    const width = Math.max(200, Math.floor(box.clientWidth));
    if (width !== chart.width) chart.setSize({ width, height: chart.height });
  }
}
