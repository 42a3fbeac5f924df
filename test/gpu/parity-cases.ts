// The CUDA parity cases, shared by the vitest file (test/gpu/parity.test.ts, run by `npm test`,
// which skips them with the reason where there is no usable CUDA backend) and by the plain-node
// runner the device harness uses (test/gpu/run-parity.ts, compiled to .device/js; the GPU
// machine has no vitest). A case throws on failure, throws SkipCase to skip with a reason, and
// may return a line of information (errors measured, device name).
//
// Tolerances (relative error = max |ours - ref| / max |ref| per tensor, as test/helpers.ts):
// - F32_TOL = 1e-4 for CUDA f32 against the CPU backend and against HF. The CPU matches HF at
//   1e-5 with the same arithmetic; on the GPU the sums run in another order (cuBLASLt tiles and
//   split-K, tree reductions in norms, softmax and attention) and may use the fast intrinsics
//   (__expf, tanh approximations), a few ulp each. On these 2-layer O(1)-weight fixtures that
//   is 1e-6..1e-5 relative. 1e-4 leaves an order of magnitude on top, and still fails tf32
//   matmuls (10-bit mantissa: about 1e-3 relative here) and any indexing bug (O(1)).
// - BF16_TOL = 3e-2 and F16_TOL = 4e-3 on logits for bf16/f16 weights against CPU f32. The
//   CUDA backend keeps activations in f32 but rounds weights and GEMM inputs to the weight
//   dtype (as test/native/test-backend-ops.cc assumes). Emulating exactly that in PyTorch on
//   the CPU (weights and every Linear/Conv1D input rounded, f32 elsewhere) gave at most 7.2e-3
//   (bf16, mistral) and 7.5e-4 (f16, mistral) over the 7 fixtures; HF run wholly in bf16 gives
//   up to 1.1e-2. The tolerances are about 4x and 5x the emulated worst case.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { edits, loadModel, probeDevice, readSafetensors, Tensor, type Edit, type Model } from '../../src/index.js';
import type { SafetensorsEntry } from '../../src/io/safetensors.js';
import { compare, toEdit, type RefCase } from '../helpers.js';

export const F32_TOL = 1e-4;
export const BF16_TOL = 3e-2;
export const F16_TOL = 4e-3;

/** The repository root (NEUROTAP_ROOT overrides it: the compiled copy in .device/js uses it). */
export const ROOT = process.env.NEUROTAP_ROOT ?? join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const FIXTURES = join(ROOT, 'test', 'fixtures', 'models');
const INTERVENTIONS = join(ROOT, 'test', 'fixtures', 'interventions');
/** Where test/gpu/hf_parity.py wrote HF-on-the-GPU references, if it ran. */
const GPU_REF_DIR = process.env.NEUROTAP_GPU_REF_DIR ?? join(ROOT, 'bench', 'out', 'hf-gpu-ref');
const CPU_THREADS = Number(process.env.NEUROTAP_TEST_THREADS ?? 4);

/** Thrown by a case that cannot run here; the message is the reason. */
export class SkipCase extends Error {
  override name = 'SkipCase';
}

export interface GpuCase {
  name: string;
  run(): Promise<string | void>;
}

/**
 * Self-test of the cases without a GPU: NEUROTAP_GPU_TEST_DEVICE=cpu runs every "CUDA" model on
 * the CPU backend in f32 (bf16/f16 too), so each case runs its plumbing and passes trivially.
 */
const SELF_TEST = process.env.NEUROTAP_GPU_TEST_DEVICE === 'cpu';
const GPU: 'cpu' | 'cuda' = SELF_TEST ? 'cpu' : 'cuda';

/** probeDevice('cuda'), never throwing (a missing or broken addon is a reason too). */
export function cudaStatus(): { available: boolean; reason: string; device: string } {
  if (SELF_TEST) return { available: true, reason: '', device: 'cpu (NEUROTAP_GPU_TEST_DEVICE=cpu self-test)' };
  try {
    return probeDevice('cuda');
  } catch (err) {
    return { available: false, reason: `probeDevice('cuda') threw: ${(err as Error).message}`, device: '' };
  }
}

// ---------------------------------------------------------------------------------------------
// Models, loaded once per (fixture, device, dtype) and freed by disposeAll().

