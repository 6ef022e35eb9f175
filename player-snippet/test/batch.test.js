import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Batcher } from '../src/batch.js';
import { Sender } from '../src/sender.js';
import { fakeCollector, keyConfig, keyPair, ohttpKeys } from './helpers.js';

const pair = await keyPair();

/** A window stand-in: `pagehide` on it, `visibilitychange` on its document. */
function fakePage() {
  const page = new EventTarget();
  page.document = new EventTarget();
  page.document.visibilityState = 'visible';
  page.hide = () => {
    page.document.visibilityState = 'hidden';
    page.document.dispatchEvent(new Event('visibilitychange'));
  };
  page.show = () => {
    page.document.visibilityState = 'visible';
    page.document.dispatchEvent(new Event('visibilitychange'));
  };
  page.leave = () => page.dispatchEvent(new Event('pagehide'));
  return page;
}

/** A Batcher over a recording sender, with timers the test fires itself. */
function setup(options = {}, status = 204) {
  const sent = [];
  const timers = [];
  const page = fakePage();
  const sender = { url: 'https://stats.example/v1/r/pk', send: async (body) => (sent.push(body), status) };
  const batch = new Batcher(sender, {
    setTimeout: (fn, ms) => timers.push({ fn, ms, cleared: false }) - 1,
    clearTimeout: (id) => {
      if (id !== null && timers[id]) timers[id].cleared = true;
    },
    page,
    ...options,
  });
  const armed = () => timers.filter((t) => !t.cleared);
  return { batch, sent, timers, armed, page };
}

const line = (sn, extra = '') => `e=t,sid="s",sn=${sn},sta=p,ts=${1000 + sn}${extra},v=2\n`;
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('the snippet\'s report queue', () => {
  it('holds events until flushInterval after the first, then sends them as one report', async () => {
    const { batch, sent, timers, armed } = setup({ flushInterval: 5 });
    batch.add(line(0));
    batch.add(line(1));
    batch.add(line(2));
    await settle();
    assert.deepEqual(sent, []);
    assert.deepEqual(timers.map((t) => t.ms), [5000]); // one timer, armed by the first event
    armed()[0].fn();
    assert.deepEqual(sent, [line(0) + line(1) + line(2)]);
    batch.add(line(3));
    assert.equal(timers.length, 2); // the next batch has its own timer
    assert.equal(armed().length, 1);
  });

  it('sends at once when batchSize events are queued', async () => {
    const { batch, sent, armed } = setup({ batchSize: 3, flushInterval: 60 });
    for (let sn = 0; sn < 7; sn += 1) batch.add(line(sn));
    assert.deepEqual(sent, [line(0) + line(1) + line(2), line(3) + line(4) + line(5)]);
    assert.equal(armed().length, 1); // the 7th waits for its timer
  });

  it('sends at once when the queued lines reach batchBytes', () => {
    const { batch, sent } = setup({ batchBytes: 2 * line(0).length, flushInterval: 60 });
    batch.add(line(0));
    assert.equal(sent.length, 0);
    batch.add(line(1));
    assert.equal(sent.length, 1);
  });

  it('resolves every queued body with the status of the report that carried it', async () => {
    const { batch, armed } = setup({}, 429);
    const statuses = Promise.all([batch.add(line(0)), batch.add(line(1) + line(2))]);
    armed()[0].fn();
    assert.deepEqual(await statuses, [429, 429]);
  });

  it('sends the end of playback and a fatal error with the rest of their task, not later', async () => {
    for (const [last, count] of [['sta=e', 2], ['sta=f', 3]]) {
      const { batch, sent, armed } = setup({ flushInterval: 60 });
      batch.add(line(0));
      batch.add(`e=ps,sid="s",sn=1,${last},ts=1001,v=2\n`);
      if (last === 'sta=f') batch.add('e=e,ec=("x"),sid="s",sn=2,sta=f,ts=1001,v=2\n'); // same task
      assert.equal(sent.length, 0);
      await settle();
      assert.equal(sent.length, 1, last);
      assert.equal(sent[0].split('\n').length - 1, count);
      assert.equal(armed().length, 0); // the timer went with the report
    }
  });

  it('flushInterval 0: the events of one task go out together, in a microtask', async () => {
    const { batch, sent, timers } = setup({ flushInterval: 0 });
    batch.add(line(0));
    batch.add(line(1));
    await settle();
    batch.add(line(2));
    await settle();
    assert.deepEqual(sent, [line(0) + line(1), line(2)]);
    assert.equal(timers.length, 0);
  });

  it('sends at once when the page is hidden or left, not when it is shown', async () => {
    const { batch, sent, page } = setup({ flushInterval: 60 });
    batch.add(line(0));
    page.show();
    assert.equal(sent.length, 0);
    page.hide();
    assert.deepEqual(sent, [line(0)]);
    batch.add(line(1));
    page.leave();
    assert.deepEqual(sent, [line(0), line(1)]);
    page.leave(); // nothing queued: no empty report
    assert.equal(sent.length, 2);
  });

  it('destroy sends what is queued and stops watching the page', async () => {
    const { batch, sent, page } = setup({ flushInterval: 60 });
    batch.add(line(0));
    await batch.destroy();
    assert.deepEqual(sent, [line(0)]);
    batch.add(line(1));
    page.leave();
    assert.equal(sent.length, 1);
  });

  it('a page left mid-batch sends its sealed report with keepalive', async () => {
    const collector = fakeCollector({
      keys: ohttpKeys(keyConfig(1, pair.publicBytes)),
      privateKey: pair.privateKey,
    });
    const sender = new Sender({ collector: 'https://stats.example', embedKey: 'pk', fetch: collector.fetch });
    const page = fakePage();
    const batch = new Batcher(sender, { flushInterval: 60, page });
    const statuses = Promise.all([batch.add(line(0)), batch.add(line(1))]);
    page.leave();
    assert.deepEqual(await statuses, [204, 204]);
    assert.equal(collector.calls.posts.length, 1);
    const [post] = collector.calls.posts;
    assert.equal(post.sealed, true);
    assert.equal(post.init.keepalive, true);
    assert.equal(post.body, line(0) + line(1));
  });
});

describe('the keepalive budget', () => {
  it('keeps the page\'s keepalive bodies in flight under 64 KiB: past it, no keepalive', async () => {
    const inits = [];
    const answers = [];
    const fetch = (url, init) => {
      inits.push(init);
      return new Promise((resolve) => answers.push(() => resolve(new Response(null, { status: 204 }))));
    };
    const sender = new Sender({ collector: 'https://stats.example', embedKey: 'pk', seal: 'never', fetch });
    const big = line(0).repeat(500); // 17,500 B each
    const sends = [sender.send(big), sender.send(big), sender.send(big), sender.send(big)];
    await settle();
    assert.deepEqual(inits.map((init) => init.keepalive), [true, true, true, false]);
    answers.forEach((answer) => answer());
    await Promise.all(sends);
    sender.send(big); // the budget is free again
    await settle();
    assert.equal(inits.at(-1).keepalive, true);
    answers.at(-1)();
  });
});
