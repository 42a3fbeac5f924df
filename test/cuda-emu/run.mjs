#!/usr/bin/env node
// npm run test:cuda-emu: builds the CUDA backend for the CPU emulator (build.mjs) and runs the
// cross-backend op test (test/native/test-backend-ops.cc) against it, once with the device's
// memory pools and once without (the cudaMalloc / cudaFree path), then a ThreadSanitizer build
// of both (build.mjs --tsan, in <out>/tsan). Fails when the emulated library does not load,
// compares nothing, or any op mismatches, faults or races. NEUROTAP_EMU_TSAN=0 skips TSan.
// Usage: node test/cuda-emu/run.mjs [--cuda-dir DIR] [--out DIR] [--no-tsan | --tsan-only]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from './build.mjs';

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

// The op test links the engine sources (as test/native/run.mjs builds it); rebuilt when a
// source is newer than the binary.
function buildOpTest(exe, flags) {
  const sources = [join(root, 'test', 'native', 'test-backend-ops.cc')];
  for (const d of ['engine', 'io', 'ops'])
    for (const f of readdirSync(join(root, 'native', d))) if (/\.(cc|h)$/.test(f)) sources.push(join(root, 'native', d, f));
  sources.push(join(root, 'test', 'native', 'check.h'));
  const newest = Math.max(...sources.map((f) => statSync(f).mtimeMs));
  if (existsSync(exe) && statSync(exe).mtimeMs >= newest) return true;
  const t = Date.now();
  const cxx = process.env.CXX || 'g++';
  const r = spawnSync(
    cxx,
    ['-std=c++17', ...flags, '-Wall', '-Wno-uninitialized', '-Wno-switch', '-I', join(root, 'native'), ...sources.filter((f) => f.endsWith('.cc')), '-o', exe, '-lpthread', '-ldl'],
    { stdio: 'inherit' },
  );
  if (r.status !== 0) return false;
  console.log(`test:cuda-emu: built ${exe} in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  return true;
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
  const compared = Number(/(\d+) cases compared across backends/.exec(r.stdout ?? '')?.[1] ?? 0);
  const loaded = /comparing CUDA \(neurotap CUDA emulator/.test(r.stdout ?? '');
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

const start = Date.now();
let failed = false;
const passes = [];
if (opts.plain) {
  passes.push({ out: opts.out, tsan: false, flags: ['-O2'], runs: [['memory pools', {}], ['no memory pools: cudaMalloc / cudaFree', { NT_EMU_NO_MEMORY_POOLS: '1' }]] });
}
if (opts.tsan) {
  // Only barriers order a block's threads here, so a missing __syncthreads is a reported race
  // even where the fixed fiber schedule computes the right values.
  passes.push({ out: join(opts.out, 'tsan'), tsan: true, flags: ['-O1', '-g', '-fsanitize=thread'], runs: [['ThreadSanitizer', { TSAN_OPTIONS: `exitcode=66 ${process.env.TSAN_OPTIONS ?? ''}` }]] });
}
for (const pass of passes) {
  try {
    await build({ cudaDir: opts.cudaDir, out: pass.out, tsan: pass.tsan });
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
  const exe = join(pass.out, 'test-backend-ops');
  mkdirSync(pass.out, { recursive: true });
  if (!buildOpTest(exe, pass.flags)) {
    console.error('test:cuda-emu: building test-backend-ops failed');
    process.exit(1);
  }
  for (const [label, env] of pass.runs) if (!runPass(label, exe, pass.out, env)) failed = true;
}
console.log(`test:cuda-emu: ${failed ? 'FAILED' : 'passed'} in ${((Date.now() - start) / 1000).toFixed(1)} s`);
process.exit(failed ? 1 : 0);