const loaded = new Map<string, Promise<Model>>();

function model(fixture: string, device: 'cpu' | 'cuda', dtype: 'f32' | 'bf16' | 'f16' = 'f32'): Promise<Model> {
  if (SELF_TEST) dtype = 'f32';
  const key = `${fixture}|${device}|${dtype}`;
  let m = loaded.get(key);
  if (!m) {
    m = loadModel(join(FIXTURES, fixture), { device, dtype, threads: CPU_THREADS });
    loaded.set(key, m);
  }
  return m;
}

export async function disposeAll(): Promise<void> {
  for (const m of loaded.values()) {
    try {
      (await m).dispose();
    } catch {
      // a model that failed to load has nothing to free
    }
  }
  loaded.clear();
}

// ---------------------------------------------------------------------------------------------
// Helpers.

function fixtureNames(): string[] {
  return existsSync(FIXTURES) ? readdirSync(FIXTURES).sort() : [];
}

function rows(ids: SafetensorsEntry): number[][] {
  const [B, T] = ids.shape as [number, number];
  const flat = Array.from(ids.data as Int32Array, Number);
  return Array.from({ length: B }, (_, b) => flat.slice(b * T, (b + 1) * T));
}

/** Collects comparison failures and the worst error seen. */
class Checker {
  failures: string[] = [];
  worst = 0;
  worstLabel = '';
  check(label: string, ours: Float32Array, ref: Float32Array, tol: number, shapes?: [readonly number[], readonly number[]]): number {
    if (shapes && shapes[0].join() !== shapes[1].join()) {
      this.failures.push(`${label}: shape [${shapes[0].join(', ')}] vs reference [${shapes[1].join(', ')}]`);
      return Infinity;
    }
    if (ours.length !== ref.length) {
      this.failures.push(`${label}: ${ours.length} values vs ${ref.length}`);
      return Infinity;
    }
    const c = compare(ours, ref, tol);
    if (!(c.relError <= this.worst)) {
      this.worst = c.relError;
      this.worstLabel = label;
    }
    if (!(c.relError <= tol)) this.failures.push(`${label}: rel error ${c.relError.toExponential(2)} > ${tol} (max abs ${c.maxAbsError.toExponential(2)}); first mismatches ${c.firstMismatches.join('; ')}`);
    return c.relError;
  }
  done(what: string): string {
    if (this.failures.length) {
      const shown = this.failures.slice(0, 12);
      throw new Error(`${what}: ${this.failures.length} comparison(s) failed:\n  ${shown.join('\n  ')}${this.failures.length > shown.length ? `\n  ... ${this.failures.length - shown.length} more` : ''}`);
    }
    return `worst rel error ${this.worst.toExponential(2)} (${this.worstLabel})`;
  }
}

function relError(a: Float32Array, b: Float32Array): number {
  return compare(a, b, Infinity).relError;
}

