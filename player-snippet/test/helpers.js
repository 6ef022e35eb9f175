/** Test helpers: a real collector key pair, its ohttp-keys body, and a scripted fake fetch. */
import { Aes128Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from '@hpke/core';

export const suite = new CipherSuite({
  kem: new DhkemX25519HkdfSha256(),
  kdf: new HkdfSha256(),
  aead: new Aes128Gcm(),
});

/** A fresh X25519 key pair and its raw public key bytes. */
export async function keyPair() {
  const pair = await suite.kem.generateKeyPair();
  const publicKey = new Uint8Array(await suite.kem.serializePublicKey(pair.publicKey));
  return { ...pair, publicBytes: publicKey };
}

/** One RFC 9458 key config (without its length prefix). */
export function keyConfig(keyId, publicBytes, suites = [[1, 1]], kemId = 0x0020) {
  const out = [keyId, kemId >> 8, kemId & 0xff, ...publicBytes];
  const sym = suites.length * 4;
  out.push(sym >> 8, sym & 0xff);
  for (const [kdf, aead] of suites) out.push(kdf >> 8, kdf & 0xff, aead >> 8, aead & 0xff);
  return out;
}

/** An application/ohttp-keys body from key configs. */
export function ohttpKeys(...configs) {
  const out = [];
  for (const config of configs) out.push(config.length >> 8, config.length & 0xff, ...config);
  return new Uint8Array(out);
}

/** Open a sealed frame with a private key (what the collector does). */
export async function openFrame(frame, privateKey) {
  const hdr = frame.slice(0, 7);
  const info = new Uint8Array([...new TextEncoder().encode('streamtally/1 cmcd'), 0, ...hdr]);
  const plaintext = await suite.open(
    { recipientKey: privateKey, enc: frame.slice(7, 39), info },
    frame.slice(39),
  );
  return new TextDecoder().decode(plaintext);
}

/**
 * A fake fetch: GET /v1/keys answers `keys` (bytes) with `cacheControl`; POSTs take the next
 * answer from `answers` (a status, `{status, headers, body}`, or 'network' to throw) and
 * are recorded in `posts` as `{url, init, body}` (body opened when `privateKey` is given).
 */
export function fakeCollector({ keys, cacheControl = 'max-age=60', answers = [], privateKey }) {
  const calls = { keys: 0, posts: [] };
  const fetch = async (url, init = {}) => {
    if (url.endsWith('/v1/keys')) {
      calls.keys += 1;
      calls.keysInit = init;
      if (keys === undefined) return new Response(null, { status: 404 });
      return new Response(keys, {
        status: 200,
        headers: { 'Content-Type': 'application/ohttp-keys', 'Cache-Control': cacheControl },
      });
    }
    const sealed = init.headers['Content-Type'] === 'application/vnd.streamtally.sealed';
    const body =
      sealed && privateKey ? await openFrame(init.body, privateKey) : init.body;
    calls.posts.push({ url, init, body, sealed });
    const answer = answers.length ? answers.shift() : 204;
    if (answer === 'network') throw new TypeError('Failed to fetch');
    const { status, headers = {}, body: answerBody = null } =
      typeof answer === 'number' ? { status: answer } : answer;
    return new Response(status === 204 ? null : answerBody, { status, headers });
  };
  return { fetch, calls };
}

/** A `wait` that records delays and returns at once. */
export function recordingWait() {
  const waits = [];
  const wait = async (ms) => {
    waits.push(ms);
  };
  return { wait, waits };
}
