/**
 * hls.js >= 1.7: `cmcd` config that makes hls.js report CMCD v2 events by itself, with
 * its `loader` callback queueing each event in the snippet's batch (batch.js), which seals
 * and sends several at a time for StreamTally.
 */
import { Batcher } from './batch.js';
import { EVENTS, INTERVAL_S, KEYS } from './targets.js';
import { Sender } from './sender.js';

/**
 * The `cmcd` option for `new Hls({cmcd})`.
 *
 * @param {object} options
 * @param {string} options.collector  collector origin
 * @param {string} options.embedKey   the account's public embed key
 * @param {string} [options.contentId]  stream name (CMCD `cid`)
 * @param {string[]} [options.events]  CMCD event types to report
 * @param {number} [options.interval]  seconds between `t` events
 * @param {number} [options.batchSize] events per report at most (the snippet's queue; hls.js
 *   hands over every event at once)
 * @param {number} [options.flushInterval] seconds an event waits in the queue at most
 * @param {boolean} [options.requestMode] also add CMCD to media requests (sent to the CDN)
 */
export function hlsjsCmcd({
  collector,
  embedKey,
  contentId,
  events = EVENTS,
  interval = INTERVAL_S,
  batchSize,
  flushInterval,
  includeKeys = KEYS,
  requestMode = false,
  setTimeout,
  clearTimeout,
  page,
  ...senderOptions
}) {
  const sender = new Sender({ collector, embedKey, player: 'hls.js', ...senderOptions });
  sender.warm();
  const queue = new Batcher(sender, { batchSize, flushInterval, setTimeout, clearTimeout, page });
  // batchSize 1: hls.js's own batch has no timer and is lost with the page (batch.js).
  const target = { url: sender.url, events: [...events], interval, batchSize: 1, includeKeys };
  return {
    version: 2,
    contentId,
    // hls.js sends request-mode CMCD (with the session id) to the CDN for any non-empty list.
    ...(requestMode ? {} : { includeKeys: [] }),
    eventTargets: [target],
    loader: hlsjsLoader(queue),
  };
}

/**
 * hls.js's `cmcd.loader`: queues StreamTally's target's events in `queue` (a Batcher) and
 * resolves when the report carrying them has been answered; passes any other target's
 * report on unchanged. The status it resolves to drives hls.js: 410 ends the target,
 * 429/5xx keep the events queued for the next report, anything else drops them.
 */
export function hlsjsLoader(queue, forward = globalThis.fetch?.bind(globalThis)) {
  return async ({ url, method = 'POST', headers, body }) => {
    if (url !== queue.url) {
      const response = await forward(url, { method, headers, body, credentials: 'omit' });
      return { status: response.status };
    }
    const text = typeof body === 'string' ? body : new TextDecoder().decode(body);
    const status = await queue.add(text);
    return { status: status === 0 ? 503 : status };
  };
}
