// compute 'bf16' on the CPU (README "bf16 compute"): GEMM inputs rounded to bf16, f32 products
// and sums. References from test/fixtures/generate_bf16_compute.py (tolerances and their reasons
// in test/fixtures/README.md):
// - the policy emulated in f32 by HF (bf16 weights, every Linear's input rounded): the mode's own
//   arithmetic, so a tight tolerance, on this CPU's kernel and, in a child process capped by
//   NEUROTAP_CPU=avx512, on the rounded-A fallback;
// - HF run wholly in bf16: a distribution tolerance per position (KL divergence, top-1 agreement);
// - compute 'f32' on the same bf16 weights: the cost of rounding the GEMM inputs.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { native } from '../src/bindings/native.js';
import { loadModel, readSafetensors, type NeurotapError } from '../src/index.js';
import { compare, fixtureDir, FIXTURES, ROOT } from './helpers.js';

// The mode against its emulation: both sum the same exact products in f32, in different orders
// (1e-5 of the largest logit covers that). A GEMM input that lies within that f32 noise of a bf16
// rounding boundary may round the other way (a "flip": one bf16 ulp, 2^-8 relative, on that one
// input), which moves its position's logits (and, through keys and values, the later positions
// of its row) by up to ~1e-3. So: at least half the positions within TOL_POLICY, all within
// TOL_FLIP. Computing in f32 instead (no rounding) misses TOL_POLICY at nearly every position.
const TOL_POLICY = 1e-5;
const TOL_FLIP = 2e-3;
// Against HF in bf16, per position: KL(HF || ours) in nats, and the share of positions whose
// argmax agrees. HF keeps every activation in bf16 (residual stream, norms, softmax), which this
// mode does not, so the bound scales with how far HF's bf16 forward itself is from f32 arithmetic
// on the same weights (KL*, the largest per position): KL <= max(4 KL*, 1e-6), and 1e-2 at most.
// Measured: 0.6-2.5 KL*. Top-1 may differ where the two best logits are close: 90%.
const KL_HF_FACTOR = 4;
const KL_HF_FLOOR = 1e-6;
const KL_HF_MAX = 1e-2;
const TOP1_HF = 0.9;
// compute 'bf16' against compute 'f32' on the same bf16 weights.
const KL_F32 = 1e-3;
const TOP1_F32 = 0.9;

const ref = readSafetensors(`${FIXTURES}/reference-bf16-compute.safetensors`);
const MODELS = ['gpt2', 'llama-gqa', 'qwen2', 'pythia-serial'];

function rows(name: string): number[][] {
  const ids = ref.get(`${name}.input_ids`)!;
  const [B, T] = ids.shape as [number, number];
  return Array.from({ length: B }, (_, b) => Array.from((ids.data as Int32Array).subarray(b * T, (b + 1) * T)));
}

function logSoftmax(x: Float32Array, off: number, V: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < V; i++) max = Math.max(max, x[off + i]!);
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(x[off + i]! - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(V);
  for (let i = 0; i < V; i++) out[i] = x[off + i]! - lse;
  return out;
}

function argmax(x: Float32Array, off: number, V: number): number {
  let best = 0;
  for (let i = 1; i < V; i++) if (x[off + i]! > x[off + best]!) best = i;
  return best;
}

/** Per position: KL(p_ref || p_ours) and whether the argmaxes agree; the worst KL and the agreement share. */
function distributions(ours: Float32Array, refLogits: Float32Array, V: number): { maxKl: number; top1: number } {
  const n = refLogits.length / V;
  let maxKl = 0;
  let agree = 0;
  for (let p = 0; p < n; p++) {
    const lr = logSoftmax(refLogits, p * V, V);
    const lo = logSoftmax(ours, p * V, V);
    let kl = 0;
    for (let i = 0; i < V; i++) kl += Math.exp(lr[i]!) * (lr[i]! - lo[i]!);
    maxKl = Math.max(maxKl, kl);
    if (argmax(ours, p * V, V) === argmax(refLogits, p * V, V)) agree++;
  }
  return { maxKl, top1: agree / n };
}

