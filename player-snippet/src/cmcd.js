/**
 * CMCD v2 event-mode serialisation: one RFC 8941 dictionary per event, keys sorted
 * alphabetically (as hls.js and Shaka send them), each line ending in "\n".
 */

/** Keys whose string values are RFC 8941 tokens, not quoted strings. */
const TOKEN_KEYS = new Set(['e', 'ot', 'sf', 'st', 'sta']);
const TOKEN = /^[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*$/;
const KEY = /^[a-z*][a-z0-9_\-.*]*$/;

/** An RFC 8941 sf-string: printable ASCII only, `\` and `"` escaped. */
export function sfString(value) {
  const printable = String(value).replace(/[^\x20-\x7e]/g, '?');
  return `"${printable.replace(/[\\"]/g, '\\$&')}"`;
}

/** An RFC 8941 integer, or a decimal with at most three fractional digits. */
export function sfNumber(value) {
  if (!Number.isFinite(value)) throw new RangeError('CMCD numbers must be finite');
  if (Number.isInteger(value)) return String(value);
  const fixed = value.toFixed(3).replace(/0+$/, '');
  return fixed.endsWith('.') ? `${fixed}0` : fixed;
}

function bareItem(value, token) {
  if (typeof value === 'number') return sfNumber(value);
  if (typeof value === 'boolean') return value ? '?1' : '?0';
  const text = String(value);
  return token && TOKEN.test(text) ? text : sfString(text);
}

function member(key, value) {
  if (value === true) return key;
  if (Array.isArray(value)) {
    return `${key}=(${value.map((item) => bareItem(item, false)).join(' ')})`;
  }
  return `${key}=${bareItem(value, TOKEN_KEYS.has(key))}`;
}

/** Serialise one event object (`{e: 'ps', sta: 'p', br: [1461], ...}`) to one line, no "\n". */
export function encodeEvent(event) {
  const parts = [];
  for (const key of Object.keys(event).sort()) {
    const value = event[key];
    if (value === undefined || value === null || Number.isNaN(value)) continue;
    if (!KEY.test(key)) throw new RangeError(`invalid CMCD key ${JSON.stringify(key)}`);
    parts.push(member(key, value));
  }
  return parts.join(',');
}

/** Serialise a batch of events to a CMCD v2 event-mode body (`application/cmcd`). */
export function encodeBody(events) {
  return events.map((event) => `${encodeEvent(event)}\n`).join('');
}

/** Split a body into its lines (each keeping its "\n"), for re-batching on 413. */
export function bodyLines(body) {
  return body.split('\n').filter((line) => line !== '').map((line) => `${line}\n`);
}
