// `neurotap build-cuda`: builds libneurotap_cuda.so next to the installed addon with the user's nvcc
// and cuBLAS, by calling nvcc directly through cuda/toolchain.mjs (no CMake, no Node headers).
// Test: test/build-cuda.test.ts.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { spawnSync } from 'node:child_process';

import { NeurotapError } from '../errors.js';
import { addonDir, native } from '../bindings/native.js';
import { processCudaLibraryDirs } from '../bindings/cuda-libs.js';
import { one, UsageError, type ParsedArgs } from './args.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Step {
  ok: boolean;
  log: string;
  seconds: number;
}
interface Toolchain {
  CUBLASLT_SONAME: string;
  findNvcc(env?: NodeJS.ProcessEnv): string | null;
  nvccVersion(nvcc: string): string;
  toolkitRoots(nvcc: string): string[];
  findCublas(roots: string[], env?: NodeJS.ProcessEnv): { include: string | null; lib: string | null; looked: { include: string[]; lib: string[] } };
  findCudart(roots: string[]): string | null;
  compile(nvcc: string, root: string, file: string, out: string, o: { includes: string[]; archs: string[]; optimize: boolean }): Promise<Step>;
  link(nvcc: string, root: string, objects: string[], out: string, o: { cudartLib: string | null; cublasLib: string; extraRunpath: string[] }): Promise<Step>;
}

// The compute capabilities of this machine's GPUs (nvidia-smi), or those CMakeLists.txt builds for.
function defaultArchs(): string[] {
  const r = spawnSync('nvidia-smi', ['--query-gpu=compute_cap', '--format=csv,noheader'], { encoding: 'utf8', timeout: 10_000 });
  const found = r.status === 0 ? [...new Set(r.stdout.split('\n').map((l) => l.trim().replace('.', '')).filter((l) => /^\d+$/.test(l)))] : [];
  return found.length ? found : ['80', '86', '89', '90'];
}

function fail(code: string, message: string): never {
  throw new NeurotapError(code, message);
}

/** Runs `neurotap build-cuda [flags]`; logs progress to stderr. */
export async function runBuildCuda(args: ParsedArgs): Promise<void> {
  const archs = (one(args, 'arch') ?? '').split(/[,;\s]+/).filter(Boolean);
  if (archs.some((a) => !/^\d{2,3}$/.test(a))) throw new UsageError(`--arch takes compute capabilities like 90,80, got '${one(args, 'arch')}'`);
  const tc = (await import(pathToFileURL(join(ROOT, 'cuda', 'toolchain.mjs')).href)) as Toolchain;
  const outDir = resolve(one(args, 'out') ?? addonDir());
  const env = { ...process.env };
  const nvccFlag = one(args, 'nvcc');
  if (nvccFlag !== undefined) env.NVCC = nvccFlag;
  for (const [flag, key] of [['cublas-include', 'NEUROTAP_CUBLAS_INCLUDE'], ['cublas-lib', 'NEUROTAP_CUBLAS_LIB']] as const) {
    const v = one(args, flag);
    if (v !== undefined) env[key] = resolve(v);
  }

  const nvcc = nvccFlag !== undefined ? (existsSync(nvccFlag) ? nvccFlag : null) : tc.findNvcc(env);
  if (!nvcc)
    fail(
      'ERR_NVCC_NOT_FOUND',
      nvccFlag !== undefined
        ? `nvcc not found at ${nvccFlag}`
        : 'nvcc not found (looked at $NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin, PATH and /usr/local/cuda/bin): install the CUDA 13 toolkit or pass --nvcc PATH',
    );
  const roots = tc.toolkitRoots(nvcc);
  const incFlag = env.NEUROTAP_CUBLAS_INCLUDE;
  const libFlag = env.NEUROTAP_CUBLAS_LIB;
  // Folders given as flags are the only ones looked at.
  const cublas =
    one(args, 'cublas-include') !== undefined && one(args, 'cublas-lib') !== undefined && incFlag && libFlag
      ? {
          include: existsSync(join(incFlag, 'cublasLt.h')) ? incFlag : null,
          lib: existsSync(join(libFlag, tc.CUBLASLT_SONAME)) ? libFlag : null,
          looked: { include: [incFlag], lib: [libFlag] },
        }
      : tc.findCublas(roots, env);
  if (!cublas.include || !cublas.lib) {
    const what = !cublas.include ? `cublasLt.h (looked in ${cublas.looked.include.join(', ')})` : `${tc.CUBLASLT_SONAME} (looked in ${cublas.looked.lib.join(', ')})`;
    fail('ERR_CUBLAS_NOT_FOUND', `cuBLAS not found: no ${what}; install it (\`pip install nvidia-cublas\`, or the CUDA toolkit's cuBLAS) or pass --cublas-include DIR --cublas-lib DIR`);
  }
  const chosen = archs.length ? archs : defaultArchs();
  process.stderr.write(`neurotap build-cuda: ${nvcc} (${tc.nvccVersion(nvcc)}), cuBLAS ${cublas.lib}, compute capabilities ${chosen.join(', ')}\n`);

  const files = readdirSync(join(ROOT, 'cuda')).filter((f) => f.endsWith('.cu')).sort();
  const tmp = mkdtempSync(join(tmpdir(), 'neurotap-build-cuda-'));
  try {
    let next = 0;
    const errors: string[] = [];
    const worker = async (): Promise<void> => {
      while (next < files.length) {
        const f = files[next++]!;
        const r = await tc.compile(nvcc, ROOT, `cuda/${f}`, join(tmp, `${basename(f, '.cu')}.o`), {
          includes: [cublas.include!],
          archs: chosen,
          optimize: true,
        });
        process.stderr.write(`  ${r.ok ? 'compiled' : 'FAILED  '} cuda/${f} (${r.seconds.toFixed(1)} s)\n`);
        if (!r.ok) errors.push(`cuda/${f}: ${r.log}`);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(4, availableParallelism())) }, worker));
    if (errors.length) fail('ERR_CUDA_BUILD_FAILED', `nvcc failed on ${errors.join('\n')}`);
    const built = join(tmp, 'libneurotap_cuda.so');
    const objects = files.map((f) => join(tmp, `${basename(f, '.cu')}.o`));
    // The cuBLAS folder goes into the RUNPATH too, so this library finds it without any search.
    const r = await tc.link(nvcc, ROOT, objects, built, { cudartLib: tc.findCudart(roots), cublasLib: cublas.lib, extraRunpath: [cublas.lib] });
    if (!r.ok) fail('ERR_CUDA_BUILD_FAILED', `linking libneurotap_cuda.so failed: ${r.log}`);
    mkdirSync(outDir, { recursive: true });
    const target = join(outDir, 'libneurotap_cuda.so');
    // Copied beside, then renamed over: a process that has the old library loaded keeps its copy.
    copyFileSync(built, `${target}.tmp`);
    renameSync(`${target}.tmp`, target);
    process.stderr.write(`neurotap build-cuda: wrote ${target}\n`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const probe = native().probeBackend('cuda', outDir, processCudaLibraryDirs());
  process.stdout.write(probe.available ? `ready: ${probe.device}\n` : `built, but the CUDA backend cannot start here: ${probe.reason}\n`);
}
