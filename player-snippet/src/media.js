/**
 * Generic adapter for a media element (`<video>`, and so Video.js, dash.js or any player built
 * on one): turns media element events into CMCD v2 events (`ps` with `sta`, interval `t`,
 * `e` errors, `bc` bitrate changes, `pr` playback rate) and sends them sealed.
 */
import { Batcher } from './batch.js';
import { encodeBody } from './cmcd.js';
import { INTERVAL_S } from './targets.js';
import { Sender } from './sender.js';

/** CMCD v2 player states (`sta` tokens). */
export const State = Object.freeze({
  STARTING: 's',
  PLAYING: 'p',
  SEEKING: 'k',
  REBUFFERING: 'r',
  PAUSED: 'a',
  ENDED: 'e',
  FATAL: 'f',
  PRELOADING: 'd',
});

const MEDIA_ERRORS = ['', 'MEDIA_ERR_ABORTED', 'MEDIA_ERR_NETWORK', 'MEDIA_ERR_DECODE', 'MEDIA_ERR_SRC_NOT_SUPPORTED'];
const LISTENED = [
  'play', 'playing', 'waiting', 'pause', 'seeking', 'seeked', 'ended', 'error', 'ratechange',
  'loadstart',
];

/** Milliseconds of media buffered ahead of the playhead. */
export function bufferAheadMs(media) {
  const { buffered, currentTime } = media;
  for (let i = 0; i < (buffered?.length ?? 0); i += 1) {
    if (buffered.start(i) <= currentTime + 0.1 && currentTime < buffered.end(i)) {
      return Math.round((buffered.end(i) - currentTime) * 1000);
    }
  }
  return 0;
}

/**
 * Report a media element's playback to StreamTally.
 *
 * @param {HTMLMediaElement|EventTarget} media
 * @param {object} options
 * @param {string} options.collector  collector origin
 * @param {string} options.embedKey   the account's public embed key
 * @param {string} [options.contentId]  stream name (CMCD `cid`)
 * @param {string} [options.player]   'html5' (default), 'video.js', 'dash.js', …
 * @param {number} [options.interval] seconds between `t` events (0: none)
 * @param {() => number|undefined} [options.bitrate]  current video bitrate in kbps, if known
 * @param {number} [options.batchSize]  events per report at most
 * @param {number} [options.flushInterval]  seconds an event waits at most before it is sent
 *   (the end of playback, an error, a hidden or closed page send at once; batch.js)
 * @param {boolean} [options.mediaErrors]  report the element's own `error` events (default);
 *   false when the player reports its errors through `tracker.error(code)` (Video.js, dash.js),
 *   so that each failure has one code, the player's
 * @returns {MediaTracker}
 */
export function trackMedia(media, options) {
  return new MediaTracker(media, options);
}

export class MediaTracker {
  constructor(
    media,
    {
      contentId,
      player = 'html5',
      interval = INTERVAL_S,
      bitrate,
      mediaErrors = true,
      sender,
      now = Date.now,
      randomUUID = () => globalThis.crypto.randomUUID(),
      setInterval: every = globalThis.setInterval.bind(globalThis),
      clearInterval: stopEvery = globalThis.clearInterval.bind(globalThis),
      batchSize,
      flushInterval,
      setTimeout,
      clearTimeout,
      page,
      ...senderOptions
    },
  ) {
    this.media = media;
    this.contentId = contentId;
    this.bitrate = bitrate;
    this.mediaErrors = mediaErrors;
    this.now = now;
    this.randomUUID = randomUUID;
    this.stopEvery = stopEvery;
    this.sender = sender ?? new Sender({ player, ...senderOptions });
    this.sender.warm();
    const batch = { batchSize, flushInterval, setTimeout, clearTimeout, page };
    this.queue = new Batcher(this.sender, batch);
    this.newSession();
    this.onEvent = (event) => this.handle(event.type);
    for (const type of LISTENED) media.addEventListener(type, this.onEvent);
    this.timer = interval > 0 ? every(() => this.tick(), interval * 1000) : null;
    if (media.autoplay || !media.paused) this.setState(State.STARTING);
    else this.setState(State.PRELOADING);
  }

