// Benchmark: attribution patching over a GPT-2-small-shaped random model (every layer's
// hook_resid_pre, attn.hook_z and hook_mlp_out), neurotap against PyTorch (HF transformers +
// torch hooks + autograd) in the same run, at the same thread count.
//
//   npx tsx bench/attribution-gpt2.ts [--seq 128] [--batch 8] [--threads 2] [--reps 5] [--warmup 1]
//       [--max-reps 15] [--max-foreign 0.3] [--quiet-wait 60] [--model DIR] [--python python3]
//
// One attribution = a forward on the clean batch caching the 36 hooks and reading the metric
// (per-row logitDiff at the last position), a forward + backward on the corrupted batch (the
// clean one with a random token at a third of the positions) capturing the 36 activations and
// their gradients, and the scores (clean - corrupted) * grad summed over the last axis (per
// head for hook_z). neurotap: model.run (logits at the last position) + model.backward +
// the scores in TypeScript. PyTorch: bench/torch-backward.py --mode attribution (no_grad clean
// forward, retain_grad() on the hooked tensors, logits_to_keep=1 in both forwards). Tokens/s =
// batch x seq / seconds per attribution. Scores of both are compared before the reps; reps
// alternate engines and orders and busy ones are left out (common.ts). Results: bench/RESULTS.md.
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel } from '../src/index.js';
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
const settings = await benchSettings(here, {}, { batch: '8' });
const { seq, threads, reps, maxReps, warmup, maxForeign, quietWait, modelDir } = settings;
const batch = positiveInt('batch', settings.extra.batch!);
const torch = await startTorchBackward(here, settings, 'attribution', ['--batch', String(batch)]);
const { worker, ready } = torch;
const clean = ready.input_ids as number[][];
const corrupted = ready.corrupted_ids as number[][];
const correct = ready.correct as number[];
const wrong = ready.wrong as number[];

const model = await loadModel(modelDir, { threads });
const L = model.config.nLayers;
const V = model.config.dVocab;
const names = Array.from({ length: L }, (_, i) => [`blocks.${i}.hook_resid_pre`, `blocks.${i}.attn.hook_z`, `blocks.${i}.hook_mlp_out`]).flat();

/** neurotap's attribution patching, composed from run() and backward(). */
async function attribute(): Promise<{ metricClean: number[]; metricCorrupted: number[]; scores: Map<string, Float32Array> }> {
  const c = await model.run(clean, { capture: names, returnLogits: 'last' });
  const logits = c.logits!.data;
  const metricClean = correct.map((a, b) => logits[b * V + a]! - logits[b * V + wrong[b]!]!);
  const k = await model.backward(corrupted, { metric: { logitDiff: { correct, wrong, position: 'last' } }, grads: names, capture: names });
  const scores = new Map<string, Float32Array>();
  for (const n of names) {
    const x = c.cache.get(n);
    const y = k.cache.get(n).data;
    const g = k.grads.get(n).data;
    const w = x.shape[x.shape.length - 1]!;
    const cx = x.data;
    const out = new Float32Array(cx.length / w);
    for (let i = 0, o = 0; o < out.length; o++) {
      let s = 0;
      for (const e = i + w; i < e; i++) s += (cx[i]! - y[i]!) * g[i]!;
      out[o] = s;
    }
    scores.set(n, out);
  }
  return { metricClean, metricCorrupted: Array.from(k.metricPerRow!), scores };
}

try {
  // Agreement: both metrics and every hook's scores, relative to the hook's largest |score|.
  const ref = (await worker.request('check')) as { metric_clean: number[]; metric_corrupted: number[]; scores: Record<string, number[]> };
  const mine = await attribute();
  let worst = 0;
  let worstName = '';
  for (const n of names) {
    const r = ref.scores[n]!;
    const m = mine.scores.get(n)!;
    if (r.length !== m.length) throw new Error(`${n}: ${m.length} scores, torch ${r.length}`);
    const scale = Math.max(...r.map(Math.abs));
    let d = 0;
    for (let i = 0; i < r.length; i++) d = Math.max(d, Math.abs(r[i]! - m[i]!));
    if (d / scale > worst) [worst, worstName] = [d / scale, n];
  }
  const metricDiff = Math.max(
    ...mine.metricClean.map((x, b) => Math.abs(x - ref.metric_clean[b]!)),
    ...mine.metricCorrupted.map((x, b) => Math.abs(x - ref.metric_corrupted[b]!)),
  );
  console.log(
    `agreement: metrics (clean and corrupted, ${batch} rows each) max |diff| ${metricDiff.toExponential(2)}; ` +
      `scores of 36 hooks: worst max |diff| / max |score| ${worst.toExponential(2)} (${worstName})`,
  );

  const variants = [
    { name: 'neurotap', run: () => timeIt(attribute) },
    { name: 'torch', run: () => workerTimed(worker, 'attr') },
  ];
  for (let i = 0; i < warmup; i++) {
    const line = [];
    for (const v of variants) line.push(`${v.name} ${(await v.run()).seconds.toFixed(3)}`);
    console.log(`warm-up ${i + 1}/${warmup}: ${line.join(', ')} s`);
  }
  const all = await alternatingReps(variants, { reps, maxReps, maxForeign, quietWait });
  torch.stop();

  const { medians, counted, allBusy } = summarizeReps(all, ['neurotap', 'torch']);
  const cpu = cpuModel();
  const date = new Date().toISOString();
  const n = batch * seq;
  const speed = medianRatio(all, 'torch', 'neurotap');
  console.log('');
  console.log(
    `attribution patching, GPT-2 small (random weights), 36 hooks, f32, batch ${batch}, seq ${seq}, ${threads} threads, ` +
      `${allBusy ? 0 : counted} quiet reps of ${all.length} (max ${maxForeign} cores used by others)${allBusy ? ' — NO QUIET REP: medians over all reps' : ''}; ${cpu}; ${date}`,
  );
  console.log('| engine | median s / attribution | tokens/s |');
  console.log('|---|---:|---:|');
  console.log(`| neurotap | ${medians.neurotap!.toFixed(3)} | ${(n / medians.neurotap!).toFixed(1)} |`);
  console.log(`| PyTorch ${String(ready.torch)} (HF + hooks + autograd) | ${medians.torch!.toFixed(3)} | ${(n / medians.torch!).toFixed(1)} |`);
  console.log(`median per-rep ratio, neurotap tokens/s / PyTorch tokens/s: ${speed.toFixed(2)}`);
  console.log(
    JSON.stringify({
      bench: 'attribution-gpt2',
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
      tokens_per_s: { neurotap: n / medians.neurotap!, torch: n / medians.torch! },
      neurotap_over_torch_speed: speed,
      agreement: { metric_max_abs_diff: metricDiff, score_worst_rel_diff: worst, score_worst_hook: worstName },
      per_rep: all,
    }),
  );
} finally {
  model.dispose();
  torch.stop();
}
