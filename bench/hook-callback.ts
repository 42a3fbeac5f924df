// Benchmark: what one JS callback hook call costs (worker thread → JS thread → back), on a
// tiny model so the forward itself is small, and what reading a whole activation in the
// callback adds on GPT-2 small. Results: bench/RESULTS.md.
//
//   npx tsx bench/hook-callback.ts [--threads 2] [--reps 31] [--inner 20] [--warmup 3]
//                                  [--tiny-seq 16] [--stack 64] [--seq 128] [--big-reps 21]
//                                  [--big-stack 256] [--tiny DIR] [--model DIR] [--python python3]
//
// Part 1, tiny model (test/fixtures/models/gpt2: 2 layers, d_model 64):
//   a. no hooks, and --stack no-op callbacks listed at blocks.0.hook_resid_post: the
//      difference over --stack is the cost of one call with the compute path unchanged.
//   b. every hook of model.hookNames (but the split q/k/v inputs) with a native no-op edit (scale 1), and every hook with a
//      no-op callback: hooking attention scores/pattern and the norm scales changes what the
//      forward computes, so the native edits give the baseline with the same compute path; the
//      difference over the hook count is again the cost of one call (less one native scale).
//   One sample times --inner runs back to back (a tiny forward takes well under a millisecond).
// Part 2, GPT-2 small at --seq (bench/out/gpt2-small from bench/make-gpt2-small.py), callbacks
//   at blocks.0.hook_resid_post ([1, seq, 768]): none, --big-stack no-op callbacks, and
//   --big-stack callbacks that sum act.data. One callback's cost is below the forward's noise,
//   hence the stack: (t − t_none) / big-stack per call, and (t_sum − t_noop) / big-stack for
//   reading the zero-copy view. The summing callback also times its own body, set against the
//   same sum over a plain Float32Array outside any forward.
// Variants alternate within each rep, the order rotating and reversing every other cycle, so
// drift on a shared machine falls on all alike. Not a test.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { edits, loadModel, Tensor, type HookFunction, type HookSpec, type Model } from '../src/index.js';
import { cpuModel, median, positiveInt, prng } from './common.js';

const here = dirname(fileURLToPath(import.meta.url));

const { values: flags } = parseArgs({
  options: {
    threads: { type: 'string', default: '2' },
    reps: { type: 'string', default: '31' },
    inner: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    'tiny-seq': { type: 'string', default: '16' },
    stack: { type: 'string', default: '64' },
    seq: { type: 'string', default: '128' },
    'big-reps': { type: 'string', default: '21' },
    'big-stack': { type: 'string', default: '256' },
    tiny: { type: 'string', default: join(here, '..', 'test', 'fixtures', 'models', 'gpt2') },
    model: { type: 'string', default: join(here, 'out', 'gpt2-small') },
    python: { type: 'string', default: process.env.PYTHON ?? 'python3' },
  },
});

const threads = positiveInt('threads', flags.threads);
const reps = positiveInt('reps', flags.reps);
const inner = positiveInt('inner', flags.inner);
const warmup = flags.warmup === '0' ? 0 : positiveInt('warmup', flags.warmup);
const tinySeq = positiveInt('tiny-seq', flags['tiny-seq']);
const stack = positiveInt('stack', flags.stack);
const seq = positiveInt('seq', flags.seq);
const bigReps = positiveInt('big-reps', flags['big-reps']);
const bigStack = positiveInt('big-stack', flags['big-stack']);
const tinyDir = resolve(flags.tiny);
const modelDir = resolve(flags.model);




interface Variant {
  name: string;
  hooks: Record<string, HookSpec> | undefined;
  /** JS callback calls per forward. */
  calls: number;
}

/**
 * Times `variants` on `tokens`, `n` reps of `inner` forwards each (seconds per forward), the
 * order inside a rep rotating and reversing every other cycle. Logits are not returned, so the
 * big model's runs are not dominated by allocating them.
 */
async function measure(model: Model, tokens: number[][], variants: readonly Variant[], n: number, innerRuns: number, label: string): Promise<number[][]> {
  const once = async (v: Variant): Promise<number> => {
    const s = performance.now();
    for (let j = 0; j < innerRuns; j++) await model.run(tokens, v.hooks ? { hooks: v.hooks, returnLogits: false } : { returnLogits: false });
    return (performance.now() - s) / 1000 / innerRuns;
  };
  for (let i = 0; i < warmup; i++) for (const v of variants) await once(v);
  const V = variants.length;
  const times: number[][] = variants.map(() => []);
  for (let i = 0; i < n; i++) {
    const forward = Math.floor(i / V) % 2 === 0;
    const order = Array.from({ length: V }, (_, j) => (forward ? i + j : i + V - j) % V);
    for (const k of order) times[k]!.push(await once(variants[k]!));
    if (i % 5 === 4 || i === n - 1) console.log(`${label}: rep ${i + 1}/${n}: ${times.map((t) => `${(1e6 * t[i]!).toFixed(0)}`).join(' / ')} µs`);
  }
  return times;
}

