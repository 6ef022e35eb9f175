// Copies uPlot's minified build, its style sheet and its licence from node_modules into
// aggregator/api/static/vendor/, where aggregator/api/dashboard.py serves them (and the wheel
// packages them): the dashboard loads nothing from other sites. The copies are committed,
// so `pip install` needs no npm; tests/run.sh rebuilds them and
// tests/integration/test_dashboard.py checks the committed copies match the pinned version.
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const from = join(here, 'node_modules', 'uplot');
const to = join(here, '..', 'static', 'vendor');
mkdirSync(to, { recursive: true });
const files = [
  ['dist/uPlot.iife.min.js', 'uPlot.iife.min.js'],
  ['dist/uPlot.min.css', 'uPlot.min.css'],
  ['LICENSE', 'uPlot.LICENSE.txt'],
];
for (const [source, target] of files) copyFileSync(join(from, source), join(to, target));
const { version } = JSON.parse(readFileSync(join(from, 'package.json'), 'utf8'));
console.log(`uPlot ${version} copied to ${to}`);
