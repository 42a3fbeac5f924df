// Benchmark: S backward passes from seed gradients at one hook (default 64 seeds at
// blocks.6.hook_resid_mid, gradient at blocks.0.hook_resid_pre) of a GPT-2-small-shaped random
// model, batched (one forward, one backward over S replicas) against S separate passes,
// neurotap and PyTorch in the same run, at the same thread count.
//
//   npx tsx bench/seeds-gpt2.ts [--seq 128] [--seeds 64] [--layer 6] [--threads 2] [--reps 3]
//       [--warmup 1] [--max-reps 10] [--max-foreign 0.3] [--quiet-wait 60] [--model DIR] [--python python3]
//
// Both engines stop after block LAYER (neurotap stopAtLayer = LAYER + 1; PyTorch: a hook ends
// the forward there). neurotap: one backward() with seeds [S, 1, seq, 768], and S backward()
// calls with one [1, seq, 768] seed each (every call runs its own forward). PyTorch
// (bench/torch-backward.py --mode seeds): one forward, then S torch.autograd.grad calls with
// retain_graph, and one torch.autograd.grad with is_grads_batched=True (vmap over the seeds).
// The seeds come from the worker; the gradients of seeds 0 and S-1 are compared before the
// reps. Reps alternate and busy ones are left out (common.ts). Results: bench/RESULTS.md.
import { readFileSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, Tensor } from '../src/index.js';
import {
  alternatingReps,
  cpuModel,
  benchSettings,
  loadAvg1,
  medianRatio,
  positiveInt,
  startTorchBackward,
  summarizeReps,
  timeIt,
  workerTimed,
} from './common.js';

const here = dirname(fileURLToPath(import.meta.url));
const settings = await benchSettings(here, { reps: '3', maxReps: '10' }, { seeds: '64', layer: '6' });
const { seq, threads, reps, maxReps, warmup, maxForeign, quietWait, modelDir } = settings;
const S = positiveInt('seeds', settings.extra.seeds!);
const layer = Number(settings.extra.layer);
const torch = await startTorchBackward(here, settings, 'seeds', ['--seeds', String(S), '--layer', String(layer)]);
const { worker, ready } = torch;
const tokens = ready.input_ids as number[][];
const seedFile = ready.seeds_file as string;
const raw = readFileSync(seedFile);
rmSync(seedFile);
const seedData = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));

const model = await loadModel(modelDir, { threads });
const W = model.config.dModel;
const hook = `blocks.${layer}.hook_resid_mid`;
const target = 'blocks.0.hook_resid_pre';
const per = seq * W;
const batchedSeed = new Tensor([S, 1, seq, W], seedData);
const oneSeed = Array.from({ length: S }, (_, s) => new Tensor([1, seq, W], seedData.subarray(s * per, (s + 1) * per)));
const opts = { grads: [target], stopAtLayer: layer + 1 };

const batched = async () => (await model.backward(tokens, { ...opts, seeds: { [hook]: batchedSeed } })).grads.get(target);
const loop = async () => {
  const out: Tensor[] = [];
  for (const seed of oneSeed) out.push((await model.backward(tokens, { ...opts, seeds: { [hook]: seed } })).grads.get(target));
  return out;
};

try {
  type Summary = { first: number[]; last: number[]; max_abs: number };
  const ref = (await worker.request('check')) as { loop: Summary[]; batched?: Summary[]; batched_error?: string; batched_vs_loop_max_abs_diff?: number };
  if (ref.batched_error) console.log(`torch is_grads_batched failed: ${ref.batched_error}`);
  const g = await batched();
  const single0 = (await model.backward(tokens, { ...opts, seeds: { [hook]: oneSeed[0]! } })).grads.get(target).data;
  let worst = 0;
  let loopVsBatched = 0;
  for (const [i, s] of [[0, 0], [1, S - 1]] as const) {
    const r = ref.loop[i]!;
    const d = g.data.subarray(s * per, (s + 1) * per);
    let m = 0;
    for (let k = 0; k < 32; k++) m = Math.max(m, Math.abs(d[k]! - r.first[k]!), Math.abs(d[per - W + k]! - r.last[k]!));
    worst = Math.max(worst, m / r.max_abs);
  }
  for (let k = 0; k < per; k++) loopVsBatched = Math.max(loopVsBatched, Math.abs(single0[k]! - g.data[k]!));
  console.log(
    `agreement: neurotap batched vs torch (seeds 0 and ${S - 1}, 64 values each): max |diff| / max |g| ${worst.toExponential(2)}; ` +
      `neurotap one seed vs batched row 0: max |diff| ${loopVsBatched.toExponential(2)}; torch batched vs loop ${ref.batched_vs_loop_max_abs_diff ?? 'n/a'}`,
  );

  const variants = [
    { name: 'nt_batched', run: () => timeIt(batched) },
    { name: 'nt_loop', run: () => timeIt(loop) },
    { name: 'pt_loop', run: () => workerTimed(worker, 'loop') },
    ...(ref.batched_error ? [] : [{ name: 'pt_batched', run: () => workerTimed(worker, 'batched') }]),
  ];
  const names = variants.map((v) => v.name);
  for (let i = 0; i < warmup; i++) {
    const line = [];
    for (const v of variants) line.push(`${v.name} ${(await v.run()).seconds.toFixed(3)}`);
    console.log(`warm-up ${i + 1}/${warmup}: ${line.join(', ')} s`);
  }
  const all = await alternatingReps(variants, { reps, maxReps, maxForeign, quietWait });
  torch.stop();

  const { medians, counted, allBusy } = summarizeReps(all, names);
  const cpu = cpuModel();
  const date = new Date().toISOString();
  const r = (a: string, b: string) => (names.includes(a) && names.includes(b) ? medianRatio(all, a, b) : Number.NaN);
  console.log('');
  console.log(
    `${S} seeds at ${hook} -> gradient at ${target}, GPT-2 small (random weights), f32, seq ${seq}, ${threads} threads, ` +
      `${allBusy ? 0 : counted} quiet reps of ${all.length} (max ${maxForeign} cores used by others)${allBusy ? ' — NO QUIET REP: medians over all reps' : ''}; ${cpu}; ${date}`,
  );
  console.log(`| variant | median s for ${S} seeds | ms per seed |`);
  console.log('|---|---:|---:|');
  for (const n of names) console.log(`| ${n} | ${medians[n]!.toFixed(3)} | ${((medians[n]! / S) * 1000).toFixed(1)} |`);
  const speedups = {
    neurotap_batched_over_loop: r('nt_loop', 'nt_batched'),
    torch_batched_over_loop: r('pt_loop', 'pt_batched'),
    neurotap_batched_over_torch_loop: r('pt_loop', 'nt_batched'),
    neurotap_batched_over_torch_batched: r('pt_batched', 'nt_batched'),
    neurotap_loop_over_torch_loop: r('pt_loop', 'nt_loop'),
  };
  console.log(`speedups (median per-rep ratios of seconds): ${Object.entries(speedups).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(', ')}`);
  console.log(
    JSON.stringify({
      bench: 'seeds-gpt2',
      seeds: S,
      hook,
      target,
      seq,
      threads,
      cpu,
      date,
      torch: ready.torch,
      transformers: ready.transformers,
      quiet_reps: allBusy ? 0 : counted,
      reps: all.length,
      max_foreign_cores: maxForeign,
      load_now: loadAvg1(),
      medians,
      speedups,
      agreement: { vs_torch_rel: worst, one_vs_batched_abs: loopVsBatched },
      per_rep: all,
    }),
  );
} finally {
  model.dispose();
  torch.stop();
}
