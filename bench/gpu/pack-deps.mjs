// Packs the node_modules a GPU device run needs (and nothing else) into one tarball, for
// bench/gpu/prepare-carry.sh: the runtime dependencies of the compiled API
// (@huggingface/tokenizers, node-gyp-build), the addon's build dependencies (node-addon-api,
// node-api-headers, cmake-js) and everything they depend on, resolved the way Node resolves
// them (nested node_modules first, then hoisted). Not vitest, tsx or typescript: the device run
// uses TypeScript compiled here (bench/gpu/tsconfig.device.json).
//
//   node bench/gpu/pack-deps.mjs OUT.tar.xz [extra-package ...]
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const [out, ...extra] = process.argv.slice(2);
if (!out) {
  console.error('usage: node bench/gpu/pack-deps.mjs OUT.tar.xz [extra-package ...]');
  process.exit(2);
}
const roots = ['@huggingface/tokenizers', 'node-gyp-build', 'node-addon-api', 'node-api-headers', 'cmake-js', ...extra];

/** The directory of package `name` as Node would resolve it from `fromDir`, or null. */
function locate(name, fromDir) {
  for (let d = fromDir; ; d = dirname(d)) {
    const p = join(d, 'node_modules', name);
    if (existsSync(join(p, 'package.json'))) return p;
    if (d === root || dirname(d) === d) return null;
  }
}

const seen = new Set();
const missing = [];
const queue = roots.map((name) => ({ name, from: root, optional: false }));
while (queue.length) {
  const { name, from, optional } = queue.shift();
  const dir = locate(name, from);
  if (!dir) {
    if (!optional) missing.push(`${name} (needed from ${relative(root, from) || '.'})`);
    continue;
  }
  if (seen.has(dir)) continue;
  seen.add(dir);
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  for (const d of Object.keys(pkg.dependencies ?? {})) queue.push({ name: d, from: dir, optional: false });
  for (const d of Object.keys(pkg.optionalDependencies ?? {})) queue.push({ name: d, from: dir, optional: true });
}
if (missing.length) {
  console.error(`pack-deps: not installed: ${missing.join(', ')} (run npm install first)`);
  process.exit(1);
}
// A package nested inside another one we already take travels with it.
const dirs = [...seen].sort().filter((d, _, all) => !all.some((o) => o !== d && d.startsWith(o + '/')));
const rel = dirs.map((d) => relative(root, d));
let bytes = 0;
const du = (p) => {
  const s = statSync(p);
  if (!s.isDirectory()) return s.size;
  return Number(execFileSync('du', ['-sb', p], { encoding: 'utf8' }).split('\t')[0]);
};
for (const d of dirs) bytes += du(d);
execFileSync('tar', ['-cJf', resolve(out), '-C', root, '--exclude=*.md', '--exclude=*.map', ...rel], { env: { ...process.env, XZ_OPT: '-6 -T0' } });
console.log(`pack-deps: ${rel.length} packages, ${(bytes / 1048576).toFixed(1)} MiB unpacked -> ${out} (${(statSync(out).size / 1048576).toFixed(1)} MiB)`);
