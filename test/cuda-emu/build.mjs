#!/usr/bin/env node
// Builds the CUDA backend for the CPU emulator: cuda/*.cu, copied with mechanical rewrites only
// (kernel<<<...>>>(args) launches, __shared__ declarations), compiled by g++ against the CUDA
// toolkit's headers and test/cuda-emu/include, linked with the emulator runtime (src/) into
// <out>/libneurotap_cuda.so (-z defs). Test-only. Used by run.mjs (npm run test:cuda-emu).
// Usage: node test/cuda-emu/build.mjs [--cuda-dir DIR] [--out DIR] [--tsan]
// Environment: CXX (default g++), NVCC / CUDA_HOME / CUDA_PATH to find the toolkit's headers.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { findNvcc, toolkitRoots } from '../../cuda/toolchain.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..', '..');

function parseArgs(argv) {
  const opts = { cudaDir: join(root, 'cuda'), out: join(here, 'build'), tsan: false };
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (a === '--cuda-dir') opts.cudaDir = resolve(argv[++i]);
    else if (a === '--out') opts.out = resolve(argv[++i]);
    else if (a === '--tsan') opts.tsan = true;
    else throw new Error(`build.mjs: unknown argument ${a} (usage: build.mjs [--cuda-dir DIR] [--out DIR] [--tsan])`);
  }
  return opts;
}

// The toolkit's include folder (cuda_runtime.h), from the toolkit nvcc belongs to (cuda/toolchain.mjs).
export function cudaIncludes() {
  for (const r of toolkitRoots(findNvcc())) {
    for (const inc of [join(r, 'include'), join(r, 'targets', 'x86_64-linux', 'include')])
      if (existsSync(join(inc, 'cuda_runtime.h'))) return inc;
  }
  return null;
}

// The mechanical rewrites. Returns the new text and what was rewritten.
export function rewrite(text, file) {
  const counts = { launches: 0, dynamicShared: 0, staticShared: 0 };
  // kernel<<<grid, block[, smem[, stream]]>>>(args)  ->  ::nt_emu::launch(kernel, "kernel", config(...), args)
  text = text.replace(/([A-Za-z_][\w:]*(?:\s*<[^<>;()]*>)?)\s*<<<([\s\S]*?)>>>\s*\((\s*\))?/g, (_, kernel, cfg, empty) => {
    counts.launches++;
    const name = kernel.replace(/\s+/g, '');
    return `::nt_emu::launch(${kernel}, "${name}", ::nt_emu::config(${cfg})${empty ? ')' : ', '}`;
  });
  const align = String.raw`(?:__align__\s*\(\s*\d+\s*\)\s+)?`;
  const type = String.raw`([A-Za-z_][\w:]*(?:\s+[A-Za-z_][\w:]*)*?)`;  // one or more words: float, unsigned int
  text = text.replace(new RegExp(String.raw`extern\s+__shared__\s+${align}${type}\s+${align}(\w+)\s*\[\s*\]\s*;`, 'g'), (_, type, name) => {
    counts.dynamicShared++;
    return `NT_EMU_DYNAMIC_SHARED(${type}, ${name});`;
  });
  text = text.replace(new RegExp(String.raw`__shared__\s+${align}${type}\s+${align}(\w+)\s*((?:\[[^\]]*\])*)\s*;`, 'g'), (_, type, name, dims) => {
    counts.staticShared++;
    return `NT_EMU_SHARED(${type}, ${name}, ${dims});`;
  });
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  for (const left of ['<<<', '__shared__'])
    if (code.includes(left)) throw new Error(`build.mjs: ${file}: a "${left}" the rewrite does not recognize (near: ${code.slice(code.indexOf(left) - 60, code.indexOf(left) + 60)})`);
  return { text, counts };
}

function writeIfChanged(path, text) {
  if (existsSync(path) && readFileSync(path, 'utf8') === text) return;
  writeFileSync(path, text);
}

function mtime(path) {
  return statSync(path).mtimeMs;
}

function run(cmd, args) {
  return new Promise((done) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('error', (e) => done({ ok: false, log: String(e) }));
    child.on('close', (code) => done({ ok: code === 0, log: err }));
  });
}

