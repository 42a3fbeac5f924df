// Builds and runs the native C++ tests (test/native/test-*.cc) against the engine sources,
// without Node or N-API: `npm run test:native`. Uses $CXX (default g++) with -O2.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const out = join(here, 'build');
mkdirSync(out, { recursive: true });
const engine = ['engine', 'io', 'ops'].flatMap((d) =>
  readdirSync(join(root, 'native', d)).filter((f) => f.endsWith('.cc')).map((f) => join(root, 'native', d, f)),
);
const cxx = process.env.CXX || 'g++';
const extra = (process.env.NATIVE_TEST_FLAGS || '').split(' ').filter(Boolean);
let failed = 0;
for (const test of readdirSync(here).filter((f) => /^test-.*\.cc$/.test(f))) {
  const exe = join(out, test.replace(/\.cc$/, ''));
  execFileSync(cxx, ['-std=c++17', '-O2', '-Wall', '-Wno-uninitialized', '-Wno-format-zero-length', ...extra, '-I', join(root, 'native'), join(here, test), ...engine, '-o', exe, '-lpthread', '-ldl'], { stdio: 'inherit' });
  try {
    execFileSync(exe, { stdio: 'inherit' });
  } catch {
    failed++;
  }
}
process.exit(failed ? 1 : 0);
