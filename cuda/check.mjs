#!/usr/bin/env node
// Build check of the CUDA backend (npm run check:cuda): every cuda/*.cu through
// `nvcc -std=c++17 -arch=sm_90 -I native -c`, two at a time, then, where cuBLASLt is found, a link
// of the whole libneurotap_cuda.so with unresolved symbols refused (-z defs). Needs nvcc, not a GPU.
// cuda/gemm-cublas.cu needs cublasLt.h and the link libcublasLt.so.13; each is skipped with the
// reason without them. Skips with exit code 0 where nvcc is missing; exits 1 on any error.
// Options: --strict also fails on compiler warnings; --out DIR keeps the linked library there.
// Environment: NVCC (the compiler), CUDA_HOME / CUDA_PATH (the toolkit), NEUROTAP_CUBLAS_INCLUDE
// (a folder with cublasLt.h), NEUROTAP_CUBLAS_LIB (a folder with libcublasLt.so.13).
// Shared with `neurotap build-cuda` through cuda/toolchain.mjs.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CUBLASLT_SONAME, compile, findCublas, findCudart, findNvcc, link, nvccVersion, toolkitRoots } from './toolchain.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const strict = process.argv.includes('--strict');
const outIndex = process.argv.indexOf('--out');
const outDir = outIndex > 0 ? resolve(process.argv[outIndex + 1] ?? '') : null;
const CUBLAS_FILE = 'gemm-cublas.cu';

// Loads the linked library through the built addon's backend loader (native/engine/backend.cc),
// cuBLAS found in `cublasLib`: every dependency must resolve, so that only the missing GPU stops
// it (its create() runs). Null where the addon is not built; 'load FAILED' otherwise on failure.
function loadCheck(lib, cublasLib) {
  const addon = join(root, 'build', 'Release', 'neurotap.node');
  if (!existsSync(addon)) {
    console.log('skipping the load check: the addon is not built (build/Release/neurotap.node)');
    return null;
  }
  const script = `const a = require(${JSON.stringify(addon)}); console.log(JSON.stringify(a.probeBackend('cuda', ${JSON.stringify(dirname(lib))}, [${JSON.stringify(cublasLib)}])));`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, LD_LIBRARY_PATH: '' } });
  let probe = null;
  try {
    probe = JSON.parse(r.stdout);
  } catch {
    probe = { available: false, reason: `${r.stdout}${r.stderr}`.trim() };
  }
  const loaded = probe.available || /could not start/.test(probe.reason);
  console.log(`${loaded ? 'ok  ' : 'FAIL'} load of libneurotap_cuda.so with cuBLAS from ${cublasLib}: ${probe.available ? 'a GPU is available' : probe.reason}`);
  return loaded ? 'linked and loaded' : 'load FAILED';
}

async function main() {
  const nvcc = findNvcc();
  if (!nvcc) {
    console.log('check:cuda skipped: nvcc not found (set NVCC or CUDA_HOME, or put nvcc on PATH)');
    return 0;
  }
  const roots = toolkitRoots(nvcc);
  console.log(`nvcc: ${nvcc} (${nvccVersion(nvcc)})`);

  const files = readdirSync(join(root, 'cuda')).filter((f) => f.endsWith('.cu')).sort();
  const cublas = findCublas(roots);
  const jobs = [];
  for (const f of files) {
    if (f === CUBLAS_FILE && !cublas.include) {
      console.log(`skipping cuda/${f}: cublasLt.h not found (cuBLAS is not installed here; set NEUROTAP_CUBLAS_INCLUDE)`);
      continue;
    }
    jobs.push({ file: `cuda/${f}`, includes: f === CUBLAS_FILE ? [cublas.include] : [] });
  }
  if (cublas.include) console.log(`cublasLt.h: ${cublas.include}`);

  const tmp = mkdtempSync(join(tmpdir(), 'neurotap-cuda-check-'));
  const results = [];
  let linked = 'skipped';
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next++];
      const r = await compile(nvcc, root, job.file, join(tmp, `${basename(job.file, '.cu')}.o`), { includes: job.includes });
      const warned = r.ok && /warning/i.test(r.log);
      console.log(`${r.ok ? (warned ? 'warn' : 'ok  ') : 'FAIL'} ${r.file} (${r.seconds.toFixed(1)} s)`);
      if (r.log) console.log(r.log.replace(/^/gm, '    '));
      results.push({ ...r, warned });
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(2, availableParallelism()) }, worker));
    const compiledAll = results.length === files.length && results.every((r) => r.ok);
    if (!compiledAll) {
      console.log(`skipping the link: ${results.length === files.length ? 'a file did not compile' : `cuda/${CUBLAS_FILE} was not compiled`}`);
    } else if (!cublas.lib) {
      console.log(`skipping the link: ${CUBLASLT_SONAME} not found (set NEUROTAP_CUBLAS_LIB to its folder)`);
    } else {
      const out = join(outDir ?? tmp, 'libneurotap_cuda.so');
      if (outDir) mkdirSync(outDir, { recursive: true });
      const objects = files.map((f) => join(tmp, `${basename(f, '.cu')}.o`));
      const r = await link(nvcc, root, objects, out, { cudartLib: findCudart(roots), cublasLib: cublas.lib });
      console.log(`${r.ok ? 'ok  ' : 'FAIL'} link libneurotap_cuda.so against ${join(cublas.lib, CUBLASLT_SONAME)}, -z defs (${r.seconds.toFixed(1)} s)${r.ok && outDir ? `: ${out}` : ''}`);
      if (r.log) console.log(r.log.replace(/^/gm, '    '));
      linked = r.ok ? 'linked' : 'link FAILED';
      if (r.ok) linked = loadCheck(out, cublas.lib) ?? linked;
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  const failed = results.filter((r) => !r.ok);
  const warned = results.filter((r) => r.warned);
  const skipped = files.length - jobs.length;
  console.log(`check:cuda: ${results.length - failed.length}/${results.length} compiled, ${warned.length} with warnings, ${skipped || 'none'} skipped, library ${linked}`);
  return failed.length > 0 || /FAILED/.test(linked) || (strict && warned.length > 0) ? 1 : 0;
}

process.exitCode = await main();
