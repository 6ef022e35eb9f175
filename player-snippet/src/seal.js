/**
 * Sealed reports (design.md "The wire protocol"): HPKE base mode, DHKEM(X25519,
 * HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM from @hpke/core over WebCrypto, framed as
 * hdr || enc || ciphertext with info = "streamtally/1 cmcd" || 0x00 || hdr and empty AAD.
 */
import { Aes128Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from '@hpke/core';
import { AEAD_AES_128_GCM, KDF_HKDF_SHA256, KEM_X25519, SealUnavailable } from './keys.js';

export const SEALED_CONTENT_TYPE = 'application/vnd.streamtally.sealed';
export const INFO_LABEL = 'streamtally/1 cmcd';
const encoder = new TextEncoder();

let suite = null;

/** The 7-byte frame header: key_id || kem_id || kdf_id || aead_id (big-endian). */
export function frameHeader(keyId) {
  const hdr = new Uint8Array(7);
  const view = new DataView(hdr.buffer);
  hdr[0] = keyId;
  view.setUint16(1, KEM_X25519);
  view.setUint16(3, KDF_HKDF_SHA256);
  view.setUint16(5, AEAD_AES_128_GCM);
  return hdr;
}

/** HPKE info: the ASCII label, a zero byte, then the frame header. */
export function sealInfo(hdr) {
  const label = encoder.encode(INFO_LABEL);
  const info = new Uint8Array(label.length + 1 + hdr.length);
  info.set(label);
  info.set(hdr, label.length + 1);
  return info;
}

/** Seal a CMCD payload (string or bytes) to a key config from `KeyCache`: hdr || enc || ct. */
export async function sealReport(config, payload) {
  const plaintext = typeof payload === 'string' ? encoder.encode(payload) : payload;
  const hdr = frameHeader(config.keyId);
  let sealed;
  try {
    suite ??= new CipherSuite({
      kem: new DhkemX25519HkdfSha256(),
      kdf: new HkdfSha256(),
      aead: new Aes128Gcm(),
    });
    const recipientPublicKey = await suite.kem.importKey('raw', config.publicKey, true);
    sealed = await suite.seal({ recipientPublicKey, info: sealInfo(hdr) }, plaintext);
  } catch (error) {
    // No WebCrypto X25519 (older browsers) or no secure context.
    throw new SealUnavailable(`cannot seal: ${error?.name ?? 'error'}`);
  }
  const enc = new Uint8Array(sealed.enc);
  const ct = new Uint8Array(sealed.ct);
  const frame = new Uint8Array(hdr.length + enc.length + ct.length);
  frame.set(hdr);
  frame.set(enc, hdr.length);
  frame.set(ct, hdr.length + enc.length);
  return frame;
}
