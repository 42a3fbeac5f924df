// Benchmark: full forward pass (LM head included) of a GPT-2-small-shaped random model (or,
// with --arch llama, a Llama-architecture model of the same size), neurotap against PyTorch CPU
// (HF transformers) in the same run, at the same thread count.
//
//   npx tsx bench/forward-gpt2.ts [--arch gpt2|llama] [--seq 1024] [--batch 1] [--threads 2]
//                                 [--reps 5] [--warmup 2] [--dtype f32|bf16] [--model DIR] [--python python3]
//
// The model is written by bench/make-gpt2-small.py or bench/make-llama-small.py (into
// bench/out/gpt2-small or bench/out/llama-small unless --model says otherwise). --dtype sets
// neurotap's weight dtype only; PyTorch always runs f32. PyTorch runs in a long-lived worker
// process (bench/torch-forward.py) that
// times one forward per "run" line, so the two engines alternate rep by rep and never
// compute at the same time. The order inside a rep alternates too (A B, B A, ...), so slow
// drift on a shared machine falls on both. Results: bench/RESULTS.md. Not a test: timings
// on a shared 2-core machine are noisy.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadModel } from '../src/index.js';
import { cpuModel, median, positiveInt, WorkerChannel } from './common.js';

const here = dirname(fileURLToPath(import.meta.url));

const { values: flags } = parseArgs({
  options: {
    seq: { type: 'string', default: '1024' },
    batch: { type: 'string', default: '1' },
    threads: { type: 'string', default: '2' },
    reps: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    arch: { type: 'string', default: 'gpt2' },
    dtype: { type: 'string', default: 'f32' },
    model: { type: 'string' },
    python: { type: 'string', default: process.env.PYTHON ?? 'python3' },
  },
});

const seq = positiveInt('seq', flags.seq);
const batch = positiveInt('batch', flags.batch);
const threads = positiveInt('threads', flags.threads);
const reps = positiveInt('reps', flags.reps);
const warmup = flags.warmup === '0' ? 0 : positiveInt('warmup', flags.warmup);
if (flags.arch !== 'gpt2' && flags.arch !== 'llama') throw new Error(`--arch must be gpt2 or llama, not ${flags.arch}`);
if (flags.dtype !== 'f32' && flags.dtype !== 'bf16') throw new Error(`--dtype must be f32 or bf16, not ${flags.dtype}`);
const dtype = flags.dtype;
const maker = `make-${flags.arch}-small.py`;
const modelDir = resolve(flags.model ?? join(here, 'out', `${flags.arch}-small`));
const python = flags.python;




// 1. The model.
if (!existsSync(join(modelDir, 'config.json')) || !existsSync(join(modelDir, 'model.safetensors'))) {
  console.log(`writing ${modelDir} ...`);
  const r = spawnSync(python, [join(here, maker), modelDir], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`${maker} failed (status ${r.status})`);
}

// 2. The PyTorch worker first (it loads and warms up alone), then neurotap.
const threadEnv = { OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads) };
const child = spawn(
  python,
  [join(here, 'torch-forward.py'), modelDir, '--seq', String(seq), '--batch', String(batch), '--threads', String(threads)],
  { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...threadEnv } },
);
const worker = new WorkerChannel(child, 'torch worker');
const ready = await worker.next();
if (ready.ready !== true) throw new Error(`torch worker: unexpected first reply ${JSON.stringify(ready)}`);
const tokens = ready.input_ids as number[][];
const torchHead = ready.logits_last_row_head as number[];
console.log(
  `torch ${String(ready.torch)}, transformers ${String(ready.transformers)}, ${String(ready.threads)} threads, ` +
    `attention '${String(ready.attn_implementation)}', warm-up ${(ready.warmup_seconds as number).toFixed(3)} s`,
);

