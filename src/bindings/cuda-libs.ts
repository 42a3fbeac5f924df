// Folders where the CUDA backend's dependencies (libcublasLt.so.13, libcudart.so.13) may be
// outside the loader's path: pip wheels (nvidia-cublas, PyTorch's) and NEUROTAP_CUDA_LIBRARY_PATH.
// native/engine/backend.cc searches them, then the CUDA toolkit. Test: test/cuda-load.test.ts.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';

// The wheels' library folders: CUDA 13 wheels share nvidia/cu13/lib; CUDA 12 ones have one per package.
const WHEEL_LIB_DIRS = [join('nvidia', 'cu13', 'lib'), join('nvidia', 'cublas', 'lib'), join('nvidia', 'cuda_runtime', 'lib')];

function pythonSitePackages(): string[] {
  // One short Python start (~30 ms), only when a CUDA model is loaded or probed.
  const r = spawnSync('python3', ['-c', 'import site; print("\\n".join(site.getsitepackages() + [site.getusersitepackages()]))'], {
    encoding: 'utf8',
    timeout: 10_000,
  });
  return r.status === 0 ? r.stdout.split('\n').filter(Boolean) : [];
}

// lib/python3.*/site-packages under a prefix (a virtualenv, conda, ~/.local).
function prefixSitePackages(prefix: string | undefined): string[] {
  if (!prefix) return [];
  const lib = join(prefix, 'lib');
  if (!existsSync(lib)) return [];
  return readdirSync(lib)
    .filter((d) => d.startsWith('python3'))
    .map((d) => join(lib, d, 'site-packages'));
}

/** Search folders from the environment, in order, each once (missing ones too: the error lists where it looked). */
export function cudaLibraryDirs(env: NodeJS.ProcessEnv = process.env, sitePackages: () => string[] = pythonSitePackages): string[] {
  const dirs = (env.NEUROTAP_CUDA_LIBRARY_PATH ?? '').split(delimiter).filter(Boolean);
  const sites = [
    ...prefixSitePackages(env.VIRTUAL_ENV),
    ...prefixSitePackages(env.CONDA_PREFIX),
    ...sitePackages(),
    ...prefixSitePackages(join(env.HOME ?? homedir(), '.local')),
  ];
  for (const site of sites) for (const sub of WHEEL_LIB_DIRS) dirs.push(join(site, sub));
  return [...new Set(dirs)];
}

let cached: string[] | undefined;

/** {@link cudaLibraryDirs} of this process, computed once. */
export function processCudaLibraryDirs(): string[] {
  cached ??= cudaLibraryDirs();
  return cached;
}
