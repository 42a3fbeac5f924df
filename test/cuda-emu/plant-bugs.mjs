// Shows that the emulated CUDA tests can fail: plants one bug at a time in a copy of cuda/, builds
// the emulated backend from it (test/cuda-emu/build.mjs) and runs the cross-backend op test
// (test/native/test-backend-ops.cc) against it, which must FAIL on every bug; the unmodified copy
// must pass. `npm run test:cuda-plant [-- bug names...]`; exits 1 when a bug goes unnoticed.
// Env: PLANT_TIMEOUT_S (per op-test run, default 1200), PLANT_KEEP=1 keeps the temp folder.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const buildScript = join(root, 'test', 'cuda-emu', 'build.mjs');

// Each bug: one exact text (it must occur once) in one file of cuda/, and its replacement.
// tsan: only a ThreadSanitizer build shows it (the fiber schedule is deterministic, so the
// values come out right).
const bugs = [
  {
    name: 'attention-tile-barrier',
    what: 'attention.cu: no barrier before the K/V tile is overwritten',
    file: 'attention.cu',
    find: '    __syncthreads();  // every warp is done with the previous tile before it is overwritten\n',
    replace: '',
  },
  {
    name: 'attention-smem-optin',
    what: 'attention.cu: no >48 KB dynamic shared memory opt-in (cudaFuncSetAttribute)',
    file: 'attention.cu',
    find:
      '  if (smem > 48 * 1024) {\n' +
      '    const cudaError_t err = cudaFuncSetAttribute(attention_f32_kernel<NC>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));\n' +
      '    if (err != cudaSuccess) return err;\n' +
      '  }\n',
    replace: '',
  },
  {
    name: 'block-reduce-barrier',
    what: 'common.cuh: no first barrier in block_reduce_sum',
    file: 'common.cuh',
    find: '  __syncthreads();  // a previous reduction in this kernel may still be reading `partial`\n',
    replace: '',
    tsan: true,
  },
  {
    name: 'gqa-scores-head',
    what: 'attention-instrumented.cu: scores read kv head h % G instead of h / group',
    file: 'attention-instrumented.cu',
    find: 'h = item % p.H, g = h / p.group;\n  const float *qr',
    replace: 'h = item % p.H, g = h % p.G;\n  const float *qr',
  },
  {
    name: 'gqa-fused-head',
    what: 'attention.cu: fused kernel loads query head g + G * i instead of g * group + i',
    file: 'attention.cu',
    find: 'h = g * p.group + flat % p.group;\n      val = q[',
    replace: 'h = g + p.G * (flat % p.group);\n      val = q[',
  },
  {
    name: 'attention-backward-stage-barrier',
    what: 'backward-attention.cu: no barrier before a shared memory stage is overwritten',
    file: 'backward-attention.cu',
    find: '      __syncthreads();  // every thread is done with the previous stage before it is overwritten\n',
    replace: '',
    tsan: true,
  },
  {
    name: 'attention-backward-window',
    what: 'backward-attention.cu: the sliding window lets key i - window through (<= window)',
    file: 'backward-attention.cu',
    find: '(window <= 0 || qi - j < window)',
    replace: '(window <= 0 || qi - j <= window)',
  },
  {
    name: 'norm-backward-scale',
    what: 'backward-norm.cu: d s / d x divides by the passed (possibly edited) scale, not the s computed from x',
    file: 'backward-norm.cu',
    find: '    coef = dscale[r] / (static_cast<float>(d) * s);\n',
    replace: '    coef = dscale[r] / (static_cast<float>(d) * scale[r]);\n',
  },
  {
    name: 'gelu-tanh-grad',
    what: "activation.cuh: gelu tanh's derivative drops the 3 of d(x^3)/dx",
    file: 'activation.cuh',
    find: 'k * (1.0f + 3.0f * 0.044715f * x * x)',
    replace: 'k * (1.0f + 0.044715f * x * x)',
  },
  {
    name: 'softcap-backward-grad',
    what: 'backward-elementwise.cu: softcap backward uses 1 - y / cap for 1 - (y / cap)^2',
    file: 'backward-elementwise.cu',
    find: 'dx[i] = dy[i] * (1.0f - t * t);',
    replace: 'dx[i] = dy[i] * (1.0f - t);',
  },
  {
    name: 'gemm-backward-transpose',
    what: 'gemm-cublas.cu: gemm_backward multiplies by W^T (the forward transpose) instead of W',
    file: 'gemm-cublas.cu',
    find: 'return lt_matmul(be, "gemm_backward", dC, M, N, W, w_dtype, K, false, true, dA);',
    replace: 'return lt_matmul(be, "gemm_backward", dC, M, N, W, w_dtype, K, true, true, dA);',
  },
  {
    name: 'norm-oob-read',
    what: 'norm.cu: rms_norm reads x[d] (i <= d), one past the row',
    file: 'norm.cu',
    find: 'for (int64_t i = threadIdx.x; i < d; i += blockDim.x) sq += xr[i] * xr[i];',
    replace: 'for (int64_t i = threadIdx.x; i <= d; i += blockDim.x) sq += xr[i] * xr[i];',
  },
];

