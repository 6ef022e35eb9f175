/**
 * Shaka Player 5: Shaka reports CMCD v2 events through its NetworkingEngine. Its event
 * target URL gets a `streamtally:` prefix, and a scheme plugin for that prefix seals and
 * sends the report with StreamTally's retry rules (Shaka's own retry would re-send the same
 * sealed bytes, which the collector rejects as a replay). Shaka hands over every event at
 * once (target `batchSize` 1); the snippet's queue (batch.js) sends several per report.
 *
 * Shaka 5.2 reports no failed `load()` and no error code, so `shakaError` sends the fatal
 * error itself, in Shaka's CMCD session (the snippet chooses Shaka's `sessionId`).
 */
import { Batcher } from './batch.js';
import { encodeBody } from './cmcd.js';
import { EVENTS, INTERVAL_S, KEYS } from './targets.js';
import { Sender } from './sender.js';

export const SCHEME = 'streamtally';
const queues = new Map(); // report URL -> Batcher
const sessions = new WeakMap(); // the config shakaCmcd returned -> {queue, sid, cid, failed}
const CRITICAL = 2; // shaka.util.Error.Severity.CRITICAL: Shaka gives up

/** The Shaka scheme plugin: `streamtally:<report url>` → the queue for that URL. */
export function shakaSchemePlugin(shaka) {
  return (uri, request) => {
    const url = uri.slice(SCHEME.length + 1);
    const queue = queues.get(url);
    const promise = (async () => {
      const body = request.body ? new TextDecoder().decode(request.body) : '';
      const status = queue && body ? await queue.add(body) : 410;
      return {
        uri,
        originalUri: uri,
        data: new ArrayBuffer(0),
        headers: {},
        status: status === 0 ? 503 : status,
        originalRequest: request,
      };
    })();
    return new shaka.util.AbortableOperation(promise, () => Promise.resolve());
  };
}

/**
 * The `cmcd` section for `player.configure({cmcd})`. Registers the scheme plugin once.
 *
 * @param {object} shaka  the `shaka` namespace (for NetworkingEngine and AbortableOperation)
 * @param {object} options  as for `hlsjsCmcd`: collector, embedKey, contentId, events, …
 */
export function shakaCmcd(
  shaka,
  {
    collector,
    embedKey,
    contentId,
    events = EVENTS,
    interval = INTERVAL_S,
    batchSize,
    flushInterval,
    includeKeys = KEYS,
    randomUUID = () => globalThis.crypto.randomUUID(),
    setTimeout,
    clearTimeout,
    page,
    ...senderOptions
  },
) {
  const sender = new Sender({ collector, embedKey, player: 'shaka', ...senderOptions });
  sender.warm();
  queues.get(sender.url)?.destroy();
  const queue = new Batcher(sender, { batchSize, flushInterval, setTimeout, clearTimeout, page });
  queues.set(sender.url, queue);
  shaka.net.NetworkingEngine.registerScheme(SCHEME, shakaSchemePlugin(shaka));
  const sessionId = randomUUID(); // random, in memory only, as Shaka's own would be
  const cmcd = {
    enabled: true,
    version: 2,
    contentId,
    sessionId,
    eventTargets: [
      {
        enabled: true,
        url: `${SCHEME}:${sender.url}`,
        events: [...events],
        interval,
        batchSize: 1, // Shaka's own batch has no timer and is lost with the page (batch.js)
        includeKeys,
      },
    ],
  };
  sessions.set(cmcd, { queue, sid: sessionId, cid: contentId, failed: false });
  return cmcd;
}

/**
 * Report a fatal Shaka error with its code: `ps` with `sta=f`, then `e` with `ec`, in the
 * session of `cmcd` (what `shakaCmcd` returned), once. Call it with `player.load()`'s
 * rejection and with the player's `error` events (`event.detail`); recoverable errors are
 * ignored. The events carry no `sn` (Shaka numbers its own), so the collector tells them
 * apart by type and time. Resolves to the HTTP status, or 0 when nothing was sent.
 */
export function shakaError(cmcd, error, now = Date.now) {
  const session = sessions.get(cmcd);
  if (!session || session.failed || error?.severity !== CRITICAL) return Promise.resolve(0);
  session.failed = true;
  const base = { ts: now(), v: 2, sid: session.sid, cid: session.cid, sta: 'f' };
  const code = String(error.code ?? 'unknown');
  return session.queue.add(encodeBody([{ e: 'ps', ...base }, { e: 'e', ...base, ec: [code] }]));
}
