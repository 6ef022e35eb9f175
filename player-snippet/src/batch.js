/**
 * The snippet's report queue. CMCD lines wait here and go out together as one report (one
 * HPKE seal, so one open at the collector): when `batchSize` events are queued, when they
 * reach `batchBytes`, `flushInterval` seconds after the first of them, in the same task's
 * microtask after a playback's end or fatal error (`sta=e`, `sta=f`), and at once when the
 * page is hidden or left (`visibilitychange` to hidden, `pagehide`): the Sender posts with
 * `keepalive`, so the browser delivers the report after the page is gone.
 *
 * The players' own CMCD batching (CML's CmcdReporter in hls.js and Shaka: `batchSize` per
 * target) counts events only, has no timer and is not flushed when the page goes: their
 * targets keep `batchSize: 1` and hand every event to this queue (README.md).
 */
import { bodyLines } from './cmcd.js';

export const FLUSH_INTERVAL_S = 5;
export const BATCH_SIZE = 30;
export const BATCH_BYTES = 16384; // a quarter of the browsers' 64 KiB keepalive budget
const FINAL = /(^|,)sta=[ef](,|$)/;

export class Batcher {
  /**
   * @param {{url: string, send: (body: string) => Promise<number>}} sender
   * @param {object} [options]
   * @param {number} [options.batchSize]  events per report at most (sent when reached)
   * @param {number} [options.flushInterval]  seconds a queued event waits at most (0: none,
   *   the events of one task go out together)
   * @param {number} [options.batchBytes]  characters per report before it is sent
   */
  constructor(
    sender,
    {
      batchSize = BATCH_SIZE,
      flushInterval = FLUSH_INTERVAL_S,
      batchBytes = BATCH_BYTES,
      setTimeout: later = globalThis.setTimeout.bind(globalThis),
      clearTimeout: cancel = globalThis.clearTimeout.bind(globalThis),
      page = globalThis,
    } = {},
  ) {
    this.sender = sender;
    this.url = sender.url;
    this.batchSize = Math.max(1, batchSize);
    this.flushMs = flushInterval * 1000;
    this.batchBytes = batchBytes;
    this.later = later;
    this.cancel = cancel;
    this.page = page;
    this.lines = [];
    this.bytes = 0;
    this.waiting = [];
    this.timer = null;
    this.soon = false;
    this.onHide = (event) => {
      if (event.type === 'pagehide' || page.document?.visibilityState === 'hidden') this.flush();
    };
    page.addEventListener?.('pagehide', this.onHide);
    page.document?.addEventListener?.('visibilitychange', this.onHide);
  }

  /** Queue a body's lines; resolves to the final status of the report that carries them. */
  add(body) {
    const lines = bodyLines(body);
    return new Promise((resolve) => {
      this.lines.push(...lines);
      for (const line of lines) this.bytes += line.length;
      this.waiting.push(resolve);
      if (this.lines.length >= this.batchSize || this.bytes >= this.batchBytes) {
        this.flush();
      } else if (this.flushMs <= 0 || lines.some((line) => FINAL.test(line))) {
        if (!this.soon) queueMicrotask(() => this.soon && this.flush());
        this.soon = true;
      } else if (this.timer === null) {
        this.timer = this.later(() => this.flush(), this.flushMs);
      }
    });
  }

  /** Send what is queued now; resolves to the report's final status (0: nothing queued). */
  flush() {
    if (this.timer !== null) this.cancel(this.timer);
    this.timer = null;
    this.soon = false;
    const { lines, waiting } = this;
    this.lines = [];
    this.bytes = 0;
    this.waiting = [];
    if (lines.length === 0) {
      for (const resolve of waiting) resolve(0);
      return Promise.resolve(0);
    }
    const sent = this.sender.send(lines.join(''));
    sent.then((status) => waiting.forEach((resolve) => resolve(status)));
    return sent;
  }

  /** Stop watching the page and send what is queued. */
  destroy() {
    this.page.removeEventListener?.('pagehide', this.onHide);
    this.page.document?.removeEventListener?.('visibilitychange', this.onHide);
    return this.flush();
  }
}