function bitwiseEqual(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

// ---------------------------------------------------------------------------------------------
// Interventions fixtures (as test/interventions.test.ts).


async function runEdits(m: Model, tokens: number[][], c: RefCase): Promise<Float32Array> {
  const hooks: Record<string, Edit[]> = {};
  for (const e of c.edits) {
    let source: Tensor | undefined;
    if (e.op === 'patch') source = (await m.run(c.source_ids!, { capture: [e.hook], returnLogits: false })).cache.get(e.hook);
    (hooks[e.hook] ??= []).push(toEdit(e, source));
  }
  return (await m.run(tokens, { hooks })).logits!.data;
}

interface GenRef {
  prompts: number[][];
  max_new_tokens: number;
  greedy: number[][];
  steer?: { hook: string; scale: number; vector: number[]; greedy: number[][] };
}

// ---------------------------------------------------------------------------------------------
// The cases.

export function buildCases(): GpuCase[] {
  const cases: GpuCase[] = [];
  const add = (name: string, run: () => Promise<string | void>) => cases.push({ name, run });

  add('device: loadModel on cuda reports the device; auto picks it', async () => {
    const m = await model('gpt2', GPU);
    if (m.device !== GPU) throw new Error(`model.device is '${m.device}', expected '${GPU}'`);
    if (!m.deviceName) throw new Error('model.deviceName is empty');
    if (m.dtype !== 'f32') throw new Error(`model.dtype is '${m.dtype}', expected 'f32'`);
    if (SELF_TEST) return `${m.deviceName} (self-test: 'auto' not checked)`;
    const auto = await loadModel(join(FIXTURES, 'gpt2'), { device: 'auto', threads: 1 });
    try {
      if (auto.device !== 'cuda') throw new Error(`device 'auto' picked '${auto.device}' although probeDevice('cuda') says available`);
    } finally {
      auto.dispose();
    }
    return `${m.deviceName}`;
  });

  add('device: a GPU older than the architectures the library was built for is refused at load', async () => {
    const m = await model('gpt2', GPU);
    if (!m.deviceName.includes('emulator')) throw new SkipCase('needs the CPU emulation of CUDA, whose compute capability a test can set');
    process.env.NT_EMU_COMPUTE_CAPABILITY = '7.5';
    try {
      await loadModel(join(FIXTURES, 'gpt2'), { device: 'cuda', threads: 1 }).then(
        (old) => {
          old.dispose();
          throw new Error('a compute capability 7.5 device was accepted by a library built for 8.0');
        },
        (err: { code?: string; message: string }) => {
          if (err.code !== 'ERR_DEVICE_UNAVAILABLE' || !/7\.5/.test(err.message) || !/8\.0/.test(err.message))
            throw new Error(`expected ERR_DEVICE_UNAVAILABLE naming 7.5 and 8.0, got ${err.code}: ${err.message}`);
        },
      );
    } finally {
      delete process.env.NT_EMU_COMPUTE_CAPABILITY;
    }
    return 'refused';
  });

  for (const name of fixtureNames()) {
    const refPath = join(FIXTURES, name, 'reference.safetensors');
    if (!existsSync(refPath)) continue;
    const ref = readSafetensors(refPath);
    const tokens = rows(ref.get('input_ids')!);
    const refHooks = [...ref.keys()].filter((k) => k !== 'input_ids' && k !== 'logits');
    const refLogits = ref.get('logits')!;

    add(`${name}: f32 logits and every hook equal HF (reference.safetensors) and the CPU backend at ${F32_TOL}`, async () => {
      const [gpu, cpu] = await Promise.all([model(name, GPU), model(name, 'cpu')]);
      const hooks = [...gpu.hookNames];
      const missing = refHooks.filter((h) => !hooks.includes(h as never));
      if (missing.length) throw new Error(`hooks missing on CUDA: ${missing.join(', ')}`);
      const g = await gpu.run(tokens, { capture: hooks });
      const c = await cpu.run(tokens, { capture: hooks });
      const vsHf = new Checker();
      const vsCpu = new Checker();
      vsHf.check('logits', g.logits!.data, refLogits.data as Float32Array, F32_TOL, [g.logits!.shape, refLogits.shape]);
      vsCpu.check('logits', g.logits!.data, c.logits!.data, F32_TOL);
      for (const h of refHooks) {
        const t = g.cache.get(h);
        const e = ref.get(h)!;
        vsHf.check(h, t.data, e.data as Float32Array, F32_TOL, [t.shape, e.shape]);
        vsCpu.check(h, t.data, c.cache.get(h).data, F32_TOL);
      }
      const failures = [...vsHf.failures.map((f) => `vs HF ${f}`), ...vsCpu.failures.map((f) => `vs CPU ${f}`)];
      if (failures.length) throw new Error(`${failures.length} comparison(s) failed:\n  ${failures.slice(0, 16).join('\n  ')}`);
      return `vs HF: ${vsHf.done('')}; vs CPU: ${vsCpu.done('')}`;
    });

    add(`${name}: backward passes (every hook's gradient; loss; forward edits, detach masks, batched seeds) equal the CPU backend at ${F32_TOL}`, async () => {
      const [gpu, cpu] = await Promise.all([model(name, GPU), model(name, 'cpu')]);
      // Per-head inputs give ln1 a head axis: their gradients are a variant of their own.
      const all = [...gpu.hookNames].filter((h) => !/hook_(attn_in|[qkv]_input)$/.test(h));
      const nL = gpu.config.nLayers;
      const seedHook = gpu.hookNames.includes(`blocks.${nL - 1}.hook_resid_mid` as never) ? `blocks.${nL - 1}.hook_resid_mid` : `blocks.${nL - 1}.hook_resid_pre`;
      const T = tokens[0]!.length;
      const seedShape = [3, tokens.length, T, gpu.config.dModel];
      const seed = new Float32Array(seedShape.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i * 0.37));
      const variants: [string, Record<string, unknown>][] = [
        ['logitDiff, every hook', { metric: { logitDiff: { position: 'last', correct: 1, wrong: 2 } }, grads: all }],
        ['loss with edits and detach', {
          metric: 'loss',
          grads: ['blocks.*.hook_resid_pre', 'blocks.*.attn.hook_z', 'blocks.*.mlp.hook_pre'],
          hooks: { 'blocks.0.attn.hook_z': edits.zero({ heads: [1] }), 'blocks.0.hook_resid_pre': edits.scale(0.5) },
          detach: ['pattern', 'normScale', 'mlpAct'],
        }],
        ['per-head inputs', { metric: { logProb: { position: 'all', token: 3 } }, grads: ['blocks.*.hook_q_input', 'blocks.*.hook_v_input', 'blocks.*.attn.hook_result'] }],
        ['3 batched seeds', { seeds: { [seedHook]: new Tensor(seedShape, seed) }, grads: ['blocks.*.hook_resid_pre', 'blocks.*.attn.hook_pattern'] }],
      ];
      const vsCpu = new Checker();
      for (const [label, opts] of variants) {
        const g = await gpu.backward(tokens, opts as never);
        const c = await cpu.backward(tokens, opts as never);
        if (g.metric !== null) vsCpu.check(`${label}: metric`, Float32Array.of(g.metric), Float32Array.of(c.metric!), F32_TOL);
        for (const [h, t] of c.grads) vsCpu.check(`${label}: ${h}`, g.grads.get(h).data, t.data, F32_TOL, [g.grads.get(h).shape, t.shape]);
      }
      return vsCpu.done('backward');
    });

    add(`${name}: f32 captures do not change the logits beyond ${F32_TOL} (fused vs instrumented attention)`, async () => {
      const gpu = await model(name, GPU);
      const plain = await gpu.run(tokens);
      const hooked = await gpu.run(tokens, { capture: ['blocks.*.attn.hook_pattern', 'blocks.*.ln1.hook_normalized'] });
      const again = await gpu.run(tokens);
      const rel = relError(hooked.logits!.data, plain.logits!.data);
      if (!(rel <= F32_TOL)) throw new Error(`logits with captures differ from logits without by ${rel.toExponential(2)}`);
      const det = bitwiseEqual(plain.logits!.data, again.logits!.data);
      if (!det) throw new Error(`two identical runs gave different logits (rel ${relError(again.logits!.data, plain.logits!.data).toExponential(2)}): nondeterminism or a race`);
      return `captured vs plain rel ${rel.toExponential(2)}${bitwiseEqual(plain.logits!.data, hooked.logits!.data) ? ' (bitwise equal)' : ''}; repeat run bitwise equal`;
    });

    add(`${name}: f32 logits equal HF run on the GPU (test/gpu/hf_parity.py) at ${F32_TOL}`, async () => {
      const file = join(GPU_REF_DIR, `${name}.safetensors`);
      if (!existsSync(file)) throw new SkipCase(`no ${file}: run python3 test/gpu/hf_parity.py --out ${GPU_REF_DIR} first`);
      const hf = readSafetensors(file);
      const gpu = await model(name, GPU);
      const resid = [...gpu.hookNames].filter((h) => h.endsWith('hook_resid_pre'));
      const g = await gpu.run(rows(hf.get('input_ids')!), { capture: resid });
      const chk = new Checker();
      chk.check('logits', g.logits!.data, hf.get('logits.f32')!.data as Float32Array, F32_TOL);
      for (const h of resid) {
        const e = hf.get(`hidden.f32.${h}`);
        if (e) chk.check(h, g.cache.get(h).data, e.data as Float32Array, F32_TOL);
      }
      const hfVsCpuRef = relError(hf.get('logits.f32')!.data as Float32Array, refLogits.data as Float32Array);
      return `${chk.done('vs HF on the GPU')}; HF GPU vs HF CPU logits ${hfVsCpuRef.toExponential(2)}`;
    });

    for (const [dtype, tol] of [['bf16', BF16_TOL], ['f16', F16_TOL]] as const) {
      add(`${name}: ${dtype} logits equal the CPU backend (f32) at ${tol}`, async () => {
        const [gpu, cpu] = await Promise.all([model(name, GPU, dtype), model(name, 'cpu')]);
        if (gpu.dtype !== dtype && !SELF_TEST) throw new Error(`model.dtype is '${gpu.dtype}', expected '${dtype}'`);
        const g = await gpu.run(tokens, { capture: ['blocks.*.hook_resid_post'] });
        const c = await cpu.run(tokens, { capture: ['blocks.*.hook_resid_post'] });
        const chk = new Checker();
        const rel = chk.check('logits', g.logits!.data, c.logits!.data, tol);
        // The residual stream is informational: printed, not asserted.
        const resid = [...g.cache.keys()].map((h) => `${h.split('.')[1]}:${relError(g.cache.get(h).data, c.cache.get(h).data).toExponential(1)}`);
        let extra = '';
        const file = join(GPU_REF_DIR, `${name}.safetensors`);
        if (existsSync(file)) {
          const hf = readSafetensors(file);
          const hfOwn = hf.get(`logits.${dtype}`);
          const emu = hf.get(`logits.${dtype}_emulated`);
          if (hfOwn) extra += `; HF in ${dtype} on the GPU vs f32: ${relError(hfOwn.data as Float32Array, refLogits.data as Float32Array).toExponential(2)}`;
          if (emu) extra += `; ours vs the emulated ${dtype} engine: ${relError(g.logits!.data, emu.data as Float32Array).toExponential(2)}`;
        }
        chk.done(`${dtype} logits`);
        return `logits rel ${rel.toExponential(2)}; resid_post by layer ${resid.join(' ')}${extra}`;
      });
    }
  }

  for (const name of ['gpt2', 'llama-gqa', 'qwen2']) {
    const specPath = join(INTERVENTIONS, `${name}.json`);
    if (!existsSync(specPath)) continue;
    add(`edits ${name}: every native edit on CUDA f32 equals HF and the CPU backend at ${F32_TOL}`, async () => {
      const spec = JSON.parse(readFileSync(specPath, 'utf8')) as { input_ids: number[][]; cases: RefCase[] };
      const ref = readSafetensors(join(INTERVENTIONS, `${name}.safetensors`));
      const [gpu, cpu] = await Promise.all([model(name, GPU), model(name, 'cpu')]);
      const chk = new Checker();
      chk.check('base logits vs HF', (await gpu.run(spec.input_ids)).logits!.data, ref.get('base.logits')!.data as Float32Array, F32_TOL);
      for (const c of spec.cases) {
        const g = await runEdits(gpu, spec.input_ids, c);
        const p = await runEdits(cpu, spec.input_ids, c);
        chk.check(`${c.name} vs HF`, g, ref.get(`${c.name}.logits`)!.data as Float32Array, F32_TOL);
        chk.check(`${c.name} vs CPU`, g, p, F32_TOL);
        if (!(compare(g, ref.get('base.logits')!.data as Float32Array, 0).maxAbsError > 1e-3)) chk.failures.push(`${c.name}: the edit changed nothing on CUDA`);
      }
      return `${spec.cases.length} cases; ${chk.done(`edits ${name}`)}`;
    });
  }

  {
    const tokens = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]];
    add('js hooks: editing in place on CUDA equals the native edit and the CPU', async () => {
      const [gpu, cpu] = await Promise.all([model('llama-gqa', GPU), model('llama-gqa', 'cpu')]);
      const v = Float32Array.from({ length: gpu.config.dModel }, (_, i) => Math.cos(i));
      const fn = (act: Tensor) => {
        for (let i = 0; i < act.data.length; i++) act.data[i]! += 2 * v[i % v.length]!;
      };
      const native = await gpu.run(tokens, { hooks: { 'blocks.0.hook_resid_post': edits.add(v, { scale: 2 }) } });
      const js = await gpu.run(tokens, { hooks: { 'blocks.0.hook_resid_post': fn } });
      const onCpu = await cpu.run(tokens, { hooks: { 'blocks.0.hook_resid_post': fn } });
      const chk = new Checker();
      chk.check('JS vs native on CUDA', js.logits!.data, native.logits!.data, 1e-6);
      chk.check('CUDA vs CPU', js.logits!.data, onCpu.logits!.data, F32_TOL);
      chk.done('js hooks');
      return `JS vs native ${bitwiseEqual(js.logits!.data, native.logits!.data) ? 'bitwise equal' : `rel ${relError(js.logits!.data, native.logits!.data).toExponential(2)}`}`;
    });

    add('js hooks: the activation handed to JS on CUDA equals the CPU one', async () => {
      const [gpu, cpu] = await Promise.all([model('llama-gqa', GPU), model('llama-gqa', 'cpu')]);
      const grab = async (m: Model) => {
        const seen = new Map<string, Float32Array>();
        const keep = (act: Tensor, ctx: { hook: string }) => void seen.set(ctx.hook, Float32Array.from(act.data));
        await m.run(tokens, { hooks: { 'blocks.0.attn.hook_z': keep, 'blocks.1.attn.hook_pattern': keep, 'blocks.1.hook_resid_mid': keep } });
        return seen;
      };
      const g = await grab(gpu);
      const c = await grab(cpu);
      const chk = new Checker();
      for (const [hook, data] of c) {
        const got = g.get(hook);
        if (!got) chk.failures.push(`${hook}: the JS hook was not called on CUDA`);
        else chk.check(hook, got, data, F32_TOL);
      }
      return chk.done('JS views');
    });

    add('js hooks: a returned tensor replaces the activation (zeros equal edits.zero) on CUDA', async () => {
      const gpu = await model('llama-gqa', GPU);
      const zeroed = await gpu.run(tokens, { hooks: { 'blocks.1.mlp.hook_post': (act) => new Tensor(act.shape, new Float32Array(act.size)) } });
      const native = await gpu.run(tokens, { hooks: { 'blocks.1.mlp.hook_post': edits.zero() } });
      const rel = relError(zeroed.logits!.data, native.logits!.data);
      if (!(rel <= 1e-6)) throw new Error(`returned zeros vs edits.zero: rel ${rel.toExponential(2)}`);
      return bitwiseEqual(zeroed.logits!.data, native.logits!.data) ? 'bitwise equal' : `rel ${rel.toExponential(2)}`;
    });

    add('js hooks: edits and functions at one hook run in order and captures see the result, on CUDA as on CPU', async () => {
      const [gpu, cpu] = await Promise.all([model('llama-gqa', GPU), model('llama-gqa', 'cpu')]);
      const go = async (m: Model) => {
        const order: number[] = [];
        const r = await m.run(tokens, {
          capture: ['blocks.0.hook_resid_pre', 'blocks.1.hook_resid_post'],
          hooks: {
            'blocks.0.hook_resid_pre': [(act) => void order.push(act.data[0]!), edits.zero({ positions: [0] }), (act) => void order.push(act.data[0]!), edits.scale(2)],
          },
        });
        return { order, r };
      };
      const g = await go(gpu);
      const c = await go(cpu);
      if (g.order[1] !== 0) throw new Error(`the second function saw ${g.order[1]} after edits.zero, expected 0`);
      const chk = new Checker();
      chk.check('first view', Float32Array.of(g.order[0]!), Float32Array.of(c.order[0]!), F32_TOL);
      chk.check('blocks.0.hook_resid_pre capture', g.r.cache.get('blocks.0.hook_resid_pre').data, c.r.cache.get('blocks.0.hook_resid_pre').data, F32_TOL);
      chk.check('blocks.1.hook_resid_post capture', g.r.cache.get('blocks.1.hook_resid_post').data, c.r.cache.get('blocks.1.hook_resid_post').data, F32_TOL);
      chk.check('logits', g.r.logits!.data, c.r.logits!.data, F32_TOL);
      return chk.done('ordered hooks');
    });
  }

  for (const name of ['gpt2', 'llama-gqa', 'gemma2'].filter((n) => existsSync(join(FIXTURES, n)))) {
    add(`TransformerLens's flag-gated hooks, edited, on CUDA equal the CPU: ${name}`, async () => {
      const [gpu, cpu] = await Promise.all([model(name, GPU), model(name, 'cpu')]);
      const ids = readSafetensors(join(FIXTURES, name, 'reference.safetensors')).get('input_ids')!;
      const [B, T] = ids.shape as [number, number];
      const tokens = Array.from({ length: B }, (_, b) => Array.from(ids.data as Int32Array).slice(b * T, (b + 1) * T).map(Number));
      const u = Float32Array.from({ length: gpu.config.dModel }, (_, i) => Math.sin(i + 1));
      const hooks: Record<string, Edit> = {
        'blocks.1.hook_q_input': edits.add(u, { heads: [1] }),
        'blocks.1.hook_k_input': edits.add(u, { heads: [0] }),
        'blocks.0.attn.hook_result': edits.zero({ heads: [0] }),
        'blocks.0.hook_mlp_in': edits.add(u),
        'ln_final.hook_scale': edits.scale(2),
        'unembed.hook_out': edits.scale(0.5),
      };
      if ((gpu.hookNames as readonly string[]).includes('blocks.0.hook_attn_in')) hooks['blocks.0.hook_attn_in'] = edits.add(u, { heads: [1] });
      const capture = [...Object.keys(hooks), 'blocks.0.ln1.hook_normalized', 'blocks.1.attn.hook_result'];
      const g = await gpu.run(tokens, { hooks, capture });
      const c = await cpu.run(tokens, { hooks, capture });
      const chk = new Checker();
      chk.check('logits', g.logits!.data, c.logits!.data, F32_TOL);
      for (const h of capture) chk.check(h, g.cache.get(h).data, c.cache.get(h).data, F32_TOL);
      return chk.done(`flag-gated hooks ${name}`);
    });
  }

  const genPath = join(INTERVENTIONS, 'generate.json');
  const genRefs = existsSync(genPath) ? (JSON.parse(readFileSync(genPath, 'utf8')) as Record<string, GenRef>) : {};
  for (const [name, ref] of Object.entries(genRefs)) {
    add(`generate ${name}: greedy tokens on CUDA f32 equal the CPU and HF (alone, left-padded batch, steered)`, async () => {
      const [gpu, cpu] = await Promise.all([model(name, GPU), model(name, 'cpu')]);
      const problems: string[] = [];
      const same = (label: string, got: number[][], want: number[][]) => {
        if (JSON.stringify(got) !== JSON.stringify(want)) problems.push(`${label}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
      };
      const alone: number[][] = [];
      for (const p of ref.prompts) alone.push((await gpu.generate([p], { maxNewTokens: ref.max_new_tokens })).tokens[0]!);
      same('alone vs HF', alone, ref.greedy);
      const cpuAlone: number[][] = [];
      for (const p of ref.prompts) cpuAlone.push((await cpu.generate([p], { maxNewTokens: ref.max_new_tokens })).tokens[0]!);
      same('alone vs CPU', alone, cpuAlone);
      same('left-padded batch vs HF', (await gpu.generate(ref.prompts, { maxNewTokens: ref.max_new_tokens })).tokens, ref.greedy);
      if (ref.steer) {
        const hooks = { [ref.steer.hook]: edits.add(ref.steer.vector, { scale: ref.steer.scale }) };
        const steered: number[][] = [];
        for (const p of ref.prompts) steered.push((await gpu.generate([p], { maxNewTokens: ref.max_new_tokens, hooks })).tokens[0]!);
        same('steered vs HF', steered, ref.steer.greedy);
        same('steered batch vs HF', (await gpu.generate(ref.prompts, { maxNewTokens: ref.max_new_tokens, hooks })).tokens, ref.steer.greedy);
      }
      if (problems.length) throw new Error(problems.join('\n'));
      return `${ref.prompts.length} prompts x ${ref.max_new_tokens} tokens${ref.steer ? ', steered too' : ''}`;
    });
  }

  add('generate bf16 (informational): how many greedy tokens agree with the CPU f32', async () => {
    const parts: string[] = [];
    for (const [name, ref] of Object.entries(genRefs)) {
      const gpu = await model(name, GPU, 'bf16');
      const got = (await gpu.generate(ref.prompts, { maxNewTokens: ref.max_new_tokens })).tokens;
      let agree = 0;
      let total = 0;
      got.forEach((row, b) => {
        const want = ref.greedy[b]!;
        for (let i = ref.prompts[b]!.length; i < want.length; i++, total++) if (row[i] === want[i]) agree++;
      });
      parts.push(`${name} ${agree}/${total}`);
    }
    return parts.join(', ');
  });

  return cases;
}
