import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeCmcd } from '@svta/cml-cmcd';
import { bodyLines, encodeBody, encodeEvent, sfNumber, sfString } from '../src/cmcd.js';

describe('CMCD v2 event serialisation', () => {
  it('sorts keys alphabetically like hls.js does', () => {
    const line = encodeEvent({
      v: 2, ts: 1795480329984, sta: 'p', sn: 4, sid: 'f4804fb9', e: 'ps', cid: 'stream-42',
      br: [1461], bl: [11900],
    });
    assert.equal(
      line,
      'bl=(11900),br=(1461),cid="stream-42",e=ps,sid="f4804fb9",sn=4,sta=p,ts=1795480329984,v=2',
    );
  });

  it('escapes quotes and backslashes in strings', () => {
    assert.equal(sfString('a"b\\c'), '"a\\"b\\\\c"');
    assert.equal(encodeEvent({ cid: 'say "hi" \\o/' }), 'cid="say \\"hi\\" \\\\o/"');
  });

  it('replaces characters RFC 8941 strings cannot carry', () => {
    assert.equal(sfString('caf\u00e9\n'), '"caf??"');
  });

  it('writes inner lists of numbers and of strings', () => {
    assert.equal(encodeEvent({ br: [1461, 3000] }), 'br=(1461 3000)');
    assert.equal(encodeEvent({ ec: ['manifestLoadError'] }), 'ec=("manifestLoadError")');
  });

  it('writes tokens bare for token keys and quotes other strings', () => {
    assert.equal(encodeEvent({ e: 'ps', sta: 'k', sf: 'h', st: 'v' }), 'e=ps,sf=h,st=v,sta=k');
    assert.equal(encodeEvent({ url: 'https://cdn/x.ts' }), 'url="https://cdn/x.ts"');
  });

  it('writes true as a bare key and false as ?0', () => {
    assert.equal(encodeEvent({ bs: true, su: false }), 'bs,su=?0');
  });

  it('drops undefined, null and NaN values', () => {
    assert.equal(encodeEvent({ e: 't', br: undefined, bl: null, pt: Number.NaN }), 'e=t');
  });

  it('writes decimals with at most three fractional digits', () => {
    assert.equal(sfNumber(1.5), '1.5');
    assert.equal(sfNumber(0.1234), '0.123');
    assert.equal(sfNumber(2.0001), '2.0');
    assert.throws(() => sfNumber(Infinity), RangeError);
  });

  it('refuses keys that are not RFC 8941 keys', () => {
    assert.throws(() => encodeEvent({ 'Bad Key': 1 }), /invalid CMCD key/);
  });

  it('ends every line of a body with \\n', () => {
    const body = encodeBody([{ e: 't', sn: 0 }, { e: 't', sn: 1 }]);
    assert.equal(body, 'e=t,sn=0\ne=t,sn=1\n');
    assert.deepEqual(bodyLines(body), ['e=t,sn=0\n', 'e=t,sn=1\n']);
  });

  const cases = [
    { e: 'ps', sta: 'p', ts: 1795480329984, sid: 'f4804fb9-2fbc', cid: 'stream-42', sn: 4, v: 2 },
    { e: 'e', ec: ['manifestLoadError'], sta: 'f', ts: 1, sid: 'x', sn: 9, v: 2 },
    { e: 'bc', br: [1461], bl: [11900], ts: 7, sid: 'a"b\\c', sn: 3, v: 2 },
    { e: 't', msd: 412, pt: 12000, ltc: 3000, ts: 7, sid: 's', cid: 'c', sn: 0, v: 2 },
    { e: 'pr', pr: 1.5, ts: 7, sid: 's', sn: 5, v: 2 },
  ];
  for (const event of cases) {
    it(`matches hls.js's own CMCD encoder for e=${event.e}`, () => {
      assert.equal(encodeEvent(event), encodeCmcd(event, { reportingMode: 'event' }));
    });
  }
});
