// Bundles the console (src/) into dist/, which the quarry binary embeds. The output depends
// only on the sources and the versions in package-lock.json, so CI can rebuild it and
// fail when the committed dist/ is stale.
import { build } from 'esbuild';
import { readFileSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { basename } from 'node:path';

const dist = new URL('./dist/', import.meta.url).pathname;
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

const result = await build({
  entryPoints: ['src/main.js'],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome110', 'firefox115', 'safari16'],
  outdir: dist,
  entryNames: 'app-[hash]',
  assetNames: '[name]-[hash]',
  legalComments: 'linked',
  metafile: true,
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs).map((p) => basename(p));
const script = outputs.find((f) => f.endsWith('.js'));
const style = outputs.find((f) => f.endsWith('.css'));
const page = readFileSync('src/index.html', 'utf8')
  .replace('%SCRIPT%', `/assets/${script}`)
  .replace('%STYLE%', `/assets/${style}`);
writeFileSync(`${dist}index.html`, page);
const sizes = outputs.map((f) => `${f} ${readFileSync(dist + f).length} bytes`);
console.log(['index.html', ...sizes].join('\n'));