if (!existsSync(buildScript)) {
  console.log('test:cuda-plant: skipped: test/cuda-emu/build.mjs (the CUDA emulator build) is not in this checkout');
  process.exit(0);
}
const tsanSupported = readFileSync(buildScript, 'utf8').includes('--tsan');
const only = process.argv.slice(2).filter((a) => !a.startsWith('--'));
for (const n of only) if (!bugs.some((b) => b.name === n)) throw new Error(`unknown bug ${n}; bugs: ${bugs.map((b) => b.name).join(', ')}`);
const selected = bugs.filter((b) => !only.length || only.includes(b.name));
const timeoutMs = Number(process.env.PLANT_TIMEOUT_S || 1200) * 1000;
const work = mkdtempSync(join(tmpdir(), 'neurotap-plant-'));

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  return { ok: r.status === 0, timedOut: r.error?.code === 'ETIMEDOUT', out: `${r.stdout || ''}${r.stderr || ''}`, error: r.error };
}

// The op test, built once per flavour (TSan needs an instrumented executable too).
function opTest(tsan) {
  const out = join(work, tsan ? 'test-tsan' : 'test');
  const env = { ...process.env, NATIVE_TEST_OUT: out, NATIVE_TEST_FLAGS: `${process.env.NATIVE_TEST_FLAGS || ''}${tsan ? ' -fsanitize=thread -g' : ''}` };
  const r = run(process.execPath, [join(root, 'test', 'native', 'run.mjs'), 'test-backend-ops', '--no-run'], { env });
  if (!r.ok) throw new Error(`building test-backend-ops${tsan ? ' with TSan' : ''} failed:\n${r.out.slice(-4000)}`);
  return join(out, 'test-backend-ops');
}

// Copies cuda/, plants `bug` (or nothing), builds the emulated library, runs the op test on it.
// Returns { status: 'passed' | 'failed' | 'build failed' | 'not planted', detail }.
function trial(label, bug, tsan, exe) {
  const dir = join(work, label);
  const cuda = join(dir, 'cuda');
  cpSync(join(root, 'cuda'), cuda, { recursive: true });
  if (bug) {
    const path = join(cuda, bug.file);
    const text = readFileSync(path, 'utf8');
    const count = text.split(bug.find).length - 1;
    if (count !== 1) return { status: 'not planted', detail: `the text to change occurs ${count} times in cuda/${bug.file} (expected once)` };
    writeFileSync(path, text.replace(bug.find, bug.replace));
  }
  const lib = join(dir, 'lib');
  const b = run(process.execPath, [buildScript, '--cuda-dir', cuda, '--out', lib, ...(tsan ? ['--tsan'] : [])]);
  if (!b.ok) return { status: 'build failed', detail: b.out.slice(-2000) };
  const env = { ...process.env, NEUROTAP_BACKEND_DIR: lib, NEUROTAP_BACKEND_REQUIRED: '1' };
  if (tsan) env.TSAN_OPTIONS = `${process.env.TSAN_OPTIONS || ''} halt_on_error=1 exitcode=66`.trim();
  const t0 = Date.now();
  const r = run(exe, [], { env, timeout: timeoutMs, killSignal: 'SIGKILL' });
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  if (r.timedOut) return { status: 'failed', detail: `timed out after ${secs} s (a hang counts as caught)` };
  const lines = r.out.split('\n');
  const why = lines.filter((l) => /^FAIL |WARNING: ThreadSanitizer|^SUMMARY/.test(l)).slice(0, 3);
  return { status: r.ok ? 'passed' : 'failed', detail: `${secs} s; ${why.join(' | ') || lines.filter(Boolean).slice(-2).join(' | ')}` };
}

const rows = [];
let bad = 0;
try {
  const flavours = [];
  if (selected.some((b) => !b.tsan)) flavours.push(false);
  if (selected.some((b) => b.tsan) && tsanSupported) flavours.push(true);
  for (const tsan of flavours) {
    const exe = opTest(tsan);
    const control = trial(tsan ? 'control-tsan' : 'control', null, tsan, exe);
    rows.push({ bug: tsan ? '(none, TSan build)' : '(none)', want: 'passed', ...control });
    if (control.status !== 'passed') {
      bad++;
      console.error(`the unmodified cuda/ does not pass${tsan ? ' under TSan' : ''}: ${control.detail}`);
      for (const bug of selected.filter((b) => Boolean(b.tsan) === tsan))
        rows.push({ bug: bug.name, want: 'failed', status: 'not run', detail: 'the unmodified copy fails' });
      continue;
    }
    for (const bug of selected.filter((b) => Boolean(b.tsan) === tsan)) {
      const res = trial(bug.name, bug, tsan, exe);
      rows.push({ bug: bug.name, want: 'failed', ...res });
      if (res.status !== 'failed') bad++;
    }
  }
  for (const bug of selected.filter((b) => b.tsan && !tsanSupported))
    rows.push({ bug: bug.name, want: 'failed', status: 'skipped', detail: 'needs the TSan build; test/cuda-emu/build.mjs has no --tsan yet' });
} finally {
  if (process.env.PLANT_KEEP === '1') console.log(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
}

const w = Math.max(...rows.map((r) => r.bug.length));
console.log(`\n${'bug'.padEnd(w)}  result        detail`);
for (const r of rows) {
  const desc = bugs.find((b) => b.name === r.bug)?.what;
  console.log(`${r.bug.padEnd(w)}  ${r.status.padEnd(12)}  ${desc ? `${desc}: ` : ''}${r.detail}`);
}
console.log(bad ? `\ntest:cuda-plant: ${bad} bug(s) went unnoticed or a run could not be made` : '\ntest:cuda-plant: every planted bug was caught');
process.exit(bad ? 1 : 0);
