/**
 * Sends CMCD v2 event-mode bodies to a StreamTally collector and honours its answers:
 * 2xx done; 400 dropped (after one key refetch if the collector did not know our key);
 * 401/403/404/410 stop for this session; 413 split the batch; 429 wait Retry-After;
 * 5xx and network errors: bounded retries with exponential backoff and jitter, re-sending
 * the same events (the collector counts each (sid, sn) once). Each attempt is sealed
 * afresh, so a retry never repeats an `enc` (which the collector would call a replay).
 */
import { bodyLines } from './cmcd.js';
import { KeyCache, SealUnavailable } from './keys.js';
import { SEALED_CONTENT_TYPE, sealReport } from './seal.js';

export const PLAIN_CONTENT_TYPE = 'application/cmcd';
export const PLAYERS = ['hls.js', 'shaka', 'dash.js', 'video.js', 'html5'];
const STOP_STATUSES = new Set([401, 403, 404, 410]);
const KEEPALIVE_LIMIT = 60000; // browsers allow 64 KiB of keepalive bodies in flight per page
let keepaliveBytes = 0; // this page's keepalive bodies in flight, all senders together
const STALE_KEY_PROBLEMS = new Set(['key_id', 'ciphertext']);

/** The report URL for an embed key: `{collector}/v1/r/{embedKey}?player=…`. */
export function reportUrl(collector, embedKey, player) {
  const base = collector.replace(/\/+$/, '');
  return `${base}/v1/r/${encodeURIComponent(embedKey)}?player=${encodeURIComponent(player)}`;
}

/** Seconds (or an HTTP date) from Retry-After as milliseconds, or null. */
export function retryAfterMs(header, now = Date.now()) {
  if (!header) return null;
  if (/^\s*\d+\s*$/.test(header)) return Number(header) * 1000;
  const date = Date.parse(header);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Sender {
  /**
   * @param {object} options
   * @param {string} options.collector  collector origin, e.g. "https://stats.example.com"
   * @param {string} options.embedKey   the account's public embed key
   * @param {string} [options.player]   one of PLAYERS (the `player` dimension)
   * @param {'auto'|'always'|'never'} [options.seal]  auto: seal unless the browser can't
   */
  constructor({
    collector,
    embedKey,
    player = 'html5',
    seal = 'auto',
    fetch = globalThis.fetch.bind(globalThis),
    keys,
    maxRetries = 4,
    baseDelayMs = 1000,
    maxDelayMs = 30000,
    random = Math.random,
    wait = sleep,
    now = Date.now,
  }) {
    this.url = reportUrl(collector, embedKey, player);
    this.seal = seal;
    this.fetch = fetch;
    this.keys =
      keys ?? new KeyCache({ url: `${collector.replace(/\/+$/, '')}/v1/keys`, fetch, now });
    this.maxRetries = maxRetries;
    this.baseDelayMs = baseDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.random = random;
    this.wait = wait;
    this.now = now;
    this.stopped = false;
    this.pausedUntil = 0;
  }

  /** Fetch the keys ahead of the first report (errors are retried when sending). */
  warm() {
    if (this.seal !== 'never') this.keys.get().catch(() => {});
  }

  /**
   * Send one CMCD body (one or more "\n"-terminated lines). Resolves to the final HTTP
   * status: 2xx sent, 400/413 dropped, 401/403/404/410 stopped, 429/5xx or 0 gave up.
   */
  async send(body) {
    if (this.stopped) return 410;
    let status = 0;
    let refetched = false;
    for (let attempt = 0; attempt <= this.maxRetries; attempt += 1) {
      await this.waitForPause();
      if (this.stopped) return 410;
      let response = null;
      let sealed = false;
      try {
        ({ response, sealed } = await this.post(body));
      } catch (error) {
        if (error instanceof SealUnavailable) return 0; // seal 'always' and cannot seal
      }
      status = response?.status ?? 0;
      if (status >= 200 && status < 300) return status;
      if (status === 422) return status; // an earlier attempt of this body got through
      if (STOP_STATUSES.has(status)) {
        this.stopped = true;
        return status;
      }
      if (status === 413) return this.split(body);
      if (status === 400) {
        if (!refetched && sealed && (await isStaleKey(response))) {
          refetched = true;
          this.keys.invalidate();
          attempt -= 1; // a key refresh is not a retry
          continue;
        }
        return status;
      }
      if (status !== 0 && status !== 429 && status < 500) return status; // 415 and the like
      if (attempt === this.maxRetries) break;
      const hinted = retryAfterMs(response?.headers?.get('Retry-After'), this.now());
      const delay = hinted ?? this.backoffMs(attempt);
      if (status === 429) this.pausedUntil = Math.max(this.pausedUntil, this.now() + delay);
      else await this.wait(delay);
    }
    return status;
  }

  /** Exponential backoff with jitter: uniformly in [d/2, d], d = base * 2^attempt (capped). */
  backoffMs(attempt) {
    const ceiling = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** attempt);
    return ceiling / 2 + (this.random() * ceiling) / 2;
  }

  async waitForPause() {
    const remaining = this.pausedUntil - this.now();
    if (remaining > 0) await this.wait(remaining);
  }

  async split(body) {
    const lines = bodyLines(body);
    if (lines.length < 2) return 413; // one event too large: drop it
    const half = Math.ceil(lines.length / 2);
    const first = await this.send(lines.slice(0, half).join(''));
    if (this.stopped) return first;
    const second = await this.send(lines.slice(half).join(''));
    return first >= 200 && first < 300 ? second : first;
  }

  async post(body) {
    let payload = body;
    let type = PLAIN_CONTENT_TYPE;
    if (this.seal !== 'never') {
      try {
        payload = await sealReport(await this.keys.get(), body);
        type = SEALED_CONTENT_TYPE;
      } catch (error) {
        if (!(error instanceof SealUnavailable) || this.seal === 'always') throw error;
      }
    }
    const size = typeof payload === 'string' ? new Blob([payload]).size : payload.byteLength;
    // Past the budget a keepalive fetch fails at once: such a report goes without keepalive.
    const keepalive = keepaliveBytes + size <= KEEPALIVE_LIMIT;
    if (keepalive) keepaliveBytes += size;
    try {
      const response = await this.fetch(this.url, {
        method: 'POST',
        headers: { 'Content-Type': type },
        body: payload,
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
        keepalive,
      });
      return { response, sealed: type === SEALED_CONTENT_TYPE };
    } finally {
      if (keepalive) keepaliveBytes -= size;
    }
  }
}

async function isStaleKey(response) {
  try {
    const problem = await response.json();
    return STALE_KEY_PROBLEMS.has(problem?.key) || /unknown key_id/.test(problem?.detail ?? '');
  } catch {
    return false;
  }
}
