/**
 * Shaka Player 5: Shaka reports CMCD v2 events through its NetworkingEngine. Its event
 * target URL gets a `streamtally:` prefix, and a scheme plugin for that prefix seals and
 * sends the report with StreamTally's retry rules (Shaka's own retry would re-send the same
 * sealed bytes, which the collector rejects as a replay).
 */
import { EVENTS, INTERVAL_S, KEYS } from './targets.js';
import { Sender } from './sender.js';

export const SCHEME = 'streamtally';
const senders = new Map();

/** The Shaka scheme plugin: `streamtally:<report url>` → Sender for that URL. */
export function shakaSchemePlugin(shaka) {
  return (uri, request) => {
    const url = uri.slice(SCHEME.length + 1);
    const sender = senders.get(url);
    const promise = (async () => {
      const body = request.body ? new TextDecoder().decode(request.body) : '';
      const status = sender && body ? await sender.send(body) : 410;
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
    batchSize = 1,
    includeKeys = KEYS,
    ...senderOptions
  },
) {
  const sender = new Sender({ collector, embedKey, player: 'shaka', ...senderOptions });
  sender.warm();
  senders.set(sender.url, sender);
  shaka.net.NetworkingEngine.registerScheme(SCHEME, shakaSchemePlugin(shaka));
  return {
    enabled: true,
    version: 2,
    contentId,
    eventTargets: [
      {
        enabled: true,
        url: `${SCHEME}:${sender.url}`,
        events: [...events],
        interval,
        batchSize,
        includeKeys,
      },
    ],
  };
}
