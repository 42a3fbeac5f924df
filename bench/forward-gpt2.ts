// Benchmark: full forward pass (LM head included) of a GPT-2-small-shaped random model (or,
// with --arch llama, a Llama-architecture model of the same size), neurotap against PyTorch CPU
// (HF transformers) in the same run, at the same thread count, with the machine's ceilings.
//
//   npx tsx bench/forward-gpt2.ts [--arch gpt2|llama] [--seq 1024] [--batch 1] [--dtype f32|bf16]
//       [--compute MODE] [--threads 2] [--reps 5] [--max-reps 15] [--warmup 2] [--max-foreign 0.3]
//       [--quiet-wait 60] [--model DIR] [--python python3]
//
// --dtype sets both sides: f32 against PyTorch f32, or bf16 (neurotap `dtype: 'bf16'`) against
// PyTorch with its parameters in torch.bfloat16 (bf16 compute: oneDNN). --compute, when given, is
// passed to loadModel as `compute`. The model is written by bench/make-<arch>-small.py into
// bench/out/<arch>-small unless --model says otherwise. PyTorch runs in a long-lived worker
// (bench/torch-forward.py) that times one forward per "run" line, so the two engines alternate and
// never compute at the same time; the order flips every rep. Every rep is checked for other load
// (common.ts alternatingReps): busy reps are left out of the medians, and with no quiet rep the
// figures are printed flagged. The ceilings (bench/ceiling.cc: fp32 FMA and bf16 peaks, read
// bandwidth) are measured before and after the reps; each engine's GFLOP/s (FLOPs per token from
// the config, machine.ts) is set against them. Results: bench/RESULTS.md. Not a test.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, type LoadModelOptions } from '../src/index.js';
import { alternatingReps, benchSettings, cpuModel, medianRatio, positiveInt, quietness, repRange, startWorker, summarizeReps, timeIt, workerTimed } from './common.js';
import { bestOf, bf16Peak, ceilingLines, computeNote, cpuFlags, flopsPerToken, fp32Peak, machineLine, measureCeilings, modelShape } from './machine.js';

const here = dirname(fileURLToPath(import.meta.url));
const s = await benchSettings(here, { seq: '1024', reps: '5', maxReps: '15', warmup: '2' }, { batch: '1', arch: 'gpt2', dtype: 'f32', compute: '' });
const { seq, threads, maxForeign, quietWait, modelDir } = s;
const batch = positiveInt('batch', s.extra.batch!);
const dtype = s.extra.dtype!;
if (dtype !== 'f32' && dtype !== 'bf16') throw new Error(`--dtype must be f32 or bf16, not ${dtype}`);
const compute = s.extra.compute || undefined;
const quiet = { maxForeign, quietWait };

console.log(`machine: ${machineLine()}`);
const ceilingsBefore = await measureCeilings(here, threads, quiet);
for (const l of ceilingLines(ceilingsBefore, maxForeign)) console.log(l);

// PyTorch first (it loads and warms up alone), then neurotap.
const torch = await startWorker(s.python, join(here, 'torch-forward.py'), [modelDir, '--seq', String(seq), '--batch', String(batch), '--dtype', dtype], threads);
const { worker, ready } = torch;
const tokens = ready.input_ids as number[][];
const torchHead = ready.logits_last_row_head as number[];
console.log(
  `torch ${String(ready.torch)}, transformers ${String(ready.transformers)}, ${String(ready.threads)} threads, parameters ${String(ready.dtype)}, ` +
    `attention '${String(ready.attn_implementation)}', warm-up ${(ready.warmup_seconds as number).toFixed(3)} s`,
);

