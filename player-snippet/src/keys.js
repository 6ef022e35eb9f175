/**
 * The collector's HPKE public keys: `GET {collector}/v1/keys` in RFC 9458
 * `application/ohttp-keys` format, cached for the response's Cache-Control max-age.
 */

export const KEM_X25519 = 0x0020;
export const KDF_HKDF_SHA256 = 0x0001;
export const AEAD_AES_128_GCM = 0x0001;
const NPK_X25519 = 32;
const DEFAULT_MAX_AGE_S = 300;
// A failed fetch is not repeated sooner: players report in bursts, and each report would
// otherwise ask again. Short enough that a send's first retry (>= 500 ms) tries afresh.
const FAILURE_HOLD_MS = 500;
// A collector that serves no usable key is asked again after this long.
const UNAVAILABLE_HOLD_MS = 60000;

/** Keys cannot be used: the collector serves none we can use, or the browser can't seal. */
export class SealUnavailable extends Error {}

/**
 * Parse an `application/ohttp-keys` body: 2-byte-length-prefixed key configs
 * (key_id(1) kem_id(2) public_key(Npk) sym_len(2) (kdf_id(2) aead_id(2))*).
 * Configs with a KEM other than X25519 are returned with `publicKey: null`.
 */
export function parseOhttpKeys(bytes) {
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const configs = [];
  let at = 0;
  while (at < data.length) {
    if (at + 2 > data.length) throw new SyntaxError('ohttp-keys: truncated length');
    const length = view.getUint16(at);
    const start = at + 2;
    const end = start + length;
    if (end > data.length || length < 3) throw new SyntaxError('ohttp-keys: truncated config');
    const keyId = data[start];
    const kemId = view.getUint16(start + 1);
    const config = { keyId, kemId, publicKey: null, suites: [] };
    if (kemId === KEM_X25519) {
      let p = start + 3;
      if (p + NPK_X25519 + 2 > end) throw new SyntaxError('ohttp-keys: truncated public key');
      config.publicKey = data.slice(p, p + NPK_X25519);
      p += NPK_X25519;
      const symLength = view.getUint16(p);
      p += 2;
      if (symLength % 4 !== 0 || p + symLength !== end) {
        throw new SyntaxError('ohttp-keys: bad symmetric algorithms length');
      }
      for (; p < end; p += 4) {
        config.suites.push({ kdfId: view.getUint16(p), aeadId: view.getUint16(p + 2) });
      }
    }
    configs.push(config);
    at = end;
  }
  return configs;
}

/** The first config StreamTally's one suite can use, or null. */
export function usableConfig(configs) {
  return (
    configs.find(
      (c) =>
        c.kemId === KEM_X25519 &&
        c.publicKey !== null &&
        c.suites.some((s) => s.kdfId === KDF_HKDF_SHA256 && s.aeadId === AEAD_AES_128_GCM),
    ) ?? null
  );
}

/** Seconds from a Cache-Control header's max-age (0 for no-store/no-cache). */
export function maxAgeSeconds(cacheControl) {
  if (!cacheControl) return DEFAULT_MAX_AGE_S;
  if (/(^|,)\s*no-(store|cache)\b/i.test(cacheControl)) return 0;
  const match = /(?:^|,)\s*max-age\s*=\s*"?(\d+)/i.exec(cacheControl);
  return match ? Number(match[1]) : DEFAULT_MAX_AGE_S;
}

/** Fetches and caches the collector's key config; one request in flight at a time. */
export class KeyCache {
  constructor({ url, fetch = globalThis.fetch, now = Date.now }) {
    this.url = url;
    this.fetch = fetch;
    this.now = now;
    this.cached = null;
    this.expires = 0;
    this.pending = null;
    this.failure = null; // {error, until}: the last failed fetch, not repeated before `until`
  }

  /** The usable key config, fetched when the cached one has expired. */
  get() {
    if (this.cached && this.now() < this.expires) return Promise.resolve(this.cached);
    if (this.failure && this.now() < this.failure.until) return Promise.reject(this.failure.error);
    this.pending ??= this.load()
      .then(
        (config) => {
          this.failure = null;
          return config;
        },
        (error) => {
          const hold = error instanceof SealUnavailable ? UNAVAILABLE_HOLD_MS : FAILURE_HOLD_MS;
          this.failure = { error, until: this.now() + hold };
          throw error;
        },
      )
      .finally(() => {
        this.pending = null;
      });
    return this.pending;
  }

  /** Forget the cached keys (the collector did not know our key_id). */
  invalidate() {
    this.cached = null;
    this.expires = 0;
    this.failure = null;
  }

  async load() {
    const response = await this.fetch(this.url, {
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
    if (response.status === 404) throw new SealUnavailable('collector serves no keys');
    if (!response.ok) throw new Error(`GET /v1/keys answered ${response.status}`);
    const config = usableConfig(parseOhttpKeys(await response.arrayBuffer()));
    if (!config) throw new SealUnavailable('no X25519/HKDF-SHA256/AES-128-GCM key');
    this.cached = config;
    this.expires = this.now() + maxAgeSeconds(response.headers.get('Cache-Control')) * 1000;
    return config;
  }
}
