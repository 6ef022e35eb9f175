import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BUDGET_GZIP_BYTES, bundle, sizes } from '../scripts/bundle.js';

describe('browser bundle', () => {
  it(`is at most ${BUDGET_GZIP_BYTES} bytes minified and gzipped, HPKE included`, async () => {
    const code = await bundle();
    const { gzip } = sizes(code);
    assert.ok(gzip <= BUDGET_GZIP_BYTES, `bundle is ${gzip} bytes gzipped`);
    const text = new TextDecoder().decode(code);
    assert.match(text, /streamtally\/1 cmcd/);
    assert.doesNotMatch(text, /localStorage|sessionStorage|indexedDB|document\.cookie/);
  });
});
