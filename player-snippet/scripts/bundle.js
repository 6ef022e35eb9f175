/** Build the browser bundle (dist/streamtally.min.js) and measure it. */
import { build } from 'esbuild';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const OUTFILE = join(ROOT, 'dist', 'streamtally.min.js');
export const BUDGET_GZIP_BYTES = 12288;

/** The minified ESM bundle as bytes (not written). */
export async function bundle() {
  const result = await build({
    entryPoints: [join(ROOT, 'src', 'index.js')],
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['es2022'],
    platform: 'browser',
    legalComments: 'none',
    write: false,
  });
  return result.outputFiles[0].contents;
}

/** Minified and gzipped (level 9) sizes in bytes. */
export function sizes(code) {
  return { minified: code.byteLength, gzip: gzipSync(code, { level: 9 }).byteLength };
}

async function main(command) {
  const code = await bundle();
  if (command === 'build') {
    await mkdir(dirname(OUTFILE), { recursive: true });
    await writeFile(OUTFILE, code);
  }
  const { minified, gzip } = sizes(code);
  const verdict = gzip <= BUDGET_GZIP_BYTES ? 'within' : 'OVER';
  console.log(
    `streamtally.min.js: ${minified} bytes minified, ${gzip} bytes gzipped ` +
      `(${verdict} the ${BUDGET_GZIP_BYTES}-byte budget)`,
  );
  if (gzip > BUDGET_GZIP_BYTES) process.exitCode = 1;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main(process.argv[2] ?? 'size');