export async function build(opts) {
  const start = Date.now();
  const cxx = process.env.CXX || 'g++';
  const cudaInc = cudaIncludes();
  if (!cudaInc) throw new Error('build.mjs: the CUDA headers (cuda_runtime.h) were not found: install the CUDA toolkit, or set CUDA_HOME or NVCC');
  const srcDir = join(opts.out, 'src'), objDir = join(opts.out, 'obj');
  mkdirSync(srcDir, { recursive: true });
  mkdirSync(objDir, { recursive: true });

  // Copy and rewrite the backend (its headers too: common.cuh holds __shared__ declarations).
  const total = { launches: 0, dynamicShared: 0, staticShared: 0 };
  const units = [];
  for (const f of readdirSync(opts.cudaDir).sort()) {
    if (!/\.(cu|cuh|h)$/.test(f)) continue;
    const { text, counts } = rewrite(readFileSync(join(opts.cudaDir, f), 'utf8'), f);
    for (const k of Object.keys(total)) total[k] += counts[k];
    writeIfChanged(join(srcDir, f), text);
    if (f.endsWith('.cu')) units.push({ src: join(srcDir, f), obj: join(objDir, f.replace(/\.cu$/, '.o')), cuda: true });
  }
  for (const f of readdirSync(join(here, 'src')).sort())
    if (f.endsWith('.cc')) units.push({ src: join(here, 'src', f), obj: join(objDir, `emu-${f.replace(/\.cc$/, '.o')}`), cuda: false });

  const includeDir = join(here, 'include');
  const common = ['-std=c++17', '-O2', '-g', '-fPIC', '-fvisibility=hidden', '-Wall', '-Wno-unknown-pragmas', '-I', includeDir, '-I', cudaInc];
  if (opts.tsan) common.push('-DNT_EMU_TSAN=1');
  // As nvcc lists the architectures it compiled for (cuda/backend.cu refuses older devices):
  // the emulated library claims sm_80, the oldest the CMake build targets.
  common.push('-D__CUDA_ARCH_LIST__=800');
  // Headers every object depends on: rebuild when any of them is newer than the object.
  const headers = [
    ...readdirSync(srcDir).filter((f) => !f.endsWith('.cu')).map((f) => join(srcDir, f)),
    ...readdirSync(includeDir).map((f) => join(includeDir, f)),
    ...readdirSync(join(here, 'src')).filter((f) => f.endsWith('.h')).map((f) => join(here, 'src', f)),
    join(root, 'native', 'ops', 'backend-abi.h'),
    fileURLToPath(import.meta.url),
  ];
  const newestHeader = Math.max(...headers.map(mtime));
  // The objects of a plain and a --tsan build differ: switching flavours rebuilds everything.
  const stamp = join(objDir, 'flavour'), flavour = opts.tsan ? 'tsan' : 'plain';
  const flavourChanged = !existsSync(stamp) || readFileSync(stamp, 'utf8') !== flavour;

  const jobs = units.filter((u) => flavourChanged || !existsSync(u.obj) || mtime(u.obj) < Math.max(mtime(u.src), newestHeader));
  const failures = [];
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const u = jobs[next++];
      // Kernels: the rewritten .cu as C++, with the device API force-included. Under --tsan only
      // they are instrumented; the emulator's own bookkeeping is not (its fibers switch without
      // synchronizing, so its accesses would all look like races).
      const args = u.cuda
        ? [...common, '-x', 'c++', '-include', join(includeDir, 'cuda-emu.h'), '-I', srcDir, '-I', join(root, 'native'), ...(opts.tsan ? ['-fsanitize=thread'] : [])]
        : [...common];
      const r = await run(cxx, [...args, '-c', '-o', u.obj, u.src]);
      if (!r.ok || r.log.trim()) process.stderr.write(r.log);
      if (!r.ok) failures.push(u.src);
    }
  };
  await Promise.all([worker(), worker()]);
  if (failures.length) throw new Error(`build.mjs: ${failures.length} file(s) failed to compile: ${failures.join(', ')}`);
  writeFileSync(stamp, flavour);

  const lib = join(opts.out, 'libneurotap_cuda.so');
  const link = await run(cxx, ['-shared', '-o', lib, ...units.map((u) => u.obj), '-Wl,-z,defs', ...(opts.tsan ? ['-fsanitize=thread'] : []), '-lpthread']);
  if (!link.ok) {
    process.stderr.write(link.log);
    throw new Error('build.mjs: linking libneurotap_cuda.so failed');
  }
  const secs = ((Date.now() - start) / 1000).toFixed(1);
  console.log(
    `cuda-emu: built ${lib}${opts.tsan ? ' (ThreadSanitizer)' : ''} from ${opts.cudaDir}: ${units.filter((u) => u.cuda).length} .cu files, ` +
      `${total.launches} launches, ${total.staticShared + total.dynamicShared} __shared__ declarations rewritten; ${jobs.length} compiled in ${secs} s`,
  );
  return lib;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    await build(parseArgs(process.argv.slice(2)));
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
}
