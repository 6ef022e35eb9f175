/**
 * StreamTally player snippet: seals CMCD v2 event reports with HPKE and sends them to a
 * StreamTally collector. No cookies, no storage; the session id lives in memory only.
 */
export { encodeBody, encodeEvent } from './cmcd.js';
export { KeyCache, parseOhttpKeys } from './keys.js';
export { frameHeader, sealInfo, sealReport } from './seal.js';
export { Sender, reportUrl } from './sender.js';
export { hlsjsCmcd, hlsjsLoader } from './hlsjs.js';
export { shakaCmcd, shakaError } from './shaka.js';
export { MediaTracker, State, trackMedia } from './media.js';
export { EVENTS, INTERVAL_S, KEYS } from './targets.js';
export { Batcher } from './batch.js';