// `compute` is passed through as given, whether or not this build of neurotap knows it yet.
const loadOptions = { threads, dtype, ...(compute ? { compute } : {}) } as LoadModelOptions;
const model = await loadModel(modelDir, loadOptions);
if (compute) console.log(computeNote(model, compute));
try {
  const t0 = performance.now();
  const warm = await model.run(tokens, { capture: [] });
  const warmSeconds = (performance.now() - t0) / 1000;
  // Same tokens, same weights: the first 16 logits of batch row 0's last position, against torch's.
  const V = model.config.dVocab;
  const row0 = warm.logits!.data.subarray((seq - 1) * V, (seq - 1) * V + torchHead.length);
  const maxDiff = Math.max(...torchHead.map((x, i) => Math.abs(x - row0[i]!)));
  const maxRef = Math.max(...torchHead.map((x) => Math.abs(x)));
  console.log(
    `neurotap: ${model.threads} threads, dtype ${dtype}${compute ? `, compute ${compute}` : ''}, first forward ${warmSeconds.toFixed(3)} s; ` +
      `logits vs torch, max |diff| over 16 values: ${maxDiff.toExponential(2)} (largest |logit| ${maxRef.toFixed(3)})`,
  );

  const variants = [
    { name: 'neurotap', run: () => timeIt(() => model.run(tokens, { capture: [] })) },
    { name: 'torch', run: () => workerTimed(worker, 'run') },
  ];
  for (let i = 0; i < s.warmup; i++) {
    const line = [];
    for (const v of variants) line.push(`${v.name} ${(await v.run()).seconds.toFixed(3)}`);
    console.log(`warm-up ${i + 1}/${s.warmup}: ${line.join(', ')} s`);
  }
  const all = await alternatingReps(variants, { reps: s.reps, maxReps: s.maxReps, maxForeign, quietWait });
  torch.stop();
  const ceilingsAfter = await measureCeilings(here, threads, quiet);
  for (const l of ceilingLines(ceilingsAfter, maxForeign)) console.log(l.replace(/^ceiling/, 'ceiling (after)'));

  // Summary. A ceiling measured under load only reads low, so the higher of the two counts.
  const ceil = {
    fp32_fma_512: bestOf(ceilingsBefore.fp32_fma_512, ceilingsAfter.fp32_fma_512),
    fp32_fma_256: bestOf(ceilingsBefore.fp32_fma_256, ceilingsAfter.fp32_fma_256),
    bf16_avx512: bestOf(ceilingsBefore.bf16_avx512, ceilingsAfter.bf16_avx512),
    bf16_amx: bestOf(ceilingsBefore.bf16_amx, ceilingsAfter.bf16_amx),
  };
  const fp32 = fp32Peak(ceil, threads);
  const bf16 = bf16Peak(ceil, threads);
  const { medians } = summarizeReps(all, ['neurotap', 'torch']);
  const q = quietness(all, maxForeign);
  const n = batch * seq;
  const flops = flopsPerToken(modelShape(modelDir), (seq + 1) / 2);
  const ratio = medianRatio(all, 'torch', 'neurotap'); // neurotap tok/s over torch tok/s, per rep
  const cpu = cpuModel();
  const date = new Date().toISOString();
  const pct = (gflops: number, peak: number | undefined) => (peak ? `${((100 * gflops) / peak).toFixed(0)}%` : '-');
  console.log('');
  console.log(
    `${s.arch === 'llama' ? 'Llama (GQA, SwiGLU, RoPE) of GPT-2-small size' : 'GPT-2 small'} (random weights), ${dtype}${compute ? ` compute ${compute}` : ''}, ` +
      `batch ${batch}, seq ${seq}, ${threads} threads; ${cpu}; ${date}`,
  );
  console.log(q.line);
  const ceilingBusy = ceilingsBefore.foreignCores > maxForeign && ceilingsAfter.foreignCores > maxForeign;
  console.log(
    `${(flops / 1e6).toFixed(1)} MFLOP per token; fp32 FMA peak ${fp32?.toFixed(0) ?? '-'} GFLOP/s, bf16 peak ${bf16?.toFixed(0) ?? '-'} GFLOP/s on ${threads} threads` +
      (ceilingBusy ? ' (both ceiling measurements BUSY: the peaks read low and the fractions high)' : ''),
  );
  console.log('| engine | median s / forward | range over counted reps | tokens/s | GFLOP/s | of fp32 peak | of bf16 peak |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  const rows: Record<string, unknown>[] = [];
  for (const [label, key] of [['neurotap', 'neurotap'], [`PyTorch ${String(ready.torch)}`, 'torch']] as const) {
    const sec = medians[key]!;
    const gflops = (n * flops) / sec / 1e9;
    rows.push({ engine: key, median_s: sec, tokens_per_s: n / sec, gflops });
    console.log(`| ${label} | ${sec.toFixed(3)} | ${repRange(all, key)} | ${(n / sec).toFixed(1)} | ${gflops.toFixed(0)} | ${pct(gflops, fp32)} | ${pct(gflops, bf16)} |`);
  }
  console.log(
    `${q.flagged ? 'FLAGGED (every rep busy, not a result): ' : ''}median per-rep ratio, neurotap tokens/s / PyTorch tokens/s: ${ratio.toFixed(3)} ` +
      `(ratio of medians ${(medians.torch! / medians.neurotap!).toFixed(3)})`,
  );
  console.log(
    JSON.stringify({
      bench: 'forward-gpt2',
      model: `${s.arch}-small-random`,
      dtype,
      compute: compute ?? null,
      batch,
      seq,
      threads,
      cpu,
      cpu_flags: cpuFlags().present,
      date,
      torch: ready.torch,
      transformers: ready.transformers,
      quiet_reps: q.quiet,
      reps: q.all,
      flagged: q.flagged,
      max_foreign_cores: maxForeign,
      flops_per_token: flops,
      ceilings: { before: ceilingsBefore, after: ceilingsAfter, fp32_peak: fp32 ?? null, bf16_peak: bf16 ?? null, busy: ceilingBusy },
      engines: rows,
      median_ratio: ratio,
      logits_max_abs_diff: maxDiff,
      per_rep: all,
    }),
  );
} finally {
  model.dispose();
  torch.stop();
}
