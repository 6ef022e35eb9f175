import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import { retryAfterMs, reportUrl, Sender } from '../src/sender.js';
import { fakeCollector, keyConfig, keyPair, ohttpKeys, recordingWait } from './helpers.js';

const BODY = 'cid="s",e=ps,sid="abc",sn=1,sta=p,ts=100,v=2\n';
let pair;

beforeEach(async () => {
  pair ??= await keyPair();
});

function setup({ answers = [], seal = 'auto', keys, ...options } = {}) {
  const collector = fakeCollector({
    keys: keys === undefined ? ohttpKeys(keyConfig(7, pair.publicBytes)) : keys ?? undefined,
    answers,
    privateKey: pair.privateKey,
  });
  const { wait, waits } = recordingWait();
  let now = 0;
  const sender = new Sender({
    collector: 'https://stats.example/',
    embedKey: 'pk_demo',
    player: 'hls.js',
    seal,
    fetch: collector.fetch,
    wait: async (ms) => {
      await wait(ms);
      now += ms;
    },
    now: () => now,
    random: () => 0.5,
    ...options,
  });
  return { sender, calls: collector.calls, waits };
}

describe('Sender', () => {
  it('posts the sealed body to /v1/r/{key}?player=… without cookies', async () => {
    const { sender, calls } = setup();
    assert.equal(await sender.send(BODY), 204);
    const [post] = calls.posts;
    assert.equal(post.url, 'https://stats.example/v1/r/pk_demo?player=hls.js');
    assert.equal(post.init.method, 'POST');
    assert.equal(post.init.credentials, 'omit');
    assert.equal(post.init.keepalive, true);
    assert.equal(post.init.referrerPolicy, 'no-referrer');
    assert.equal(post.init.headers['Content-Type'], 'application/vnd.streamtally.sealed');
    assert.equal(post.init.body[0], 7); // key_id of the fetched key
    assert.equal(post.body, BODY);
  });

  it('sends plain application/cmcd when sealing is off', async () => {
    const { sender, calls } = setup({ seal: 'never' });
    await sender.send(BODY);
    assert.equal(calls.posts[0].init.headers['Content-Type'], 'application/cmcd');
    assert.equal(calls.posts[0].init.body, BODY);
    assert.equal(calls.keys, 0);
  });

  it('falls back to plain in auto mode when the collector serves no keys', async () => {
    const { sender, calls } = setup({ keys: null });
    assert.equal(await sender.send(BODY), 204);
    assert.equal(calls.posts[0].init.headers['Content-Type'], 'application/cmcd');
  });

  it('sends nothing in always mode when it cannot seal', async () => {
    const { sender, calls } = setup({ keys: null, seal: 'always' });
    assert.equal(await sender.send(BODY), 0);
    assert.equal(calls.posts.length, 0);
  });

  it('stops for the session after 410', async () => {
    const { sender, calls } = setup({ answers: [410] });
    assert.equal(await sender.send(BODY), 410);
    assert.equal(await sender.send(BODY), 410);
    assert.equal(calls.posts.length, 1);
    assert.equal(sender.stopped, true);
  });

  for (const status of [401, 403, 404]) {
    it(`stops after ${status} (the embed key or origin will not work this session)`, async () => {
      const { sender, calls } = setup({ answers: [status] });
      await sender.send(BODY);
      await sender.send(BODY);
      assert.equal(calls.posts.length, 1);
    });
  }

  it('waits Retry-After on 429, then re-sends the same events sealed afresh', async () => {
    const { sender, calls, waits } = setup({
      answers: [{ status: 429, headers: { 'Retry-After': '7' } }, 204],
    });
    assert.equal(await sender.send(BODY), 204);
    assert.deepEqual(waits, [7000]);
    assert.equal(calls.posts.length, 2);
    assert.equal(calls.posts[1].body, calls.posts[0].body);
    assert.notDeepEqual(calls.posts[0].init.body.slice(7, 39), calls.posts[1].init.body.slice(7, 39));
  });

  it('holds other reports back while rate limited', async () => {
    const { sender, waits } = setup({
      answers: [{ status: 429, headers: { 'Retry-After': '5' } }, 204, 204],
    });
    await sender.send(BODY);
    sender.pausedUntil = sender.now() + 3000; // as if another 429 just arrived
    await sender.send(BODY);
    assert.deepEqual(waits, [5000, 3000]);
  });

  it('retries 5xx and network errors with exponential backoff, bounded', async () => {
    const { sender, calls, waits } = setup({
      answers: [503, 'network', 500, 502, 504, 204],
      maxRetries: 4,
      baseDelayMs: 1000,
    });
    assert.equal(await sender.send(BODY), 504);
    assert.equal(calls.posts.length, 5);
    // random() = 0.5: each delay is 3/4 of the doubling ceiling
    assert.deepEqual(waits, [750, 1500, 3000, 6000]);
    assert.ok(calls.posts.every((post) => post.body === BODY));
  });

  it('honours Retry-After on 503', async () => {
    const { sender, waits } = setup({
      answers: [{ status: 503, headers: { 'Retry-After': '2' } }, 204],
    });
    assert.equal(await sender.send(BODY), 204);
    assert.deepEqual(waits, [2000]);
  });

  it('keeps the backoff under its cap', () => {
    const { sender } = setup({ maxDelayMs: 30000, random: () => 1 });
    assert.equal(sender.backoffMs(20), 30000);
    const low = setup({ maxDelayMs: 30000, random: () => 0 }).sender;
    assert.equal(low.backoffMs(20), 15000);
  });

  it('does not retry a 400 problem', async () => {
    const problem = JSON.stringify({ status: 400, detail: 'line 1: key ts', key: 'ts' });
    const { sender, calls } = setup({ answers: [{ status: 400, body: problem }] });
    assert.equal(await sender.send(BODY), 400);
    assert.equal(calls.posts.length, 1);
  });

  it('refetches the keys once when the collector does not know the key_id', async () => {
    const problem = JSON.stringify({ status: 400, detail: 'unknown key_id 7: fetch /v1/keys again', key: 'key_id' });
    const { sender, calls } = setup({
      answers: [{ status: 400, body: problem }, { status: 400, body: problem }],
    });
    assert.equal(await sender.send(BODY), 400);
    assert.equal(calls.keys, 2);
    assert.equal(calls.posts.length, 2);
  });

  it('splits a batch on 413 and sends both halves', async () => {
    const lines = [0, 1, 2, 3, 4].map((sn) => `e=t,sid="a",sn=${sn},ts=1,v=2\n`);
    const { sender, calls } = setup({ answers: [413, 204, 413, 204, 204] });
    assert.equal(await sender.send(lines.join('')), 204);
    assert.deepEqual(
      calls.posts.map((post) => post.body),
      [lines.join(''), lines.slice(0, 3).join(''), lines.slice(3).join(''), lines[3], lines[4]],
    );
  });

  it('drops a single event that is too large', async () => {
    const { sender, calls } = setup({ answers: [413] });
    assert.equal(await sender.send(BODY), 413);
    assert.equal(calls.posts.length, 1);
  });
});

describe('helpers', () => {
  it('reportUrl escapes the embed key and names the player', () => {
    assert.equal(reportUrl('https://c.example//', 'a/b', 'video.js'), 'https://c.example/v1/r/a%2Fb?player=video.js');
  });

  it('retryAfterMs reads seconds and HTTP dates', () => {
    assert.equal(retryAfterMs('12'), 12000);
    assert.equal(retryAfterMs('Thu, 01 Jan 1970 00:00:10 GMT', 4000), 6000);
    assert.equal(retryAfterMs('soon'), null);
    assert.equal(retryAfterMs(null), null);
  });
});
