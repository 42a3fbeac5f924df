// Finding nvcc and cuBLASLt, compiling cuda/*.cu and linking libneurotap_cuda.so with nvcc alone
// (no CMake). Used by cuda/check.mjs (npm run check:cuda) and `neurotap build-cuda`
// (src/cli/build-cuda.ts); tested by both (test/build-cuda.test.ts, CI's check:cuda).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, realpathSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';

/** The soname the backend links: cuBLAS 13 (CUDA 13). Its wheels and toolkits ship no unversioned libcublasLt.so. */
export const CUBLASLT_SONAME = 'libcublasLt.so.13';

/** The folders libneurotap_cuda.so's RUNPATH names, besides $ORIGIN (see docs/gpu.md). */
export const RUNPATH_DIRS = ['/usr/local/cuda/lib64', '/usr/local/cuda/targets/x86_64-linux/lib', '/usr/lib/x86_64-linux-gnu'];

/** The nvcc to use, or null: $NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin, PATH, /usr/local/cuda/bin. */
export function findNvcc(env = process.env) {
  const candidates = [];
  if (env.NVCC) candidates.push(env.NVCC);
  for (const home of [env.CUDA_HOME, env.CUDA_PATH]) if (home) candidates.push(join(home, 'bin', 'nvcc'));
  for (const dir of (env.PATH ?? '').split(delimiter)) if (dir) candidates.push(join(dir, 'nvcc'));
  candidates.push('/usr/local/cuda/bin/nvcc');
  return candidates.find((c) => existsSync(c)) ?? null;
}

/** "release 13.0" or "unknown release". */
export function nvccVersion(nvcc) {
  return spawnSync(nvcc, ['--version'], { encoding: 'utf8' }).stdout?.match(/release [\d.]+/)?.[0] ?? 'unknown release';
}

// The toolkit root nvcc belongs to. nvcc may be a wrapper script on PATH (not a symlink), so
// ask it: `nvcc --dryrun` prints the TOP it runs from.
export function toolkitRoots(nvcc, env = process.env) {
  const roots = new Set();
  for (const home of [env.CUDA_HOME, env.CUDA_PATH]) if (home) roots.add(home);
  if (nvcc) {
    roots.add(resolve(dirname(realpathSync(nvcc)), '..'));
    const dry = spawnSync(nvcc, ['--dryrun', '--version'], { encoding: 'utf8' });
    const top = /TOP=(\S+)/.exec(`${dry.stdout ?? ''}${dry.stderr ?? ''}`);
    if (top) roots.add(resolve(top[1].replace(/^"|"$/g, '')));
  }
  roots.add('/usr/local/cuda');
  return [...roots].filter((r) => existsSync(r));
}

function toolkitDirs(roots, leaf) {
  const dirs = [];
  for (const r of roots) {
    dirs.push(...(leaf === 'lib' ? [join(r, 'lib64'), join(r, 'lib')] : [join(r, leaf)]));
    const targets = join(r, 'targets');
    if (existsSync(targets)) for (const t of readdirSync(targets)) dirs.push(join(targets, t, leaf));
  }
  return dirs;
}

// pip wheels (nvidia-cublas, PyTorch's dependencies) install under site-packages/nvidia/<pkg>/{include,lib}.
function sitePackagesDirs() {
  for (const py of ['python3', 'python']) {
    const r = spawnSync(py, ['-c', 'import site; print("\\n".join(site.getsitepackages() + [site.getusersitepackages()]))'], {
      encoding: 'utf8',
    });
    if (r.status === 0) return r.stdout.split('\n').filter(Boolean);
  }
  return [];
}

function wheelDirs(leaf) {
  const dirs = [];
  for (const sp of sitePackagesDirs()) {
    const nv = join(sp, 'nvidia');
    if (existsSync(nv)) for (const pkg of readdirSync(nv)) dirs.push(join(nv, pkg, leaf));
  }
  return dirs;
}

/**
 * Where cublasLt.h and libcublasLt.so.13 are: $NEUROTAP_CUBLAS_INCLUDE / $NEUROTAP_CUBLAS_LIB,
 * the toolkit, /usr, then pip wheels. Returns { include, lib, looked: { include: [...], lib: [...] } }
 * with include / lib null where not found.
 */
export function findCublas(roots, env = process.env) {
  const inc = [];
  const lib = [];
  if (env.NEUROTAP_CUBLAS_INCLUDE) inc.push(env.NEUROTAP_CUBLAS_INCLUDE);
  if (env.NEUROTAP_CUBLAS_LIB) lib.push(env.NEUROTAP_CUBLAS_LIB);
  inc.push(...toolkitDirs(roots, 'include'), '/usr/include');
  lib.push(...toolkitDirs(roots, 'lib'), '/usr/lib/x86_64-linux-gnu', '/usr/lib64');
  inc.push(...wheelDirs('include'));
  lib.push(...wheelDirs('lib'));
  const unique = (a) => [...new Set(a)];
  return {
    include: inc.find((d) => existsSync(join(d, 'cublasLt.h'))) ?? null,
    lib: lib.find((d) => existsSync(join(d, CUBLASLT_SONAME))) ?? null,
    looked: { include: unique(inc), lib: unique(lib) },
  };
}

/** The folder with libcudart.so.13 (and libcudart.so) next to nvcc, or null. */
export function findCudart(roots) {
  return toolkitDirs(roots, 'lib').find((d) => existsSync(join(d, 'libcudart.so'))) ?? null;
}

function run(cmd, args, cwd) {
  const start = Date.now();
  return new Promise((done) => {
    const child = spawn(cmd, args, { cwd });
    let log = '';
    child.stdout.on('data', (d) => (log += d));
    child.stderr.on('data', (d) => (log += d));
    child.on('error', (e) => done({ ok: false, log: String(e), seconds: 0 }));
    child.on('close', (code) => done({ ok: code === 0, log: log.trim(), seconds: (Date.now() - start) / 1000 }));
  });
}

/** nvcc flags for a list of compute capabilities like ['90', '80']: a cubin and PTX for each. */
export function archFlags(archs) {
  return archs.flatMap((a) => ['-gencode', `arch=compute_${a},code=[sm_${a},compute_${a}]`]);
}

/** Compiles one .cu (relative to root) to `out` (position-independent, for the shared library). */
export function compile(nvcc, root, file, out, { includes = [], archs = ['90'], optimize = false } = {}) {
  const args = ['-std=c++17', ...archFlags(archs), ...(optimize ? ['-O3'] : []), '-I', 'native', ...includes.flatMap((d) => ['-I', d])];
  args.push('-Xcompiler=-Wall,-Wextra,-fPIC,-fvisibility=hidden', '-c', '-o', out, file);
  return run(nvcc, args, root).then((r) => ({ file, ...r }));
}

/**
 * Links objects into `out` against the shared CUDA runtime and libcublasLt.so.13 (in `cublasLib`),
 * refusing unresolved symbols (-z defs). RUNPATH: $ORIGIN, `extraRunpath`, then RUNPATH_DIRS.
 */
export function link(nvcc, root, objects, out, { cudartLib, cublasLib, extraRunpath = [] }) {
  const runpath = ['$ORIGIN', ...extraRunpath, ...RUNPATH_DIRS].join(':');
  const args = ['-shared', '-cudart', 'shared', '-o', out, ...objects];
  if (cudartLib) args.push('-L', cudartLib);
  args.push('-L', cublasLib, `-l:${CUBLASLT_SONAME}`, '-Xlinker', '-z,defs', '-Xlinker', `--enable-new-dtags,-rpath,${runpath}`);
  return run(nvcc, args, root);
}
