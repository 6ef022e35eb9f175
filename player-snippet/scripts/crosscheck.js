/**
 * Command line for cross-language tests (tests/snippet/): runs the snippet's own code.
 *
 *   node scripts/crosscheck.js seal <ohttp-keys, base64>   stdin: CMCD body; stdout: frame, base64
 *   node scripts/crosscheck.js encode                       stdin: JSON list of events; stdout: body
 */
import { Buffer } from 'node:buffer';
import { text } from 'node:stream/consumers';
import { encodeBody } from '../src/cmcd.js';
import { parseOhttpKeys, usableConfig } from '../src/keys.js';
import { sealReport } from '../src/seal.js';

const [command, argument] = process.argv.slice(2);
const input = await text(process.stdin);
if (command === 'seal') {
  const config = usableConfig(parseOhttpKeys(Buffer.from(argument, 'base64')));
  if (!config) throw new Error('no usable key config');
  process.stdout.write(Buffer.from(await sealReport(config, input)).toString('base64'));
} else if (command === 'encode') {
  process.stdout.write(encodeBody(JSON.parse(input)));
} else {
  throw new Error(`unknown command ${command}`);
}
