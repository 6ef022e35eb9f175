import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CMCD_KEYS, CmcdReporter } from '@svta/cml-cmcd';
import { hlsjsCmcd } from '../src/hlsjs.js';
import { KEYS } from '../src/targets.js';
import { fakeCollector, keyConfig, keyPair, ohttpKeys } from './helpers.js';

const pair = await keyPair();

function config(answers = [], options = { flushInterval: 0 }) {
  const collector = fakeCollector({
    keys: ohttpKeys(keyConfig(3, pair.publicBytes)),
    answers,
    privateKey: pair.privateKey,
  });
  const cmcd = hlsjsCmcd({
    collector: 'https://stats.example',
    embedKey: 'pk_demo',
    contentId: 'stream-42',
    fetch: collector.fetch,
    wait: async () => {},
    maxRetries: 1,
    ...options,
  });
  return { cmcd, calls: collector.calls };
}

/** A CmcdReporter built exactly as hls.js 1.7.4's CMCDController.createReporter builds it. */
function hlsReporter(cmcd) {
  return new CmcdReporter(
    {
      sid: cmcd.sessionId || 'f4804fb9-2fbc-4f21-abea-e74bec0ba6e1',
      cid: cmcd.contentId,
      version: cmcd.version,
      transmissionMode: 'query',
      enabledKeys: cmcd.includeKeys ?? [...CMCD_KEYS],
      eventTargets: (cmcd.eventTargets ?? []).map(({ includeKeys, ...rest }) => ({
        ...rest,
        enabledKeys: includeKeys ?? CMCD_KEYS,
      })),
    },
    cmcd.loader,
  );
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

/** Wait until `done()` holds (sealing happens on WebCrypto's own schedule). */
async function until(done, timeoutMs = 2000) {
  const end = Date.now() + timeoutMs;
  while (!done() && Date.now() < end) await settle();
}

describe('hls.js integration', () => {
  it('returns a CMCD v2 config with one event target at the collector', () => {
    const { cmcd } = config();
    assert.equal(cmcd.version, 2);
    assert.equal(cmcd.contentId, 'stream-42');
    assert.deepEqual(cmcd.includeKeys, []); // no request-mode CMCD (sid) to the CDN
    assert.equal(cmcd.eventTargets.length, 1);
    const [target] = cmcd.eventTargets;
    assert.equal(target.url, 'https://stats.example/v1/r/pk_demo?player=hls.js');
    assert.deepEqual(target.events, ['ps', 't', 'e', 'bc', 'pr']);
    assert.deepEqual(target.includeKeys, KEYS);
    assert.equal(typeof cmcd.loader, 'function');
  });

  it('hls.js\'s reporter sends sealed events through the loader, a task\'s events in one report', async () => {
    const { cmcd, calls } = config();
    const reporter = hlsReporter(cmcd);
    reporter.update({ sta: 'd', sf: 'h' });
    reporter.update({ sta: 'p' });
    reporter.recordEvent('bc', { br: [1461] });
    reporter.recordEvent('e', { ec: ['manifestLoadError'] });
    await until(() => calls.posts.length >= 1);
    await settle();
    reporter.stop();
    assert.equal(calls.posts.length, 1);
    assert.ok(calls.posts[0].sealed);
    const lines = calls.posts[0].body.split(/(?<=\n)/);
    assert.equal(lines.length, 4);
    assert.match(lines[0], /^cid="stream-42",e=ps,sf=h,sid="f4804fb9-[^"]+",sn=0,sta=d,ts=\d+,v=2\n$/);
    assert.match(lines[1], /e=ps,.*sn=1,sta=p,/);
    assert.match(lines[2], /^br=\(1461\),cid="stream-42",e=bc,/);
    assert.match(lines[3], /ec=\("manifestLoadError"\)/);
  });

  it('queues hls.js\'s events for flushInterval seconds, then sends them in one report', async () => {
    const timers = [];
    const { cmcd, calls } = config([], {
      flushInterval: 5,
      setTimeout: (fn, ms) => timers.push({ fn, ms }),
      clearTimeout: () => {},
    });
    const reporter = hlsReporter(cmcd);
    reporter.update({ sta: 's', sf: 'h' });
    await settle();
    reporter.update({ sta: 'p' });
    reporter.recordEvent('t');
    await settle();
    assert.equal(calls.posts.length, 0);
    assert.deepEqual(timers.map((t) => t.ms), [5000]); // one timer, from the first event
    timers[0].fn();
    await until(() => calls.posts.length >= 1);
    reporter.stop();
    assert.equal(calls.posts.length, 1);
    assert.deepEqual(calls.posts[0].body.match(/sn=\d+/g), ['sn=0', 'sn=1', 'sn=2']);
  });

  it('a 410 ends hls.js\'s target: nothing more is sent', async () => {
    const { cmcd, calls } = config([410]);
    const reporter = hlsReporter(cmcd);
    reporter.update({ sta: 's' });
    await until(() => calls.posts.length >= 1);
    await settle(); // hls.js handles the 410 after the loader resolves
    reporter.update({ sta: 'p' });
    reporter.recordEvent('bc', { br: [1461] });
    await settle();
    reporter.stop();
    assert.equal(calls.posts.length, 1);
  });

  it('after bounded retries fail, hls.js keeps the events and re-sends them with the next', async () => {
    const { cmcd, calls } = config([503, 503, 204]);
    const reporter = hlsReporter(cmcd);
    reporter.update({ sta: 's' });
    await until(() => calls.posts.length >= 2);
    await settle();
    reporter.update({ sta: 'p' });
    await until(() => calls.posts.length >= 3);
    await settle();
    reporter.stop();
    const bodies = calls.posts.map((post) => post.body);
    assert.equal(bodies.length, 3); // sn=0 twice (503, 503), then sn=0 again with sn=1
    assert.equal(bodies[0], bodies[1]);
    assert.equal(bodies[2].split(/(?<=\n)/)[0], bodies[0]);
    assert.match(bodies[2], /\n.*sn=1,sta=p,.*\n$/);
  });

  it('passes reports for other targets on unchanged', async () => {
    const forwarded = [];
    const { cmcd } = config();
    const { hlsjsLoader } = await import('../src/hlsjs.js');
    const loader = hlsjsLoader({ url: cmcd.eventTargets[0].url }, async (url, init) => {
      forwarded.push([url, init.body]);
      return { status: 204 };
    });
    assert.deepEqual(await loader({ url: 'https://other/x', body: 'e=t\n' }), { status: 204 });
    assert.deepEqual(forwarded, [['https://other/x', 'e=t\n']]);
  });
});
