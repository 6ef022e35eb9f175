// Mux Data's viewer experience scores, computed from StreamTally's published cells.
//
// Mux scores every view and averages; the cells hold sums and quantiles, not views, so each
// score is applied to the cell's figures (median startup, rebuffers per view, rebuffer
// ratio, failure and exit counts). Every formula is shown next to its score.

const clamp = (v) => Math.max(0, Math.min(100, v));

export const SCORES = [
  {
    key: 'overall',
    name: 'Viewer experience',
    formula: 'Playback success × the lower of startup time and smoothness ÷ 100. '
      + "Mux's overall score also weighs video quality (upscaling), which StreamTally does not measure.",
  },
  {
    key: 'success',
    name: 'Playback success',
    formula: '(100 × views played without error + 50 × exits before start that were not failures '
      + '+ 0 × failures) ÷ views; exits not failures = exits before start − failures, at least 0 '
      + '(a failure before the first frame is counted as both).',
  },
  {
    key: 'startup',
    name: 'Startup time',
    formula: '8 ÷ (8 + median startup in seconds) × 100 (Mux: 400 ms → 95, 2 s → 80, 8 s → 50).',
  },
  {
    key: 'smoothness',
    name: 'Smoothness',
    formula: 'Average of 100 ÷ √(1 + (rebuffers per view ÷ 2)²) and 100 × e^(−10 × rebuffer ratio); '
      + 'rebuffer ratio = stalled ÷ (playing + stalled).',
  },
];

/** The four scores (NaN where the cells hold nothing to score) of a summary. */
export function scoresOf(s) {
  const out = { success: NaN, startup: NaN, smoothness: NaN, overall: NaN };
  if (s.views > 0) {
    const failures = Math.min(s.failures, s.views);
    const exitsOnly = Math.min(Math.max(0, s.exits - s.failures), s.views - failures);
    out.success = clamp((100 * (s.views - failures - exitsOnly) + 50 * exitsOnly) / s.views);
  }
  if (Number.isFinite(s.p50)) out.startup = clamp((8 / (8 + s.p50 / 1000)) * 100);
  if (s.views > 0 && Number.isFinite(s.rebufferRatio)) {
    const perView = s.rebuffers / s.views;
    const byCount = 100 / Math.sqrt(1 + (perView / 2) ** 2);
    const byRatio = 100 * Math.exp(-10 * s.rebufferRatio);
    out.smoothness = clamp((byCount + byRatio) / 2);
  }
  const experience = [out.startup, out.smoothness].filter(Number.isFinite);
  if (Number.isFinite(out.success) && experience.length) {
    out.overall = clamp((out.success * Math.min(...experience)) / 100);
  }
  return out;
}
