// `neurotap build-cuda` (src/cli/build-cuda.ts) run as a subprocess: its coded errors, and, where
// nvcc and the nvidia-cublas wheel's cuBLAS are here (CI's cache), a real build that links and loads.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { ROOT } from './helpers.js';

const BIN = join(ROOT, 'bin', 'neurotap.js');
const tmp = mkdtempSync(join(tmpdir(), 'neurotap-buildcuda-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, 'build-cuda', ...args], { encoding: 'utf8', timeout: 240_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('neurotap build-cuda', () => {
  it('says ERR_NVCC_NOT_FOUND when nvcc is missing', () => {
    const r = cli(['--nvcc', join(tmp, 'no-nvcc'), '--out', join(tmp, 'out')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^neurotap: error \[ERR_NVCC_NOT_FOUND\]: nvcc not found at .*no-nvcc\n$/);
  });

  const nvcc = ['/usr/local/cuda/bin/nvcc', ...(process.env.PATH ?? '').split(':').map((d) => join(d, 'nvcc'))].find((p) => existsSync(p));
  if (!nvcc) console.warn('skipping the build-cuda cases that need nvcc: nvcc not found');
  it.skipIf(!nvcc)('says ERR_CUBLAS_NOT_FOUND, with where it looked, when cuBLAS is missing', () => {
    const r = cli(['--cublas-include', join(tmp, 'inc'), '--cublas-lib', join(tmp, 'lib'), '--out', join(tmp, 'out')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('[ERR_CUBLAS_NOT_FOUND]: cuBLAS not found: no cublasLt.h');
    expect(r.stderr).toContain(join(tmp, 'inc'));
  });

  it('refuses a malformed --arch as a usage error (exit 2) quoting it', () => {
    const r = cli(['--arch', 'sm_90']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^neurotap: --arch takes compute capabilities like 90,80, got 'sm_90'\n/);
  });

  const cache = join(homedir(), '.cache', 'neurotap');
  const wheel =
    process.env.NEUROTAP_CUBLAS_LIB && process.env.NEUROTAP_CUBLAS_INCLUDE
      ? join(process.env.NEUROTAP_CUBLAS_LIB, '..')
      : existsSync(cache)
        ? readdirSync(cache).map((d) => join(cache, d, 'nvidia', 'cu13')).find((d) => existsSync(join(d, 'lib', 'libcublasLt.so.13')))
        : undefined;
  if (!wheel) console.warn('skipping the real build-cuda build: no nvidia-cublas wheel (run .ci/fetch-cublas.sh or set NEUROTAP_CUBLAS_INCLUDE/LIB)');
  it.skipIf(!nvcc || !wheel)('builds, links and loads libneurotap_cuda.so with the wheel\'s cuBLAS (sm_90)', () => {
    const out = join(tmp, 'built');
    const r = cli(['--arch', '90', '--out', out, '--cublas-include', join(wheel!, 'include'), '--cublas-lib', join(wheel!, 'lib')]);
    expect(r.stderr).toContain(`wrote ${join(out, 'libneurotap_cuda.so')}`);
    expect(r.code).toBe(0);
    // Loaded with every dependency (its RUNPATH names the wheel's folder): only a GPU is missing, or it is ready.
    expect(r.stdout).toMatch(/^(ready: .+|built, but the CUDA backend cannot start here: the cuda backend could not start: .+)\n$/);
  }, 300_000);  // nvcc compiles every cuda/*.cu for sm_90: minutes on 2 cores
});
