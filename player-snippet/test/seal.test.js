import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { frameHeader, sealInfo, sealReport } from '../src/seal.js';
import { keyPair, openFrame } from './helpers.js';

describe('sealed frame', () => {
  it('header is key_id, kem 0x0020, kdf 0x0001, aead 0x0001', () => {
    assert.deepEqual([...frameHeader(0xab)], [0xab, 0x00, 0x20, 0x00, 0x01, 0x00, 0x01]);
  });

  it('info is the ASCII label, a zero byte, then the header', () => {
    const hdr = frameHeader(3);
    const expected = [...Buffer.from('streamtally/1 cmcd', 'ascii'), 0, ...hdr];
    assert.deepEqual([...sealInfo(hdr)], expected);
  });

  it('is hdr || enc (32) || ciphertext (plaintext + 16-byte tag) and opens to the body', async () => {
    const pair = await keyPair();
    const body = 'cid="stream-42",e=ps,sid="abc",sn=1,sta=s,ts=1795480329608,v=2\n';
    const frame = await sealReport({ keyId: 5, publicKey: pair.publicBytes }, body);
    assert.deepEqual([...frame.slice(0, 7)], [...frameHeader(5)]);
    assert.equal(frame.length, 7 + 32 + Buffer.byteLength(body) + 16);
    assert.equal(await openFrame(frame, pair.privateKey), body);
  });

  it('uses a fresh enc every time, so a re-sent body is never a replay', async () => {
    const pair = await keyPair();
    const key = { keyId: 1, publicKey: pair.publicBytes };
    const a = await sealReport(key, 'e=t\n');
    const b = await sealReport(key, 'e=t\n');
    assert.notDeepEqual(a.slice(7, 39), b.slice(7, 39));
  });

  it('cannot be opened with a header changed in transit', async () => {
    const pair = await keyPair();
    const frame = await sealReport({ keyId: 1, publicKey: pair.publicBytes }, 'e=t\n');
    frame[0] = 2;
    await assert.rejects(openFrame(frame, pair.privateKey));
  });
});
