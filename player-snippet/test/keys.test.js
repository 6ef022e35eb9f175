import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KeyCache, maxAgeSeconds, parseOhttpKeys, SealUnavailable, usableConfig } from '../src/keys.js';
import { fakeCollector, keyConfig, ohttpKeys } from './helpers.js';

const PK = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
const PK2 = Uint8Array.from({ length: 32 }, (_, i) => 200 - i);

describe('application/ohttp-keys parsing', () => {
  it('reads key id, KEM, public key and suites of each config', () => {
    const configs = parseOhttpKeys(ohttpKeys(keyConfig(7, PK), keyConfig(6, PK2, [[1, 2], [1, 1]])));
    assert.equal(configs.length, 2);
    assert.deepEqual(configs[0], {
      keyId: 7, kemId: 0x20, publicKey: PK, suites: [{ kdfId: 1, aeadId: 1 }],
    });
    assert.equal(configs[1].keyId, 6);
    assert.deepEqual(configs[1].publicKey, PK2);
    assert.deepEqual(configs[1].suites, [{ kdfId: 1, aeadId: 2 }, { kdfId: 1, aeadId: 1 }]);
  });

  it('skips configs with another KEM by their length', () => {
    const p256 = [3, 0x00, 0x10, ...new Uint8Array(65), 0, 4, 0, 1, 0, 1];
    const configs = parseOhttpKeys(ohttpKeys(p256, keyConfig(9, PK)));
    assert.equal(configs[0].publicKey, null);
    assert.equal(usableConfig(configs).keyId, 9);
  });

  it('picks the first config with StreamTally\'s suite', () => {
    const configs = parseOhttpKeys(ohttpKeys(keyConfig(1, PK, [[1, 2]]), keyConfig(2, PK2)));
    assert.equal(usableConfig(configs).keyId, 2);
    assert.equal(usableConfig(parseOhttpKeys(ohttpKeys(keyConfig(1, PK, [[2, 1]])))), null);
  });

  for (const [name, bytes] of [
    ['a truncated length', new Uint8Array([0])],
    ['a truncated config', ohttpKeys(keyConfig(1, PK)).slice(0, 20)],
    ['a bad suites length', ohttpKeys([1, 0, 0x20, ...PK, 0, 3, 0, 1, 0])],
  ]) {
    it(`rejects ${name}`, () => {
      assert.throws(() => parseOhttpKeys(bytes), SyntaxError);
    });
  }
});

describe('Cache-Control max-age', () => {
  for (const [header, seconds] of [
    ['public, max-age=3600', 3600],
    ['max-age=0', 0],
    ['no-store', 0],
    [null, 300],
    ['public', 300],
  ]) {
    it(`${header} -> ${seconds}s`, () => {
      assert.equal(maxAgeSeconds(header), seconds);
    });
  }
});

describe('KeyCache', () => {
  it('fetches once and serves from cache until max-age passes', async () => {
    let now = 1000;
    const { fetch, calls } = fakeCollector({ keys: ohttpKeys(keyConfig(4, PK)), cacheControl: 'max-age=60' });
    const cache = new KeyCache({ url: 'https://c/v1/keys', fetch, now: () => now });
    assert.equal((await cache.get()).keyId, 4);
    await cache.get();
    now += 59_000;
    await cache.get();
    assert.equal(calls.keys, 1);
    now += 2000;
    await cache.get();
    assert.equal(calls.keys, 2);
    assert.equal(calls.keysInit.credentials, 'omit');
  });

  it('shares one request between concurrent callers and refetches after invalidate', async () => {
    const { fetch, calls } = fakeCollector({ keys: ohttpKeys(keyConfig(4, PK)) });
    const cache = new KeyCache({ url: 'https://c/v1/keys', fetch });
    await Promise.all([cache.get(), cache.get(), cache.get()]);
    assert.equal(calls.keys, 1);
    cache.invalidate();
    await cache.get();
    assert.equal(calls.keys, 2);
  });

  it('does not repeat a failed fetch for a moment, then tries again', async () => {
    let now = 1000;
    let up = false;
    const keys = ohttpKeys(keyConfig(4, PK));
    const { fetch: serve } = fakeCollector({ keys });
    let tries = 0;
    const fetch = async (url, init) => {
      tries += 1;
      if (!up) throw new TypeError('Failed to fetch');
      return serve(url, init);
    };
    const cache = new KeyCache({ url: 'https://c/v1/keys', fetch, now: () => now });
    await assert.rejects(cache.get(), TypeError);
    await assert.rejects(cache.get(), TypeError);
    now += 499;
    await assert.rejects(cache.get(), TypeError);
    assert.equal(tries, 1);
    up = true;
    now += 1;
    assert.equal((await cache.get()).keyId, 4);
    assert.equal(tries, 2);
  });

  it('asks a collector without keys again only after a minute', async () => {
    let now = 1000;
    const { fetch, calls } = fakeCollector({ keys: undefined });
    const cache = new KeyCache({ url: 'https://c/v1/keys', fetch, now: () => now });
    await assert.rejects(cache.get(), SealUnavailable);
    now += 59_999;
    await assert.rejects(cache.get(), SealUnavailable);
    assert.equal(calls.keys, 1);
    now += 1;
    await assert.rejects(cache.get(), SealUnavailable);
    assert.equal(calls.keys, 2);
  });

  it('reports a collector without keys as SealUnavailable', async () => {
    const { fetch } = fakeCollector({ keys: undefined });
    await assert.rejects(new KeyCache({ url: 'https://c/v1/keys', fetch }).get(), SealUnavailable);
  });
});
