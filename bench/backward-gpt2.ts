// Benchmark: a backward pass to every block's input (blocks.*.hook_resid_pre) of a GPT-2-small-
// shaped random model against the forward alone, neurotap and PyTorch (HF transformers + hooks
// + autograd) in the same run, at the same thread count.
//
//   npx tsx bench/backward-gpt2.ts [--seq 128] [--batch 1] [--threads 2] [--reps 5] [--warmup 1]
//       [--max-reps 15] [--max-foreign 0.3] [--quiet-wait 60] [--model DIR] [--python python3]
//
// Metric: logitDiff at the last position (random correct/wrong tokens). Six variants, once per
// rep, in an order reversed every rep: neurotap run() with every position's logits and with the
// last position's only, neurotap backward(); PyTorch forward under inference_mode with all
// logits and with logits_to_keep=1, and forward (logits_to_keep=1) + metric.backward() with
// retain_grad() on the 12 block inputs (parameters frozen: no weight gradients on either side).
// PyTorch runs in a long-lived worker (bench/torch-backward.py), so only one engine computes at
// a time. Each rep is checked for other load (common.ts alternatingReps) and busy reps are left
// out. Before the reps, the gradients of both engines are compared. Results: bench/RESULTS.md.
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/index.js';
import {
  alternatingReps,
  cpuModel,
  benchSettings,
  loadAvg1,
  median,
  medianRatio,
  positiveInt,
  startTorchBackward,
  summarizeReps,
  timeIt,
  workerTimed,
} from './common.js';

const here = dirname(fileURLToPath(import.meta.url));
const settings = await benchSettings(here, {}, { batch: '1' });
const { seq, threads, reps, maxReps, warmup, maxForeign, quietWait, modelDir } = settings;
const batch = positiveInt('batch', settings.extra.batch!);
const torch = await startTorchBackward(here, settings, 'backward', ['--batch', String(batch)]);
const { worker, ready } = torch;
const tokens = ready.input_ids as number[][];
const correct = ready.correct as number[];
const wrong = ready.wrong as number[];

const model = await loadModel(modelDir, { threads });
const L = model.config.nLayers;
const grads = Array.from({ length: L }, (_, i) => `blocks.${i}.hook_resid_pre`);
const backward = () => model.backward(tokens, { metric: { logitDiff: { correct, wrong, position: 'last' } }, grads });
try {
  // Agreement: the metric and every layer's gradient, against torch's.
  const ref = (await worker.request('check')) as { metric: number; grads: { first: number[]; last: number[]; max_abs: number; sumsq: number }[] };
  const mine = await backward();
  let worst = 0;
  let worstSumsq = 0;
  for (let i = 0; i < L; i++) {
    const g = mine.grads.get(grads[i]!)!.data;
    const r = ref.grads[i]!;
    const W = model.config.dModel;
    const lastRow = (seq - 1) * W;
    let d = 0;
    for (let k = 0; k < 32; k++) d = Math.max(d, Math.abs(g[k]! - r.first[k]!), Math.abs(g[lastRow + k]! - r.last[k]!));
    let ss = 0;
    for (let k = 0; k < seq * W; k++) ss += g[k]! * g[k]!;
    worst = Math.max(worst, d / r.max_abs);
    worstSumsq = Math.max(worstSumsq, Math.abs(ss - r.sumsq) / r.sumsq);
  }
  const agreement = {
    metric_neurotap: mine.metric,
    metric_torch: ref.metric,
    grad_max_abs_diff_over_max_abs: worst,
    grad_sumsq_rel_diff: worstSumsq,
  };
  console.log(
    `agreement: metric ${mine.metric!.toFixed(6)} vs torch ${ref.metric.toFixed(6)}; gradients at 12 hook_resid_pre, 64 values each: ` +
      `max |diff| / max |g| ${worst.toExponential(2)}; sum of squares, worst relative diff ${worstSumsq.toExponential(2)}`,
  );

  const variants = [
    { name: 'nt_fwd_all', run: () => timeIt(() => model.run(tokens, { capture: [] })) },
    { name: 'nt_fwd_last', run: () => timeIt(() => model.run(tokens, { capture: [], returnLogits: 'last' })) },
    { name: 'nt_bwd', run: () => timeIt(backward) },
    { name: 'pt_fwd_all', run: () => workerTimed(worker, 'fwd_all') },
    { name: 'pt_fwd_last', run: () => workerTimed(worker, 'fwd_last') },
    { name: 'pt_bwd', run: () => workerTimed(worker, 'bwd') },
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
  const n = batch * seq;
  const ratio = (a: string, b: string) => medianRatio(all, a, b);
  console.log('');
  console.log(
    `GPT-2 small (random weights), f32, batch ${batch}, seq ${seq}, ${threads} threads, ${allBusy ? 0 : counted} quiet reps of ${all.length} ` +
      `(max ${maxForeign} cores used by others)${allBusy ? ' — NO QUIET REP: medians over all reps' : ''}; ${cpu}; ${date}`,
  );
  console.log('| engine | forward, all logits | forward, last logits | forward + backward | backward pass / forward (all) | / forward (last) |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const [label, p] of [['neurotap', 'nt'], [`PyTorch ${String(ready.torch)}`, 'pt']] as const)
    console.log(
      `| ${label} | ${medians[`${p}_fwd_all`]!.toFixed(3)} s | ${medians[`${p}_fwd_last`]!.toFixed(3)} s | ${medians[`${p}_bwd`]!.toFixed(3)} s | ` +
        `${ratio(`${p}_bwd`, `${p}_fwd_all`).toFixed(2)}x | ${ratio(`${p}_bwd`, `${p}_fwd_last`).toFixed(2)}x |`,
    );
  console.log(
    `neurotap speed / PyTorch speed (median per-rep ratio of PyTorch s / neurotap s): forward all ${ratio('pt_fwd_all', 'nt_fwd_all').toFixed(2)}, ` +
      `forward last ${ratio('pt_fwd_last', 'nt_fwd_last').toFixed(2)}, forward + backward ${ratio('pt_bwd', 'nt_bwd').toFixed(2)} ` +
      `(${(n / medians.nt_bwd!).toFixed(1)} vs ${(n / medians.pt_bwd!).toFixed(1)} tokens/s)`,
  );
  console.log(
    JSON.stringify({
      bench: 'backward-gpt2',
      batch,
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
      bwd_over_fwd_all: { neurotap: ratio('nt_bwd', 'nt_fwd_all'), torch: ratio('pt_bwd', 'pt_fwd_all') },
      bwd_over_fwd_last: { neurotap: ratio('nt_bwd', 'nt_fwd_last'), torch: ratio('pt_bwd', 'pt_fwd_last') },
      neurotap_over_torch_speed: { fwd_all: ratio('pt_fwd_all', 'nt_fwd_all'), fwd_last: ratio('pt_fwd_last', 'nt_fwd_last'), bwd: ratio('pt_bwd', 'nt_bwd') },
      agreement,
      per_rep: all,
      foreign_median: median(all.map((r) => r.foreignCores)),
    }),
  );
} finally {
  model.dispose();
  torch.stop();
}
