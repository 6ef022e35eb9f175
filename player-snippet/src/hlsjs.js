/**
 * hls.js >= 1.7: `cmcd` config that makes hls.js report CMCD v2 events by itself, with
 * its `loader` callback sealing each report for StreamTally.
 */
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
 * @param {number} [options.batchSize] events per report
 * @param {boolean} [options.requestMode] also add CMCD to media requests (sent to the CDN)
 */
export function hlsjsCmcd({
  collector,
  embedKey,
  contentId,
  events = EVENTS,
  interval = INTERVAL_S,
  batchSize = 1,
  includeKeys = KEYS,
  requestMode = false,
  ...senderOptions
}) {
  const sender = new Sender({ collector, embedKey, player: 'hls.js', ...senderOptions });
  sender.warm();
  const target = { url: sender.url, events: [...events], interval, batchSize, includeKeys };
  return {
    version: 2,
    contentId,
    // hls.js sends request-mode CMCD (with the session id) to the CDN for any non-empty list.
    ...(requestMode ? {} : { includeKeys: [] }),
    eventTargets: [target],
    loader: hlsjsLoader(sender),
  };
}

/**
 * hls.js's `cmcd.loader`: seals and sends reports for StreamTally's target, passes any other
 * target's report on unchanged. The status it resolves to drives hls.js: 410 ends the target,
 * 429/5xx keep the events queued for the next report, anything else drops them.
 */
export function hlsjsLoader(sender, forward = globalThis.fetch?.bind(globalThis)) {
  return async ({ url, method = 'POST', headers, body }) => {
    if (url !== sender.url) {
      const response = await forward(url, { method, headers, body, credentials: 'omit' });
      return { status: response.status };
    }
    const text = typeof body === 'string' ? body : new TextDecoder().decode(body);
    const status = await sender.send(text);
    return { status: status === 0 ? 503 : status };
  };
}