  /** Start a new playback session: a fresh random sid (memory only), sn from 0. */
  newSession() {
    this.sid = this.randomUUID();
    this.sn = 0;
    this.started = false;
    this.startAt = null;
    this.state = null;
    this.lastBitrate = undefined;
  }

  handle(type) {
    const media = this.media;
    switch (type) {
      case 'loadstart':
        if (this.sn > 0 && this.state !== State.STARTING && this.state !== State.PRELOADING) {
          this.newSession(); // a new source on the same element is a new playback
          this.setState(media.autoplay ? State.STARTING : State.PRELOADING);
        }
        break;
      case 'play':
        if (!this.started) this.setState(State.STARTING);
        break;
      case 'playing': {
        const first = !this.started;
        this.started = true;
        const msd = first && this.startAt !== null ? this.now() - this.startAt : undefined;
        this.setState(State.PLAYING, { msd });
        break;
      }
      case 'waiting':
        if (this.started && !media.seeking) this.setState(State.REBUFFERING);
        break;
      case 'pause':
        if (!media.ended) this.setState(State.PAUSED);
        break;
      case 'seeking':
        if (this.started) this.setState(State.SEEKING);
        break;
      case 'seeked':
        if (this.started && media.paused) this.setState(State.PAUSED);
        break;
      case 'ended':
        this.setState(State.ENDED);
        break;
      case 'error':
        if (this.mediaErrors) this.error(MEDIA_ERRORS[media.error?.code ?? 0] || 'MEDIA_ERR_UNKNOWN');
        break;
      case 'ratechange':
        this.record('pr', { pr: media.playbackRate });
        break;
      default:
        break;
    }
  }

  /**
   * Report a fatal error, e.g. from the player's API: `sta=f`, then an `e` event with `ec`
   * (hls.js's order; the collector takes the code that comes with or after `sta=f`).
   */
  error(code) {
    this.setState(State.FATAL);
    this.record('e', { ec: [String(code)] });
  }

  /** The interval `t` event, while there is a playback to report (not after `e` or `f`). */
  tick() {
    if (this.state !== State.ENDED && this.state !== State.FATAL) this.record('t');
  }

  /** Report the current video bitrate in kbps (sends `bc` when it changes). */
  setBitrate(kbps) {
    if (!Number.isFinite(kbps) || kbps <= 0) return;
    const rounded = Math.round(kbps);
    if (rounded === this.lastBitrate) return;
    this.lastBitrate = rounded;
    this.record('bc', { br: [rounded] });
  }

  setState(sta, extra = {}) {
    if (sta === State.STARTING) this.startAt ??= this.now(); // startup time runs from here
    if (sta === this.state) return;
    this.state = sta;
    this.record('ps', extra);
  }

  /** Queue one CMCD event (batch.js decides when it goes out). */
  record(e, extra = {}) {
    if (e === 't' && this.bitrate) this.setBitrate(this.bitrate());
    const media = this.media;
    const event = {
      e,
      ts: this.now(),
      v: 2,
      sid: this.sid,
      cid: this.contentId,
      sn: this.sn,
      sta: this.state ?? undefined,
      br: this.lastBitrate === undefined ? undefined : [this.lastBitrate],
      bl: media.buffered ? [bufferAheadMs(media)] : undefined,
      pt: Number.isFinite(media.currentTime) ? Math.round(media.currentTime * 1000) : undefined,
      ...extra,
    };
    this.sn += 1;
    this.queue.add(encodeBody([event]));
  }

  /** Send queued events now. */
  flush() {
    return this.queue.flush();
  }

  /** Stop listening and send what is queued. */
  destroy() {
    for (const type of LISTENED) this.media.removeEventListener(type, this.onEvent);
    if (this.timer !== null) this.stopEvery(this.timer);
    return this.queue.destroy();
  }
}