/** Per position: the largest |ours - ref| relative to the largest |ref|; the share within TOL_POLICY and the worst. */
function positions(ours: Float32Array, refLogits: Float32Array, V: number): { close: number; worst: number } {
  let scale = 0;
  for (const v of refLogits) scale = Math.max(scale, Math.abs(v));
  const n = refLogits.length / V;
  let close = 0;
  let worst = 0;
  for (let p = 0; p < n; p++) {
    let e = 0;
    for (let i = p * V; i < (p + 1) * V; i++) e = Math.max(e, Math.abs(ours[i]! - refLogits[i]!) / scale);
    if (e <= TOL_POLICY) close++;
    worst = Math.max(worst, e);
  }
  return { close: close / n, worst };
}

function expectPolicy(label: string, ours: Float32Array, policy: Float32Array, V: number): void {
  const r = positions(ours, policy, V);
  expect(r.close, `${label}: ${(r.close * 100).toFixed(0)}% of positions within ${TOL_POLICY}`).toBeGreaterThanOrEqual(0.5);
  expect(r.worst, `${label}: worst position ${r.worst}`).toBeLessThanOrEqual(TOL_FLIP);
}

describe('CPU compute bf16', () => {
  for (const name of MODELS) {
    it(`${name}: matches the policy emulated in f32, HF in bf16 as a distribution, and compute f32`, async () => {
      const model = await loadModel(fixtureDir(name), { dtype: 'bf16', compute: 'bf16', threads: 2 });
      const f32 = await loadModel(fixtureDir(name), { dtype: 'bf16', threads: 2 });
      try {
        expect(model.dtype).toBe('bf16');
        expect(model.compute).toBe('bf16');
        expect(f32.compute).toBe('f32');
        const V = model.config.dVocab;
        const logits = (await model.run(rows(name), { capture: [] })).logits!.data;
        const logits32 = (await f32.run(rows(name), { capture: [] })).logits!.data;

        const policy = ref.get(`${name}.policy`)!.data as Float32Array;
        const weights = ref.get(`${name}.bf16_weights`)!.data as Float32Array;
        expectPolicy(name, logits, policy, V);
        // The check tells the policy from f32 arithmetic on the same weights.
        expect(positions(weights, policy, V).close).toBeLessThan(0.5);

        const hf = ref.get(`${name}.hf_bf16`)!.data as Float32Array;
        const vsHf = distributions(logits, hf, V);
        const hfVsF32 = distributions(hf, weights, V);
        const oursVsF32 = distributions(logits, weights, V);
        console.log(
          `${name}: vs HF bf16 max KL ${vsHf.maxKl.toExponential(2)}, top-1 ${vsHf.top1.toFixed(3)}; ` +
            `from f32 compute: ours max KL ${oursVsF32.maxKl.toExponential(2)}, HF bf16 ${hfVsF32.maxKl.toExponential(2)}`,
        );
        expect(vsHf.maxKl).toBeLessThanOrEqual(Math.min(KL_HF_MAX, Math.max(KL_HF_FACTOR * hfVsF32.maxKl, KL_HF_FLOOR)));
        expect(vsHf.top1).toBeGreaterThanOrEqual(TOP1_HF);

        // compute f32 on the same weights equals its reference (dtype 'bf16', f32 arithmetic) and
        // differs from compute bf16 by the rounding of the GEMM inputs, within the bounds.
        expect(compare(logits32, weights, 1e-5).relError).toBeLessThanOrEqual(1e-5);
        const vsF32 = distributions(logits, logits32, V);
        expect(vsF32.maxKl).toBeLessThanOrEqual(KL_F32);
        expect(vsF32.maxKl).toBeGreaterThan(0);
        expect(vsF32.top1).toBeGreaterThanOrEqual(TOP1_F32);
      } finally {
        model.dispose();
        f32.dispose();
      }
    });
  }

  it('the rounded-A fallback (NEUROTAP_CPU=avx512) matches the policy too', () => {
    const child = join(ROOT, 'test', 'bf16-compute-child.mts');
    for (const name of ['gpt2', 'llama-gqa']) {
      const r = spawnSync(process.execPath, ['--import', 'tsx', child, fixtureDir(name), JSON.stringify(rows(name))], {
        encoding: 'utf8',
        env: { ...process.env, NEUROTAP_CPU: 'avx512' },
        maxBuffer: 64 << 20,
      });
      expect(r.status, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { compute: string; logits: number[] };
      expect(out.compute).toBe('bf16');
      expectPolicy(`${name} (fallback)`, Float32Array.from(out.logits), ref.get(`${name}.policy`)!.data as Float32Array, 384);
    }
  });

  it('gradients flow through the bf16 GEMMs (f32 arithmetic over the bf16 weights)', async () => {
    const model = await loadModel(fixtureDir('llama-gqa'), { dtype: 'bf16', compute: 'bf16', threads: 2 });
    const f32 = await loadModel(fixtureDir('llama-gqa'), { dtype: 'bf16', threads: 2 });
    try {
      const hook = 'blocks.0.hook_resid_pre';
      const a = (await model.backward(rows('llama-gqa'), { metric: 'loss', grads: [hook] })).grads.get(hook).data;
      const b = (await f32.backward(rows('llama-gqa'), { metric: 'loss', grads: [hook] })).grads.get(hook).data;
      // The forward differs by the rounding of GEMM inputs; its gradient by as much, relatively.
      const c = compare(a, b, 3e-2);
      expect(c.relError, c.firstMismatches.join('; ')).toBeLessThanOrEqual(3e-2);
      expect(c.relError).toBeGreaterThan(0);
    } finally {
      model.dispose();
      f32.dispose();
    }
  });

  it('refuses compute bf16 without bf16 weights, unknown modes, and CUDA modes other than its dtype; the default is f32', async () => {
    const code = async (p: Promise<unknown>): Promise<string> => {
      try {
        await p;
      } catch (err) {
        return (err as NeurotapError).code;
      }
      return 'no error';
    };
    expect(await code(loadModel(fixtureDir('gpt2'), { compute: 'bf16' }))).toBe('ERR_UNSUPPORTED_DTYPE');
    expect(await code(loadModel(fixtureDir('gpt2'), { dtype: 'f32', compute: 'bf16' }))).toBe('ERR_UNSUPPORTED_DTYPE');
    expect(await code(loadModel(fixtureDir('gpt2'), { dtype: 'bf16', compute: 'f16' as never }))).toBe('ERR_UNSUPPORTED_DTYPE');
    // CUDA's GEMM rounds activations to the weight dtype: compute can only name it there.
    expect(await code(loadModel(fixtureDir('gpt2'), { device: 'cuda', dtype: 'bf16', compute: 'f32' }))).toBe('ERR_UNSUPPORTED_DTYPE');
    const m = await loadModel(fixtureDir('gpt2'), { dtype: 'bf16', threads: 1 });
    expect(m.compute).toBe('f32');
    m.dispose();
    // The addon checks the same without loadModel's checks in front of it.
    const raw = (options: object) =>
      code((async () => native().loadModel(fixtureDir('gpt2'), { threads: 1, device: 'cpu', dtype: 'f32', backendDir: '', ...options } as never))());
    expect(await raw({ compute: 'bf16' })).toBe('ERR_INVALID_INPUT');
    expect(await raw({ dtype: 'bf16', compute: 'int8' })).toBe('ERR_INVALID_INPUT');
    expect(await raw({ dtype: 'bf16', compute: 1 })).toBe('ERR_INVALID_INPUT');
  });
});
