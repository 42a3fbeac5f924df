#!/usr/bin/env node
// npm run test:cuda-emu: builds the CUDA backend for the CPU emulator (build.mjs) and runs the
// cross-backend op test (test/native/test-backend-ops.cc) against it, once with the device's
// memory pools and once without (the cudaMalloc / cudaFree path), then a ThreadSanitizer build
// of both (build.mjs --tsan, in <out>/tsan). Fails when the emulated library does not load,
// compares nothing, or any op mismatches, faults or races. First the emulator's self-test
// (selftest/) checks that it fails where a GPU would. NEUROTAP_EMU_TSAN=0 skips TSan.
// Usage: node test/cuda-emu/run.mjs [--cuda-dir DIR] [--out DIR] [--no-tsan | --tsan-only]
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build, cudaIncludes } from './build.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');

const opts = { cudaDir: join(root, 'cuda'), out: join(here, 'build'), plain: true, tsan: true };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; ++i) {
  if (argv[i] === '--cuda-dir') opts.cudaDir = resolve(argv[++i]);
  else if (argv[i] === '--out') opts.out = resolve(argv[++i]);
  else if (argv[i] === '--no-tsan') opts.tsan = false;
  else if (argv[i] === '--tsan-only') opts.plain = false;
  else {
    console.error(`run.mjs: unknown argument ${argv[i]} (usage: run.mjs [--cuda-dir DIR] [--out DIR] [--no-tsan | --tsan-only])`);
    process.exit(2);
  }
}
if (process.env.NEUROTAP_EMU_TSAN === '0') opts.tsan = false;

