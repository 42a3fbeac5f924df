#!/usr/bin/env node
// npm run test:cuda-emu: builds the CUDA backend for the CPU emulator (build.mjs) and runs the
// cross-backend op test (test/native/test-backend-ops.cc) against it, once with the device's
// memory pools and once without (the cudaMalloc / cudaFree path). Fails when the emulated
// library does not load, compares nothing, or any op mismatches or faults.
// Usage: node test/cuda-emu/run.mjs [--cuda-dir DIR] [--out DIR]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from './build.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');

const opts = { cudaDir: join(root, 'cuda'), out: join(here, 'build'), tsan: false };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; ++i) {
  if (argv[i] === '--cuda-dir') opts.cudaDir = resolve(argv[++i]);
  else if (argv[i] === '--out') opts.out = resolve(argv[++i]);
  else {
    console.error(`run.mjs: unknown argument ${argv[i]} (usage: run.mjs [--cuda-dir DIR] [--out DIR])`);
    process.exit(2);
  }
}

const start = Date.now();
try {
  await build(opts);
} catch (e) {
  console.error(e.message);
  process.exit(1);
}

// The op test links the engine sources (as test/native/run.mjs builds it); rebuilt when a
// source is newer than the binary.
const sources = [join(root, 'test', 'native', 'test-backend-ops.cc')];
for (const d of ['engine', 'io', 'ops'])
  for (const f of readdirSync(join(root, 'native', d))) if (/\.(cc|h)$/.test(f)) sources.push(join(root, 'native', d, f));
const exe = join(opts.out, 'test-backend-ops');
mkdirSync(opts.out, { recursive: true });
const newest = Math.max(...sources.map((f) => statSync(f).mtimeMs), statSync(join(root, 'test', 'native', 'check.h')).mtimeMs);
if (!existsSync(exe) || statSync(exe).mtimeMs < newest) {
  const t = Date.now();
  const cxx = process.env.CXX || 'g++';
  const r = spawnSync(
    cxx,
    ['-std=c++17', '-O2', '-Wall', '-Wno-uninitialized', '-Wno-switch', '-I', join(root, 'native'), ...sources.filter((f) => f.endsWith('.cc')), '-o', exe, '-lpthread', '-ldl'],
    { stdio: 'inherit' },
  );
  if (r.status !== 0) {
    console.error('test:cuda-emu: building test-backend-ops failed');
    process.exit(1);
  }
  console.log(`test:cuda-emu: built test-backend-ops in ${((Date.now() - t) / 1000).toFixed(1)} s`);
}

let failed = false;
for (const [label, env] of [
  ['memory pools', {}],
  ['no memory pools (cudaMalloc / cudaFree)', { NT_EMU_NO_MEMORY_POOLS: '1' }],
]) {
  const t = Date.now();
  const r = spawnSync(exe, { env: { ...process.env, ...env, NEUROTAP_BACKEND_DIR: opts.out }, encoding: 'utf8', maxBuffer: 64 << 20 });
  process.stdout.write(r.stdout ?? '');
  process.stderr.write(r.stderr ?? '');
  const compared = Number(/(\d+) cases compared across backends/.exec(r.stdout ?? '')?.[1] ?? 0);
  const loaded = /comparing CUDA \(neurotap CUDA emulator/.test(r.stdout ?? '');
  const secs = ((Date.now() - t) / 1000).toFixed(1);
  if (r.status !== 0 || !loaded || compared === 0) {
    const why = r.signal ? `killed by ${r.signal}` : r.status !== 0 ? `exit code ${r.status}` : !loaded ? 'the emulated CUDA backend did not load' : 'no case compared';
    console.error(`test:cuda-emu FAILED (${label}): ${why}`);
    failed = true;
  } else {
    console.log(`test:cuda-emu: ${compared} cases match the CPU backend (${label}, ${secs} s)`);
  }
}
console.log(`test:cuda-emu: ${failed ? 'FAILED' : 'passed'} in ${((Date.now() - start) / 1000).toFixed(1)} s`);
process.exit(failed ? 1 : 0);