/** Cost per call of `withFns` over `base`: difference of medians, and median of per-rep differences. */
function perCall(times: number[][], base: number, withFns: number, calls: number): { medians: number; paired: number } {
  const b = times[base]!;
  const w = times[withFns]!;
  return { medians: (median(w) - median(b)) / calls, paired: median(w.map((t, i) => t - b[i]!)) / calls };
}

const us = (s: number): string => (1e6 * s).toFixed(2);
const noop: HookFunction = () => {};
let sink = 0;  // keeps the sums observable so they are not optimized away
const sum: HookFunction = (act) => {
  const d = act.data;
  let s = 0;
  for (let i = 0; i < d.length; i++) s += d[i]!;
  sink += s;
};

const cpu = cpuModel();
const date = new Date().toISOString();
const rand = prng(99);

// Part 1: the tiny fixture model.
const tiny = await loadModel(tinyDir, { threads });
let part1: Record<string, unknown>;
try {
  const { dVocab, nCtx } = tiny.config;
  if (tinySeq > nCtx) throw new Error(`--tiny-seq ${tinySeq} is longer than the tiny model's context ${nCtx}`);
  const tokens = [Array.from({ length: tinySeq }, () => Math.floor(rand() * dVocab))];
  // Every hook but the split q/k/v inputs: edited, they take per-head projection paths, and ln1
  // may not be edited with them (README "Hooks").
  const names = tiny.hookNames.filter((n) => !/\.hook_(attn_in|[qkv]_input)$/.test(n));
  const at = 'blocks.0.hook_resid_post';
  const variants: Variant[] = [
    { name: 'no hooks', hooks: undefined, calls: 0 },
    { name: `${stack} no-op callbacks at ${at}`, hooks: { [at]: Array.from({ length: stack }, () => noop) }, calls: stack },
    { name: `native scale(1) at all ${names.length} hooks`, hooks: Object.fromEntries(names.map((n) => [n, edits.scale(1)])), calls: 0 },
    { name: `no-op callback at all ${names.length} hooks`, hooks: Object.fromEntries(names.map((n) => [n, noop])), calls: names.length },
  ];
  // Every hook fires once per forward: count the calls once to be sure.
  let count = 0;
  await tiny.run(tokens, { hooks: Object.fromEntries(names.map((n) => [n, () => void count++])), returnLogits: false });
  if (count !== names.length) throw new Error(`expected ${names.length} callback calls, got ${count}`);

  const times = await measure(tiny, tokens, variants, reps, inner, 'tiny');
  const stacked = perCall(times, 0, 1, stack);
  const everyHook = perCall(times, 2, 3, names.length);
  const everyHookVsNone = perCall(times, 0, 3, names.length);
  console.log('');
  console.log(`Tiny GPT-2 fixture (2 layers, d_model 64), batch 1, seq ${tinySeq}, ${threads} threads, no logits, ${reps} reps × ${inner} forwards after ${warmup} warm-up; ${cpu}, ${cpus().length} CPUs; ${date}`);
  console.log('| variant | JS calls / forward | median µs / forward |');
  console.log('|---|---:|---:|');
  variants.forEach((v, i) => console.log(`| ${v.name} | ${v.calls} | ${us(median(times[i]!))} |`));
  console.log(`one callback call, ${stack} at one hook vs none: ${us(stacked.medians)} µs (median of per-rep differences: ${us(stacked.paired)} µs)`);
  console.log(`one callback call, every hook vs native scale(1) at every hook: ${us(everyHook.medians)} µs (paired: ${us(everyHook.paired)} µs)`);
  console.log(`  (every hook vs no hooks, compute-path change included: ${us(everyHookVsNone.medians)} µs per call)`);
  part1 = {
    seq: tinySeq,
    reps,
    inner,
    variants: variants.map((v, i) => ({ name: v.name, calls: v.calls, seconds: times[i], median_s: median(times[i]!) })),
    per_call_stacked_s: stacked.medians,
    per_call_stacked_paired_s: stacked.paired,
    per_call_every_hook_s: everyHook.medians,
    per_call_every_hook_paired_s: everyHook.paired,
  };
} finally {
  tiny.dispose();
}