const model = await loadModel(modelDir, { threads, dtype });
try {
  const t0 = performance.now();
  const warm = await model.run(tokens, { capture: [] });
  const warmSeconds = (performance.now() - t0) / 1000;
  // Same tokens, same weights: the first logits of the last position should agree closely.
  // The worker sends the first 16 logits at batch row 0, last position.
  const V = model.config.dVocab;
  const row0 = warm.logits!.data.subarray((seq - 1) * V, (seq - 1) * V + torchHead.length);
  const maxDiff = Math.max(...torchHead.map((x, i) => Math.abs(x - row0[i]!)));
  console.log(`neurotap: ${model.threads} threads, first forward ${warmSeconds.toFixed(3)} s; logits vs torch, max |diff| over 16 values: ${maxDiff.toExponential(2)}`);

  const runNeurotap = async (): Promise<number> => {
    const s = performance.now();
    await model.run(tokens, { capture: [] });
    return (performance.now() - s) / 1000;
  };

  // 3. More warm-up (untimed in the results), alternating as in the reps.
  for (let i = 0; i < warmup; i++) {
    const a = await runNeurotap();
    const b = await worker.seconds('run');
    console.log(`warm-up ${i + 1}/${warmup}: neurotap ${a.toFixed(3)} s, torch ${b.toFixed(3)} s`);
  }

  // 4. Alternating reps.
  const nt: number[] = [];
  const pt: number[] = [];
  for (let i = 0; i < reps; i++) {
    let a: number;
    let b: number;
    if (i % 2 === 0) {
      a = await runNeurotap();
      b = await worker.seconds('run');
    } else {
      b = await worker.seconds('run');
      a = await runNeurotap();
    }
    nt.push(a);
    pt.push(b);
    console.log(
      `rep ${i + 1}/${reps} (${i % 2 === 0 ? 'neurotap first' : 'torch first'}): neurotap ${a.toFixed(3)} s, torch ${b.toFixed(3)} s, ratio ${(b / a).toFixed(3)}`,
    );
  }
  worker.quit();

  // 5. Summary.
  const n = batch * seq;
  const ntMed = median(nt);
  const ptMed = median(pt);
  const ratios = nt.map((a, i) => pt[i]! / a); // neurotap tok/s over torch tok/s, per rep
  const ratioMed = median(ratios);
  const cpu = cpuModel();
  const date = new Date().toISOString();
  console.log('');
  console.log(`${flags.arch === 'llama' ? 'Llama (GQA, SwiGLU, RoPE) of GPT-2-small size' : 'GPT-2 small'} (random weights), ${dtype}, batch ${batch}, seq ${seq}, ${threads} threads, ${reps} reps after ${warmup} warm-up; ${cpu}; ${date}`);
  console.log('| engine | median s / forward | tokens/s |');
  console.log('|---|---:|---:|');
  console.log(`| neurotap | ${ntMed.toFixed(3)} | ${(n / ntMed).toFixed(1)} |`);
  console.log(`| PyTorch ${String(ready.torch)} | ${ptMed.toFixed(3)} | ${(n / ptMed).toFixed(1)} |`);
  console.log(`median ratio (neurotap tokens/s / PyTorch tokens/s, per rep): ${ratioMed.toFixed(3)} (ratio of medians ${(ptMed / ntMed).toFixed(3)})`);
  console.log(
    JSON.stringify({
      bench: 'forward-gpt2',
      model: `${flags.arch}-small-random`,
      dtype,
      batch,
      seq,
      threads,
      reps,
      warmup,
      cpu,
      date,
      torch: ready.torch,
      transformers: ready.transformers,
      neurotap_seconds: nt,
      torch_seconds: pt,
      neurotap_median_s: ntMed,
      torch_median_s: ptMed,
      neurotap_tokens_per_s: n / ntMed,
      torch_tokens_per_s: n / ptMed,
      median_ratio: ratioMed,
      logits_max_abs_diff: maxDiff,
    }),
  );
} finally {
  model.dispose();
  if (child.exitCode === null) child.stdin.end();
}
