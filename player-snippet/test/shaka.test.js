import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { shakaCmcd, shakaError } from '../src/shaka.js';
import { fakeCollector, keyConfig, keyPair, ohttpKeys } from './helpers.js';

const pair = await keyPair();

/** The parts of the `shaka` namespace the integration uses. */
function fakeShaka() {
  const schemes = new Map();
  return {
    schemes,
    net: { NetworkingEngine: { registerScheme: (name, plugin) => schemes.set(name, plugin) } },
    util: {
      AbortableOperation: class {
        constructor(promise, onAbort) {
          this.promise = promise;
          this.abort = onAbort;
        }
      },
    },
  };
}

describe('Shaka integration', () => {
  it('configures a CMCD v2 event target behind the streamtally: scheme', () => {
    const shaka = fakeShaka();
    const cmcd = shakaCmcd(shaka, {
      collector: 'https://stats.example',
      embedKey: 'pk_demo',
      contentId: 'stream-42',
      fetch: fakeCollector({}).fetch,
    });
    assert.equal(cmcd.enabled, true);
    assert.equal(cmcd.version, 2);
    assert.equal(cmcd.contentId, 'stream-42');
    const [target] = cmcd.eventTargets;
    assert.equal(target.enabled, true);
    assert.equal(target.url, 'streamtally:https://stats.example/v1/r/pk_demo?player=shaka');
    assert.ok(target.events.includes('ps'));
    assert.equal(typeof shaka.schemes.get('streamtally'), 'function');
  });

  it('the scheme plugin seals Shaka\'s request body and answers like an HTTP response', async () => {
    const shaka = fakeShaka();
    const collector = fakeCollector({
      keys: ohttpKeys(keyConfig(2, pair.publicBytes)),
      answers: [204, 410],
      privateKey: pair.privateKey,
    });
    const cmcd = shakaCmcd(shaka, {
      collector: 'https://stats.example',
      embedKey: 'pk_shaka',
      fetch: collector.fetch,
      flushInterval: 0,
    });
    const plugin = shaka.schemes.get('streamtally');
    const body = 'cid="c",e=ps,sid="s",sn=0,sta=p,ts=5,v=2\n';
    // Shaka's requester: StringUtils.toUTF8(body) → ArrayBuffer, headers lower-cased.
    const request = { body: new TextEncoder().encode(body).buffer, headers: { 'content-type': 'application/cmcd' } };
    const operation = plugin(cmcd.eventTargets[0].url, request);
    const response = await operation.promise;
    assert.equal(response.status, 204);
    assert.equal(response.originalRequest, request);
    assert.equal(collector.calls.posts[0].url, 'https://stats.example/v1/r/pk_shaka?player=shaka');
    assert.equal(collector.calls.posts[0].sealed, true);
    assert.equal(collector.calls.posts[0].body, body);
    assert.equal((await plugin(cmcd.eventTargets[0].url, request).promise).status, 410);
    assert.equal((await plugin(cmcd.eventTargets[0].url, request).promise).status, 410);
    assert.equal(collector.calls.posts.length, 2); // stopped after 410
  });

  it('reports a fatal Shaka error with its code, in Shaka\'s session, once', async () => {
    // Shaka 5.2 tells its CMCD reporter nothing when load() fails, and its own `e` event has
    // no `ec`: the e2e test saw a failed load reported as one `t` without state.
    const shaka = fakeShaka();
    const collector = fakeCollector({ keys: ohttpKeys(keyConfig(2, pair.publicBytes)), answers: [204, 204] });
    const cmcd = shakaCmcd(shaka, {
      collector: 'https://stats.example',
      embedKey: 'pk_shaka',
      contentId: 'stream-42',
      seal: 'never',
      fetch: collector.fetch,
      randomUUID: () => 'sid-1',
    });
    assert.equal(cmcd.sessionId, 'sid-1'); // Shaka's session id is the snippet's
    assert.equal(await shakaError(cmcd, { code: 1000, severity: 1 }), 0); // recoverable: not fatal
    assert.equal(await shakaError(cmcd, { code: 1001, severity: 2 }, () => 5000), 204);
    assert.equal(await shakaError(cmcd, { code: 1002, severity: 2 }), 0); // once per session
    assert.equal(collector.calls.posts.length, 1);
    assert.equal(
      collector.calls.posts[0].body,
      'cid="stream-42",e=ps,sid="sid-1",sta=f,ts=5000,v=2\n' +
        'cid="stream-42",e=e,ec=("1001"),sid="sid-1",sta=f,ts=5000,v=2\n',
    );
    assert.equal(await shakaError({}, { code: 1001, severity: 2 }), 0); // not a shakaCmcd config
  });

  it('queues Shaka\'s events and sends them with its fatal error in one report', async () => {
    const shaka = fakeShaka();
    const collector = fakeCollector({ keys: ohttpKeys(keyConfig(2, pair.publicBytes)) });
    const timers = [];
    const cmcd = shakaCmcd(shaka, {
      collector: 'https://stats.example',
      embedKey: 'pk_shaka_batch',
      contentId: 'stream-42',
      seal: 'never',
      fetch: collector.fetch,
      randomUUID: () => 'sid-2',
      flushInterval: 5,
      setTimeout: (fn, ms) => timers.push(ms),
      clearTimeout: () => {},
    });
    const plugin = shaka.schemes.get('streamtally');
    const line = 'cid="stream-42",e=t,sid="sid-2",sn=0,ts=4000,v=2\n';
    const request = { body: new TextEncoder().encode(line).buffer, headers: {} };
    const answered = plugin(cmcd.eventTargets[0].url, request).promise;
    assert.equal(cmcd.eventTargets[0].batchSize, 1); // Shaka hands over every event at once
    assert.deepEqual(timers, [5000]);
    assert.equal(collector.calls.posts.length, 0);
    assert.equal(await shakaError(cmcd, { code: 1001, severity: 2 }, () => 5000), 204);
    assert.equal((await answered).status, 204);
    assert.equal(collector.calls.posts.length, 1);
    assert.equal(collector.calls.posts[0].body.split('\n').length - 1, 3);
  });
});