// Part 2: reading the whole activation on GPT-2 small.
if (!existsSync(join(modelDir, 'config.json')) || !existsSync(join(modelDir, 'model.safetensors'))) {
  console.log(`writing ${modelDir} ...`);
  const r = spawnSync(flags.python, [join(here, 'make-gpt2-small.py'), modelDir], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`make-gpt2-small.py failed (status ${r.status})`);
}
const big = await loadModel(modelDir, { threads });
try {
  const { dVocab, dModel } = big.config;
  const tokens = [Array.from({ length: seq }, () => Math.floor(rand() * dVocab))];
  const at = 'blocks.0.hook_resid_post';
  const n = seq * dModel;
  // The summing callback also times its own body, to set the view's read speed against a
  // plain Float32Array's without the forward's noise.
  const inside: number[] = [];
  const sumTimed: HookFunction = (act, ctx) => {
    const s = performance.now();
    sum(act, ctx);
    inside.push((performance.now() - s) / 1000);
  };
  const variants: Variant[] = [
    { name: 'no hooks', hooks: undefined, calls: 0 },
    { name: `${bigStack} no-op callbacks at ${at}`, hooks: { [at]: Array.from({ length: bigStack }, () => noop) }, calls: bigStack },
    { name: `${bigStack} summing callbacks at ${at}`, hooks: { [at]: Array.from({ length: bigStack }, () => sumTimed) }, calls: bigStack },
  ];
  const times = await measure(big, tokens, variants, bigReps, 1, 'gpt2-small');
  const noopCall = perCall(times, 0, 1, bigStack);
  const sumCall = perCall(times, 0, 2, bigStack);
  const read = perCall(times, 1, 2, bigStack);
  // The same sum over a plain Float32Array outside any forward: the cost of reading n floats.
  const plainTensor = new Tensor([1, seq, dModel], Float32Array.from({ length: n }, () => rand()));
  const jsSum: number[] = [];
  for (let r = 0; r < 101; r++) {
    const s = performance.now();
    sum(plainTensor, { hook: at, step: 0, pos0: 0, promptLength: seq });
    jsSum.push((performance.now() - s) / 1000);
  }
  const jsSumMed = median(jsSum);
  const insideMed = median(inside);
  const m0 = median(times[0]!);
  console.log('');
  console.log(`GPT-2 small (random weights), batch 1, seq ${seq} (activation [1, ${seq}, ${dModel}] = ${n} floats), ${threads} threads, no logits, ${bigReps} reps after ${warmup} warm-up; ${cpu}, ${cpus().length} CPUs; ${date}`);
  console.log('| variant | JS calls / forward | median ms / forward |');
  console.log('|---|---:|---:|');
  variants.forEach((v, i) => console.log(`| ${v.name} | ${v.calls} | ${(1000 * median(times[i]!)).toFixed(2)} |`));
  console.log(`one no-op call (${bigStack} vs none): ${us(noopCall.medians)} µs (paired ${us(noopCall.paired)} µs)`);
  console.log(`one summing call (${bigStack} vs none): ${us(sumCall.medians)} µs (paired ${us(sumCall.paired)} µs) = ${((100 * sumCall.medians) / m0).toFixed(3)}% of the forward`);
  console.log(`reading the view, summing − no-op: ${us(read.medians)} µs per call (paired ${us(read.paired)} µs)`);
  console.log(`sum timed inside the callback: ${us(insideMed)} µs (median of ${inside.length}); the same sum over a plain Float32Array: ${us(jsSumMed)} µs`);
  console.log(
    JSON.stringify({
      bench: 'hook-callback',
      threads,
      warmup,
      cpu,
      date,
      tiny: part1,
      gpt2_small: {
        seq,
        reps: bigReps,
        stack: bigStack,
        activation_floats: n,
        variants: variants.map((v, i) => ({ name: v.name, calls: v.calls, seconds: times[i], median_s: median(times[i]!) })),
        per_noop_call_s: noopCall.medians,
        per_noop_call_paired_s: noopCall.paired,
        per_sum_call_s: sumCall.medians,
        per_sum_call_paired_s: sumCall.paired,
        per_read_s: read.medians,
        per_read_paired_s: read.paired,
        sum_inside_callback_s: insideMed,
        plain_array_sum_s: jsSumMed,
      },
      sink,
    }),
  );
} finally {
  big.dispose();
}
