// Builds and runs the native C++ tests (test/native/test-*.cc) against the engine sources,
// without Node or N-API: `npm run test:native`. Uses $CXX (default g++) with -O2 and
// $NATIVE_TEST_FLAGS. A test test-NAME.cc also links its case files NAME-*.cc.
// Arguments: test names (e.g. test-backend-ops) to build only those; --no-run to only build.
// $NATIVE_TEST_OUT: where the executables go (default test/native/build).
// A test whose source has a line `// run-with: NEUROTAP_CPU=a,b,...` runs once per value (an empty
// value: unset), so each instruction-set path the cap selects is exercised.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const out = resolve(process.env.NATIVE_TEST_OUT || join(here, 'build'));
mkdirSync(out, { recursive: true });
const args = process.argv.slice(2);
const noRun = args.includes('--no-run');
const only = args.filter((a) => !a.startsWith('--')).map((a) => a.replace(/\.cc$/, ''));
const engine = ['engine', 'io', 'ops'].flatMap((d) =>
  readdirSync(join(root, 'native', d)).filter((f) => f.endsWith('.cc')).map((f) => join(root, 'native', d, f)),
);
const cxx = process.env.CXX || 'g++';
const extra = (process.env.NATIVE_TEST_FLAGS || '').split(' ').filter(Boolean);
const files = readdirSync(here);
let failed = 0;
for (const test of files.filter((f) => /^test-.*\.cc$/.test(f))) {
  const name = test.replace(/\.cc$/, '');
  if (only.length && !only.includes(name)) continue;
  const exe = join(out, name);
  const parts = files.filter((f) => f.startsWith(`${name.slice('test-'.length)}-`) && f.endsWith('.cc')).map((f) => join(here, f));
  execFileSync(cxx, ['-std=c++17', '-O2', '-Wall', '-Wno-uninitialized', '-Wno-format-zero-length', ...extra, '-I', join(root, 'native'), join(here, test), ...parts, ...engine, '-o', exe, '-lpthread', '-ldl'], { stdio: 'inherit' });
  if (noRun) continue;
  const matrix = /^\/\/ run-with: NEUROTAP_CPU=(.*)$/m.exec(readFileSync(join(here, test), 'utf8'));
  for (const cap of matrix ? matrix[1].split(',').map((v) => v.trim()) : [null]) {
    const env = { ...process.env };
    if (cap !== null) {
      delete env.NEUROTAP_CPU;
      if (cap) env.NEUROTAP_CPU = cap;
      console.log(`${name}: NEUROTAP_CPU=${cap}`);
    }
    try {
      execFileSync(exe, { stdio: 'inherit', env });
    } catch {
      failed++;
    }
  }
}
process.exit(failed ? 1 : 0);
