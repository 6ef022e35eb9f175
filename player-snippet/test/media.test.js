import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bufferAheadMs, State, trackMedia } from '../src/media.js';

/** A media element stand-in: an EventTarget with the properties the adapter reads. */
class FakeMedia extends EventTarget {
  autoplay = false;
  paused = true;
  ended = false;
  seeking = false;
  currentTime = 0;
  playbackRate = 1;
  error = null;
  buffered = ranges([0, 12]);

  fire(type, changes = {}) {
    Object.assign(this, changes);
    this.dispatchEvent(new Event(type));
  }
}

function ranges(...spans) {
  return { length: spans.length, start: (i) => spans[i][0], end: (i) => spans[i][1] };
}

/** Parse the simple lines the adapter writes back into objects, for assertions. */
function parse(line) {
  const out = {};
  for (const part of line.split(',')) {
    const [key, value = 'true'] = part.split('=');
    out[key] = value.replace(/^"(.*)"$/, '$1');
  }
  return out;
}

function setup(options = {}) {
  const media = new FakeMedia();
  Object.assign(media, options.media ?? {});
  const bodies = [];
  let clock = 1000;
  const ticks = [];
  let uuid = 0;
  const tracker = trackMedia(media, {
    contentId: 'stream-42',
    sender: { send: async (body) => bodies.push(body), warm() {} },
    now: () => clock,
    randomUUID: () => `sid-${++uuid}`,
    setInterval: (fn, ms) => ticks.push({ fn, ms }),
    clearInterval: () => {},
    flushInterval: 0, // each task's events at once; batching: test/batch.test.js
    ...options.tracker,
  });
  const events = () => bodies.flatMap((b) => b.trimEnd().split('\n')).map(parse);
  const settle = () => new Promise((resolve) => setImmediate(resolve));
  return { media, tracker, events, settle, ticks, bodies, advance: (ms) => (clock += ms) };
}

