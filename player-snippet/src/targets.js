/** What StreamTally asks players to report: the events and keys the collector uses. */

/** Events: play state, time interval, error, bitrate change, playback rate. */
export const EVENTS = ['ps', 't', 'e', 'bc', 'pr'];

/** Keys: nothing beyond what the collector counts (no segment URLs, no custom keys). */
export const KEYS = [
  'bl', 'br', 'cid', 'e', 'ec', 'ltc', 'msd', 'pr', 'pt', 'sf', 'sid', 'sn', 'st', 'sta', 'ts', 'v',
];

/** Default seconds between `t` (time interval) events. */
export const INTERVAL_S = 10;
