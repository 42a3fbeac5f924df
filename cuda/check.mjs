#!/usr/bin/env node
// Compile-only check of the CUDA backend (npm run check:cuda): every cuda/*.cu through
// `nvcc -std=c++17 -arch=sm_90 -I native -c`, two at a time. Needs nvcc, not a GPU.
// cuda/gemm-cublas.cu also needs cublasLt.h and is skipped (with the reason) without it.
// Skips with exit code 0 where nvcc is missing; exits 1 on any compile error.
// Options: --strict also fails on compiler warnings. Environment: NVCC (the compiler),
// CUDA_HOME / CUDA_PATH (the toolkit), NEUROTAP_CUBLAS_INCLUDE (a folder with cublasLt.h).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, realpathSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { basename, delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const strict = process.argv.includes('--strict');
const CUBLAS_FILE = 'gemm-cublas.cu';

function findNvcc() {
  const candidates = [];
  if (process.env.NVCC) candidates.push(process.env.NVCC);
  for (const home of [process.env.CUDA_HOME, process.env.CUDA_PATH]) if (home) candidates.push(join(home, 'bin', 'nvcc'));
  for (const dir of (process.env.PATH ?? '').split(delimiter)) if (dir) candidates.push(join(dir, 'nvcc'));
  candidates.push('/usr/local/cuda/bin/nvcc');
  return candidates.find((c) => existsSync(c)) ?? null;
}

// The toolkit root nvcc belongs to. nvcc may be a wrapper script on PATH (not a symlink), so
// ask it: `nvcc --dryrun` prints the TOP it runs from.
function toolkitRoots(nvcc) {
  const roots = new Set();
  for (const home of [process.env.CUDA_HOME, process.env.CUDA_PATH]) if (home) roots.add(home);
  roots.add(resolve(dirname(realpathSync(nvcc)), '..'));
  const dry = spawnSync(nvcc, ['--dryrun', '--version'], { encoding: 'utf8' });
  const top = /TOP=(\S+)/.exec(`${dry.stdout ?? ''}${dry.stderr ?? ''}`);
  if (top) roots.add(resolve(top[1].replace(/^"|"$/g, '')));
  roots.add('/usr/local/cuda');
  return [...roots].filter((r) => existsSync(r));
}

function includeDirs(roots) {
  const dirs = [];
  for (const r of roots) {
    dirs.push(join(r, 'include'));
    const targets = join(r, 'targets');
    if (existsSync(targets)) for (const t of readdirSync(targets)) dirs.push(join(targets, t, 'include'));
  }
  return dirs;
}

// pip wheels (nvidia-cublas-cu12 and friends) install headers under site-packages/nvidia/*/include.
function sitePackagesDirs() {
  for (const py of ['python3', 'python']) {
    const r = spawnSync(py, ['-c', 'import site, sys; print("\\n".join(site.getsitepackages() + [site.getusersitepackages()]))'], {
      encoding: 'utf8',
    });
    if (r.status === 0) return r.stdout.split('\n').filter(Boolean);
  }
  return [];
}

function findCublasInclude(roots) {
  const dirs = [];
  if (process.env.NEUROTAP_CUBLAS_INCLUDE) dirs.push(process.env.NEUROTAP_CUBLAS_INCLUDE);
  dirs.push(...includeDirs(roots), '/usr/include');
  for (const sp of sitePackagesDirs()) {
    const nv = join(sp, 'nvidia');
    if (existsSync(nv)) for (const pkg of readdirSync(nv)) dirs.push(join(nv, pkg, 'include'));
  }
  return dirs.find((d) => existsSync(join(d, 'cublasLt.h'))) ?? null;
}

function compile(nvcc, file, out, extraIncludes) {
  const args = ['-std=c++17', '-arch=sm_90', '-I', 'native', ...extraIncludes.flatMap((d) => ['-I', d]), '-Xcompiler=-Wall,-Wextra', '-c', '-o', out, file];
  const start = Date.now();
  return new Promise((done) => {
    const child = spawn(nvcc, args, { cwd: root });
    let log = '';
    child.stdout.on('data', (d) => (log += d));
    child.stderr.on('data', (d) => (log += d));
    child.on('error', (e) => done({ file, ok: false, log: String(e), seconds: 0 }));
    child.on('close', (code) => done({ file, ok: code === 0, log: log.trim(), seconds: (Date.now() - start) / 1000 }));
  });
}

async function main() {
  const nvcc = findNvcc();
  if (!nvcc) {
    console.log('check:cuda skipped: nvcc not found (set NVCC or CUDA_HOME, or put nvcc on PATH)');
    return 0;
  }
  const roots = toolkitRoots(nvcc);
  const version = spawnSync(nvcc, ['--version'], { encoding: 'utf8' }).stdout?.match(/release [\d.]+/)?.[0] ?? 'unknown release';
  console.log(`nvcc: ${nvcc} (${version})`);

  const files = readdirSync(join(root, 'cuda')).filter((f) => f.endsWith('.cu')).sort();
  const cublasDir = findCublasInclude(roots);
  const jobs = [];
  for (const f of files) {
    if (f === CUBLAS_FILE && !cublasDir) {
      console.log(`skipping cuda/${f}: cublasLt.h not found (cuBLAS is not installed here)`);
      continue;
    }
    jobs.push({ file: `cuda/${f}`, includes: f === CUBLAS_FILE ? [cublasDir] : [] });
  }
  if (cublasDir) console.log(`cublasLt.h: ${cublasDir}`);

  const tmp = mkdtempSync(join(tmpdir(), 'neurotap-cuda-check-'));
  const results = [];
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next++];
      const r = await compile(nvcc, job.file, join(tmp, `${basename(job.file, '.cu')}.o`), job.includes);
      const warned = r.ok && /warning/i.test(r.log);
      console.log(`${r.ok ? (warned ? 'warn' : 'ok  ') : 'FAIL'} ${r.file} (${r.seconds.toFixed(1)} s)`);
      if (r.log) console.log(r.log.replace(/^/gm, '    '));
      results.push({ ...r, warned });
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(2, availableParallelism()) }, worker));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  const failed = results.filter((r) => !r.ok);
  const warned = results.filter((r) => r.warned);
  console.log(`check:cuda: ${results.length - failed.length}/${results.length} compiled, ${warned.length} with warnings, ${jobs.length === files.length ? 'none' : files.length - jobs.length} skipped`);
  return failed.length > 0 || (strict && warned.length > 0) ? 1 : 0;
}

process.exitCode = await main();