describe('generic <video> adapter', () => {
  it('reports preloading, starting, playing with startup delay', async () => {
    const { media, events, settle, advance } = setup();
    media.fire('play', { paused: false });
    advance(420);
    media.fire('playing');
    await settle();
    const got = events();
    assert.deepEqual(got.map((e) => [e.e, e.sta]), [['ps', 'd'], ['ps', 's'], ['ps', 'p']]);
    assert.equal(got[2].msd, '420');
    assert.equal(got[1].msd, undefined);
    assert.deepEqual(got.map((e) => e.sn), ['0', '1', '2']);
    for (const event of got) {
      assert.equal(event.sid, 'sid-1');
      assert.equal(event.cid, 'stream-42');
      assert.equal(event.v, '2');
    }
  });

  it('starts in s for an autoplaying element and times startup from attaching', async () => {
    const { media, events, settle, advance } = setup({ media: { autoplay: true } });
    advance(300);
    media.fire('play', { paused: false }); // autoplay fires play just before playing
    advance(10);
    media.fire('playing');
    await settle();
    assert.deepEqual(events().map((e) => e.sta), [State.STARTING, State.PLAYING]);
    assert.equal(events()[1].msd, '310');
  });

  it('follows pause, seek, rebuffer and end', async () => {
    const { media, events, settle } = setup();
    media.fire('play', { paused: false });
    media.fire('playing');
    media.fire('pause', { paused: true });
    media.fire('seeking', { seeking: true });
    media.fire('waiting'); // waiting while seeking is not a rebuffer
    media.fire('seeked', { seeking: false });
    media.fire('play', { paused: false });
    media.fire('playing');
    media.fire('waiting');
    media.fire('playing');
    media.fire('pause', { paused: true, ended: true });
    media.fire('ended');
    await settle();
    assert.deepEqual(
      events().map((e) => e.sta).join(''),
      'dsp' + 'akap' + 'rp' + 'e',
    );
  });

  it('does not report a rebuffer or seek before playback started', async () => {
    const { media, events, settle } = setup();
    media.fire('waiting');
    media.fire('seeking', { seeking: true });
    await settle();
    assert.deepEqual(events().map((e) => e.sta), ['d']);
  });

  it('reports a media error as sta=f, then e with ec (hls.js order: the code counts)', async () => {
    const { media, events, settle } = setup();
    media.fire('error', { error: { code: 4 } });
    await settle();
    const [, fatal, error] = events();
    assert.equal(fatal.e, 'ps');
    assert.equal(fatal.sta, 'f');
    assert.equal(error.e, 'e');
    assert.equal(error.sta, 'f');
    assert.equal(error.ec, '("MEDIA_ERR_SRC_NOT_SUPPORTED")');
  });

  it('leaves errors to the player with mediaErrors: false (one code, the player\'s)', async () => {
    // Video.js fires its own error and the element's in either order: the e2e test saw
    // MEDIA_ERR_SRC_NOT_SUPPORTED counted in one run and vjs-4 in the next.
    const { media, tracker, events, settle } = setup({ tracker: { mediaErrors: false } });
    media.fire('error', { error: { code: 4 } });
    tracker.error('vjs-4');
    await settle();
    const codes = events().filter((e) => e.e === 'e').map((e) => e.ec);
    assert.deepEqual(codes, ['("vjs-4")']);
  });

  it('sends interval t events with buffer, playhead and bitrate', async () => {
    let kbps = 1461;
    const { media, events, settle, ticks } = setup({ tracker: { bitrate: () => kbps, interval: 5 } });
    assert.equal(ticks[0].ms, 5000);
    media.currentTime = 4.25;
    ticks[0].fn();
    kbps = 3000;
    ticks[0].fn();
    await settle();
    const got = events();
    assert.deepEqual(got.map((e) => e.e), ['ps', 'bc', 't', 'bc', 't']);
    assert.equal(got[1].br, '(1461)');
    assert.equal(got[2].pt, '4250');
    assert.equal(got[2].bl, '(7750)');
    assert.equal(got[4].br, '(3000)');
  });

  it('sends no t events once playback ended or failed, until a new source plays', async () => {
    // A page that stays open after the end would otherwise report every interval forever;
    // the e2e driver saw such a late report cut off by the page's close (status null).
    const { media, events, settle, ticks } = setup({ tracker: { interval: 2 } });
    media.fire('error', { error: { code: 4 } });
    ticks[0].fn();
    media.fire('ended', { ended: true });
    ticks[0].fn();
    await settle();
    assert.deepEqual(events().map((e) => e.e), ['ps', 'ps', 'e', 'ps']); // d, f, e(ec), e
    media.fire('loadstart', { ended: false });
    media.fire('play', { paused: false });
    ticks[0].fn();
    await settle();
    assert.equal(events().at(-1).e, 't');
  });

  it('reports playback rate changes', async () => {
    const { media, events, settle } = setup();
    media.fire('ratechange', { playbackRate: 1.5 });
    await settle();
    assert.equal(events()[1].e, 'pr');
    assert.equal(events()[1].pr, '1.5');
  });

  it('batches events of the same task into one report', async () => {
    const { media, settle, bodies } = setup();
    media.fire('play', { paused: false });
    media.fire('playing');
    await settle();
    assert.equal(bodies.length, 1);
    assert.equal(bodies[0].trimEnd().split('\n').length, 3); // d, s, p
  });

  it('starts a new session, sn from 0, when a new source loads after playback', async () => {
    const { media, events, settle } = setup();
    media.fire('loadstart');
    media.fire('play', { paused: false });
    media.fire('playing');
    media.fire('ended', { ended: true });
    media.fire('loadstart', { ended: false, paused: true });
    await settle();
    const got = events();
    assert.deepEqual(got.map((e) => e.sid), ['sid-1', 'sid-1', 'sid-1', 'sid-1', 'sid-2']);
    assert.equal(got.at(-1).sn, '0');
    assert.equal(got.at(-1).sta, 'd');
  });

  it('stops listening on destroy and flushes', async () => {
    const { media, events, settle, tracker } = setup();
    await tracker.destroy();
    media.fire('play', { paused: false });
    await settle();
    assert.equal(events().length, 1);
  });

  it('measures buffer ahead of the playhead', () => {
    assert.equal(bufferAheadMs({ currentTime: 3, buffered: ranges([0, 2], [2.95, 9.5]) }), 6500);
    assert.equal(bufferAheadMs({ currentTime: 20, buffered: ranges([0, 2]) }), 0);
  });
});
