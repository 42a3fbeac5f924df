// Loading the CUDA backend where its dependencies are outside the loader's path
// (native/engine/backend.cc, src/bindings/cuda-libs.ts): a stand-in libneurotap_cuda.so built
// with the C compiler needs a library that only the given folders have; the error lists every
// folder searched; with cuBLAS from the pip wheel (CI's cache), the real libcublasLt.so.13 loads.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { native } from '../src/bindings/native.js';
import { cudaLibraryDirs } from '../src/bindings/cuda-libs.js';

const tmp = mkdtempSync(join(tmpdir(), 'neurotap-cudaload-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function cc(args: string[]): void {
  const r = spawnSync(process.env.CC || 'cc', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cc ${args.join(' ')} failed: ${r.stderr}`);
}

// A libneurotap_cuda.so in `dir` that needs `soname` (in `depDir`) and whose nt_backend_get_api
// offers no table: loading it past the dependency ends in "does not implement backend ABI version".
function standIn(dir: string, depDir: string, soname: string, symbol: string): void {
  mkdirSync(dir, { recursive: true });
  const src = join(dir, 'stand-in.c');
  writeFileSync(src, `extern int ${symbol}(void *);\nconst void *nt_backend_get_api(int v) { return v == -1 ? (const void *)${symbol} : 0; }\n`);
  cc(['-shared', '-fPIC', '-o', join(dir, 'libneurotap_cuda.so'), src, `-L${depDir}`, `-l:${soname}`]);
}

describe('CUDA backend dependencies', () => {
  const depDir = join(tmp, 'wheel', 'nvidia', 'cu13', 'lib');
  const backendDir = join(tmp, 'backend');
  const soname = 'libneurotap_test_dep.so.13';
  mkdirSync(depDir, { recursive: true });
  writeFileSync(join(tmp, 'dep.c'), 'int nt_test_dep(void *p) { return p != 0; }\n');
  cc(['-shared', '-fPIC', `-Wl,-soname,${soname}`, '-o', join(depDir, soname), join(tmp, 'dep.c')]);
  standIn(backendDir, depDir, soname, 'nt_test_dep');

  it('names every folder it searched when a dependency is missing', () => {
    const saved = process.env.CUDA_HOME;
    process.env.CUDA_HOME = join(tmp, 'toolkit');
    try {
      const r = native().probeBackend('cuda', backendDir, [join(tmp, 'nowhere', 'lib')]);
      expect(r.available).toBe(false);
      expect(r.reason).toContain(`needs ${soname}, which was not found`);
      for (const place of ['LD_LIBRARY_PATH', 'ld.so.cache', join(tmp, 'nowhere', 'lib'), join(tmp, 'toolkit', 'lib64'), '/usr/local/cuda/lib64'])
        expect(r.reason).toContain(place);
      expect(r.reason).toMatch(/pip install nvidia-cublas/);
    } finally {
      if (saved === undefined) delete process.env.CUDA_HOME;
      else process.env.CUDA_HOME = saved;
    }
  });

  it('preloads a dependency from a given folder and goes on to the library', () => {
    const r = native().probeBackend('cuda', backendDir, [join(tmp, 'nowhere', 'lib'), depDir]);
    expect(r.available).toBe(false);
    expect(r.reason).toMatch(/does not implement backend ABI version/);
  });

  it('finds the folders of pip wheels and NEUROTAP_CUDA_LIBRARY_PATH', () => {
    const site = join(tmp, 'site-packages');
    const dirs = cudaLibraryDirs({ NEUROTAP_CUDA_LIBRARY_PATH: `/opt/a:/opt/b`, HOME: join(tmp, 'home') }, () => [site]);
    expect(dirs.slice(0, 2)).toEqual(['/opt/a', '/opt/b']);
    expect(dirs).toContain(join(site, 'nvidia', 'cu13', 'lib'));
    expect(dirs).toContain(join(site, 'nvidia', 'cublas', 'lib'));
    const venv = join(tmp, 'venv');
    mkdirSync(join(venv, 'lib', 'python3.12'), { recursive: true });
    expect(cudaLibraryDirs({ VIRTUAL_ENV: venv }, () => [])).toContain(join(venv, 'lib', 'python3.12', 'site-packages', 'nvidia', 'cu13', 'lib'));
  });

  // The real libcublasLt.so.13 from the nvidia-cublas wheel: .ci/fetch-cublas.sh's cache, or NEUROTAP_CUBLAS_LIB.
  const cache = join(homedir(), '.cache', 'neurotap');
  const wheelLib =
    process.env.NEUROTAP_CUBLAS_LIB ??
    (existsSync(cache) ? readdirSync(cache).map((d) => join(cache, d, 'nvidia', 'cu13', 'lib')).find((d) => existsSync(join(d, 'libcublasLt.so.13'))) : undefined);
  if (!wheelLib) console.warn('skipping the real cuBLAS load: no libcublasLt.so.13 (run .ci/fetch-cublas.sh or set NEUROTAP_CUBLAS_LIB)');
  it.skipIf(!wheelLib)('loads the real libcublasLt.so.13 of the nvidia-cublas wheel from a given folder', () => {
    const dir = join(tmp, 'real');
    standIn(dir, wheelLib!, 'libcublasLt.so.13', 'cublasLtCreate');
    const found = native().probeBackend('cuda', dir, [wheelLib!]);
    expect(found.reason).toMatch(/does not implement backend ABI version/);
  });
});