// The op test links the engine sources (as test/native/run.mjs builds it). They are compiled
// once (-O2, uninstrumented: only the kernels need ThreadSanitizer's instrumentation) and linked
// twice, plain and with the TSan runtime; objects are rebuilt when their source or any header
// is newer.
async function buildOpTests(binDir) {
  const cxx = process.env.CXX || 'g++';
  // The op test and its case files (test/native/backend-ops-*.cc), as test/native/run.mjs links them.
  const nativeTests = join(root, 'test', 'native');
  const sources = [join(nativeTests, 'test-backend-ops.cc'), ...readdirSync(nativeTests).filter((f) => /^backend-ops-.*\.cc$/.test(f)).sort().map((f) => join(nativeTests, f))];
  const headers = [join(nativeTests, 'check.h'), ...readdirSync(nativeTests).filter((f) => /^backend-ops.*\.h$/.test(f)).map((f) => join(nativeTests, f))];
  for (const d of ['engine', 'io', 'ops']) {
    for (const f of readdirSync(join(root, 'native', d))) {
      if (f.endsWith('.cc')) sources.push(join(root, 'native', d, f));
      if (f.endsWith('.h')) headers.push(join(root, 'native', d, f));
    }
  }
  const newestHeader = Math.max(...headers.map((f) => statSync(f).mtimeMs));
  const objDir = join(binDir, 'obj');
  mkdirSync(objDir, { recursive: true });
  const objs = sources.map((src) => ({ src, obj: join(objDir, `${basename(dirname(src))}-${basename(src, '.cc')}.o`) }));
  const stale = objs.filter((o) => !existsSync(o.obj) || statSync(o.obj).mtimeMs < Math.max(statSync(o.src).mtimeMs, newestHeader));
  const t = Date.now();
  let next = 0, ok = true;
  const worker = async () => {
    while (next < stale.length) {
      const o = stale[next++];
      const args = ['-std=c++17', '-O2', '-Wall', '-Wno-uninitialized', '-Wno-switch', '-I', join(root, 'native'), '-c', o.src, '-o', o.obj];
      const code = await new Promise((done) => spawn(cxx, args, { stdio: 'inherit' }).on('close', done));
      if (code !== 0) ok = false;
    }
  };
  await Promise.all([worker(), worker()]);
  if (!ok) return null;
  const exes = { plain: join(binDir, 'test-backend-ops'), tsan: join(binDir, 'test-backend-ops-tsan') };
  const newestObj = Math.max(...objs.map((o) => statSync(o.obj).mtimeMs));
  for (const [flavour, exe] of Object.entries(exes)) {
    if (existsSync(exe) && statSync(exe).mtimeMs >= newestObj) continue;
    const r = spawnSync(cxx, [...objs.map((o) => o.obj), '-o', exe, ...(flavour === 'tsan' ? ['-fsanitize=thread'] : []), '-lpthread', '-ldl'], { stdio: 'inherit' });
    if (r.status !== 0 && flavour === 'plain') return null;
  }
  if (stale.length) console.log(`test:cuda-emu: built test-backend-ops (${stale.length} files) in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  return exes;
}

// Runs the op test against the library in libDir; returns whether it passed.
function runPass(label, exe, libDir, env) {
  const t = Date.now();
  const r = spawnSync(exe, { env: { ...process.env, ...env, NEUROTAP_BACKEND_DIR: libDir }, encoding: 'utf8', maxBuffer: 64 << 20 });
  process.stdout.write(r.stdout ?? '');
  process.stderr.write(r.stderr ?? '');
  const fatal = /FATAL: ThreadSanitizer[^\n]*/.exec(r.stderr ?? '');
  if (fatal) {
    console.log(`test:cuda-emu: skipping the ${label} pass: ThreadSanitizer cannot run on this machine (${fatal[0]})`);
    return true;
  }
  const compared = Number(/(\d+) compared across backends/.exec(r.stdout ?? '')?.[1] ?? 0);
  const loaded = /comparing cuda \(neurotap CUDA emulator/i.test(r.stdout ?? '');
  const races = (r.stderr ?? '').match(/WARNING: ThreadSanitizer/g)?.length ?? 0;
  if (r.status !== 0 || !loaded || compared === 0) {
    const why = races
      ? `${races} ThreadSanitizer report(s): a missing barrier (or an unsynchronized access between a block's threads)`
      : r.signal
        ? `killed by ${r.signal}`
        : r.status !== 0
          ? `exit code ${r.status}`
          : !loaded
            ? 'the emulated CUDA backend did not load'
            : 'no case compared';
    console.error(`test:cuda-emu FAILED (${label}): ${why}`);
    return false;
  }
  console.log(`test:cuda-emu: ${compared} cases match the CPU backend (${label}, ${((Date.now() - t) / 1000).toFixed(1)} s)`);
  return true;
}

// Whether g++ can build and link a ThreadSanitizer program here (libtsan installed).
function tsanAvailable() {
  const probe = join(opts.out, 'tsan-probe');
  mkdirSync(opts.out, { recursive: true });
  const r = spawnSync(process.env.CXX || 'g++', ['-fsanitize=thread', '-x', 'c++', '-', '-o', probe], { input: 'int main() { return 0; }\n', encoding: 'utf8' });
  return r.status === 0 ? null : (r.stderr || 'the compiler failed').trim().split('\n').pop();
}

const start = Date.now();
let failed = false;
const passes = [];
if (!cudaIncludes()) {
  console.log('test:cuda-emu skipped: the CUDA headers (cuda_runtime.h) were not found (install the CUDA toolkit, or set CUDA_HOME or NVCC)');
  process.exit(0);
}
if (opts.tsan) {
  const why = tsanAvailable();
  if (why) {
    console.log(`test:cuda-emu: skipping the ThreadSanitizer pass: ${why}`);
    opts.tsan = false;
  }
}
if (opts.plain) {
  passes.push({ out: opts.out, tsan: false, runs: [['memory pools', {}], ['no memory pools: cudaMalloc / cudaFree', { NT_EMU_NO_MEMORY_POOLS: '1' }]] });
}
if (opts.tsan) {
  // Only barriers order a block's threads here, so a missing __syncthreads is a reported race
  // even where the fixed fiber schedule computes the right values.
  passes.push({ out: join(opts.out, 'tsan'), tsan: true, runs: [['ThreadSanitizer', { TSAN_OPTIONS: `exitcode=66 ${process.env.TSAN_OPTIONS ?? ''}` }]] });
}
// The emulator's own checks (selftest/selftest.cu): each case in its own process; "fault"
// must abort naming the kernel, every other case exit 0. Skipped for another --cuda-dir.
async function selfTest() {
  const out = join(here, 'build', 'selftest'), exe = join(here, 'build', 'bin', 'selftest-main');
  const lib = await build({ cudaDir: join(here, 'selftest'), out, tsan: false });
  mkdirSync(dirname(exe), { recursive: true });
  const r = spawnSync(process.env.CXX || 'g++', ['-std=c++17', '-O1', join(here, 'selftest', 'selftest-main.cc'), '-o', exe, '-ldl'], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error('test:cuda-emu FAILED: building the emulator self-test failed');
    return false;
  }
  const src = readFileSync(join(here, 'selftest', 'selftest.cu'), 'utf8');
  const cases = [...src.matchAll(/!std::strcmp\(name, "([\w-]+)"\)/g)].map((m) => m[1]);
  let ok = cases.length > 0;
  for (const c of cases) {
    const run = spawnSync(exe, [lib, c], { encoding: 'utf8' });
    const passed = c === 'fault' ? run.signal === 'SIGABRT' && /kernel far_read_kernel.*invalid access/.test(run.stderr) : run.status === 0;
    if (!passed) {
      console.error(`test:cuda-emu FAILED: emulator self-test "${c}" (${run.signal ?? `exit ${run.status}`}):\n${run.stdout}${run.stderr}`);
      ok = false;
    }
  }
  if (ok) console.log(`test:cuda-emu: emulator self-test: ${cases.length} cases behave as on a GPU (${cases.join(', ')})`);
  return ok;
}

if (opts.cudaDir === join(root, 'cuda') && !(await selfTest())) failed = true;
const exes = await buildOpTests(join(here, 'build', 'bin'));
if (!exes) {
  console.error('test:cuda-emu: building test-backend-ops failed');
  process.exit(1);
}
for (const pass of passes) {
  try {
    await build({ cudaDir: opts.cudaDir, out: pass.out, tsan: pass.tsan });
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
  for (const [label, env] of pass.runs) if (!runPass(label, pass.tsan ? exes.tsan : exes.plain, pass.out, env)) failed = true;
}
console.log(`test:cuda-emu: ${failed ? 'FAILED' : 'passed'} in ${((Date.now() - start) / 1000).toFixed(1)} s`);
process.exit(failed ? 1 : 0);
