// Benchmark: batch-1 decode speed against the memory-bandwidth roofline. A 128-token prompt,
// then 64 greedy tokens, on a GPT-2-small-shaped random model (or, with --arch llama, the
// Llama-architecture one of the same size), f32 and bf16 weights; choosing tokens in the engine
// (`model.generate`) against the same loop sampling in JS over each step's copied logits.
//
//   npx tsx bench/decode.ts [--arch gpt2|llama] [--dtype f32,bf16] [--prompt 128] [--new 64]
//       [--temperature 0] [--top-k 0] [--top-p 1] [--threads 2] [--reps 5] [--max-reps 15]
//       [--max-foreign 0.3] [--quiet-wait 60] [--model DIR]
//
// Greedy by default; with --temperature the JS loop draws with sampleToken and the same seed.
// Decode tokens/s counts the steps after the prompt forward: (new - 1) tokens over the time from
// the first token to the last. The machine's bandwidth is measured in the same run (bench/membw.cc,
// built here with g++, before and after the reps); the roofline is that bandwidth over the weight
// bytes one decode step reads (every matrix in its dtype, the LM head, the f32 vectors; the KV
// cache is reported beside it). Reps alternate their order and busy ones are left out (common.ts).
// Not a test: timings on a shared 2-core machine are noisy.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadModel, Rng, sampleToken, type Model } from '../src/index.js';
import { alternatingReps, cpuModel, loadAvg1, positiveInt, prng, summarizeReps, type Timed } from './common.js';

const here = dirname(fileURLToPath(import.meta.url));
const { values: flags } = parseArgs({
  options: {
    arch: { type: 'string', default: 'gpt2' },
    dtype: { type: 'string', default: 'f32,bf16' },
    prompt: { type: 'string', default: '128' },
    new: { type: 'string', default: '64' },
    temperature: { type: 'string', default: '0' },
    'top-k': { type: 'string', default: '0' },
    'top-p': { type: 'string', default: '1' },
    threads: { type: 'string', default: '2' },
    reps: { type: 'string', default: '5' },
    'max-reps': { type: 'string', default: '15' },
    'max-foreign': { type: 'string', default: '0.3' },
    'quiet-wait': { type: 'string', default: '60' },
    model: { type: 'string' },
    python: { type: 'string', default: process.env.PYTHON ?? 'python3' },
  },
});
if (flags.arch !== 'gpt2' && flags.arch !== 'llama') throw new Error(`--arch must be gpt2 or llama, not ${flags.arch}`);
const dtypes = flags.dtype.split(',') as ('f32' | 'bf16')[];
for (const d of dtypes) if (d !== 'f32' && d !== 'bf16') throw new Error(`--dtype takes f32 and/or bf16, not ${d}`);
const P = positiveInt('prompt', flags.prompt);
const N = positiveInt('new', flags.new);
if (N < 2) throw new Error('--new must be at least 2 (one prompt forward, then decode steps)');
const threads = positiveInt('threads', flags.threads);
const sampling = { temperature: Number(flags.temperature), topK: Number(flags['top-k']), topP: Number(flags['top-p']), seed: 42 };
const greedy = sampling.temperature === 0;
const modelDir = resolve(flags.model ?? join(here, 'out', `${flags.arch}-small`));

// 1. The model and the bandwidth probe.
if (!existsSync(join(modelDir, 'config.json'))) {
  console.log(`writing ${modelDir} ...`);
  const r = spawnSync(flags.python, [join(here, `make-${flags.arch}-small.py`), modelDir], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`make-${flags.arch}-small.py failed (status ${r.status})`);
}
const membwSrc = join(here, 'membw.cc');
const membwBin = join(here, 'out', 'membw');
if (!existsSync(membwBin) || statSync(membwBin).mtimeMs < statSync(membwSrc).mtimeMs) {
  mkdirSync(join(here, 'out'), { recursive: true });
  execFileSync('g++', ['-std=c++17', '-O3', '-march=native', membwSrc, '-o', membwBin, '-lpthread'], { stdio: 'inherit' });
}
const bandwidth = (): { read_gbs: number; triad_gbs: number } => JSON.parse(execFileSync(membwBin, [String(threads), '1024', '5'], { encoding: 'utf8' }));

// 2. What one decode step reads: every weight matrix once, in the model's dtype (the tied GPT-2
// head reads the embedding table), the f32 norm and bias vectors; the KV cache beside it.
function stepBytes(model: Model, dtype: 'f32' | 'bf16'): { weights: number; kvAtMid: number } {
  const c = model.config;
  const w = dtype === 'bf16' ? 2 : 4;
  const dq = c.nHeads * c.dHead;
  const dkv = c.nKvHeads * c.dHead;
  const matrices = c.dModel * (dq + 2 * dkv) + dq * c.dModel + (c.gatedMlp ? 3 : 2) * c.dModel * c.dMlp;
  const gpt2 = c.family === 'gpt2';
  const vectors = gpt2 ? dq + 2 * dkv + c.dModel + c.dMlp + c.dModel + 4 * c.dModel : 2 * c.dModel;
  const weights = c.nLayers * (matrices * w + vectors * 4) + c.dVocab * c.dModel * w + (gpt2 ? 2 : 1) * c.dModel * 4;
  // Keys and values of every layer at the middle of the decode (f32).
  const kvAtMid = c.nLayers * 2 * (P + N / 2) * dkv * 4;
  return { weights, kvAtMid };
}

// 3. The two loops. Both time the decode steps only: from the first token (the prompt forward's)
// to the last.
const rand = prng(1234);
interface Loaded {
  dtype: 'f32' | 'bf16';
  model: Model;
  prompt: number[];
}
const loaded: Loaded[] = [];
for (const dtype of dtypes) {
  const model = await loadModel(modelDir, { threads, dtype });
  loaded.push({ dtype, model, prompt: Array.from({ length: P }, () => Math.floor(rand() * model.config.dVocab)) });
}
const lastTokens = new Map<string, number[]>();

async function engineLoop(l: Loaded, key: string): Promise<Timed> {
  const it = l.model.generateStream([l.prompt], { maxNewTokens: N, ...sampling });
  let r = await it.next();
  const t0 = performance.now();
  while (!r.done) r = await it.next();
  const seconds = (performance.now() - t0) / 1000;
  lastTokens.set(key, r.value.newTokens[0]!);
  return { seconds };
}

// What generation did before sampling moved into the engine: every step copies its [1, vocab]
// logits to JS, which chooses the token (sampleToken, the same seeded stream).
async function jsLoop(l: Loaded, key: string): Promise<Timed> {
  const m = l.model;
  const cache = m.createCache(1, P + N);
  const common = { batch: 1, capture: [] as string[], logits: 'last' as const, maxPositions: P + N, cache };
  let out = await m.forward({ ...common, tokens: Int32Array.from(l.prompt), pos: P, pad: Int32Array.of(0) });
  const rng = new Rng(sampling.seed);
  const tokens = [sampleToken(out.logits!.data, sampling, rng)];
  const t0 = performance.now();
  while (tokens.length < N) {
    out = await m.forward({ ...common, tokens: Int32Array.of(tokens.at(-1)!), pos: 1 });
    tokens.push(sampleToken(out.logits!.data, sampling, rng));
  }
  const seconds = (performance.now() - t0) / 1000;
  lastTokens.set(key, tokens);
  return { seconds };
}

const variants = loaded.flatMap((l) => [
  { name: `${l.dtype} engine`, run: () => engineLoop(l, `${l.dtype} engine`) },
  { name: `${l.dtype} js`, run: () => jsLoop(l, `${l.dtype} js`) },
]);

try {
  const cpu = cpuModel();
  const how = greedy ? 'greedy' : `temperature ${sampling.temperature}, top-k ${sampling.topK}, top-p ${sampling.topP}`;
  console.log(`${cpu}; ${threads} threads; ${flags.arch}-small, prompt ${P}, ${N} new tokens, ${how}`);
  const bwBefore = bandwidth();
  console.log(`memory bandwidth (${threads} threads): read ${bwBefore.read_gbs} GB/s, triad ${bwBefore.triad_gbs} GB/s; load ${loadAvg1().toFixed(2)}`);
  for (const v of variants) await v.run();  // warm-up: workspace, caches, page tables
  for (const l of loaded)
    if (JSON.stringify(lastTokens.get(`${l.dtype} engine`)) !== JSON.stringify(lastTokens.get(`${l.dtype} js`)))
      throw new Error(`${l.dtype}: the engine's tokens differ from the JS loop's`);
  const reps = await alternatingReps(variants, {
    reps: positiveInt('reps', flags.reps),
    maxReps: positiveInt('max-reps', flags['max-reps']),
    maxForeign: Number(flags['max-foreign']),
    quietWait: Number(flags['quiet-wait']),
  });
  const bwAfter = bandwidth();
  console.log(`memory bandwidth after: read ${bwAfter.read_gbs} GB/s, triad ${bwAfter.triad_gbs} GB/s`);
  const { medians, counted, allBusy } = summarizeReps(
    reps,
    variants.map((v) => v.name),
  );
  const readGbs = Math.max(bwBefore.read_gbs, bwAfter.read_gbs);
  console.log('');
  console.log(`${flags.arch}-small (random weights), batch 1, prompt ${P}, ${N} new tokens (decode: ${N - 1} steps), ${how}, ${threads} threads, ${counted} ${allBusy ? 'BUSY' : 'quiet'} reps; ${cpu}; ${new Date().toISOString()}`);
  console.log(`roofline: read bandwidth ${readGbs.toFixed(1)} GB/s (best of before/after) / weight bytes per step`);
  console.log('| dtype | token choice | decode tok/s | weight MB / step | roofline tok/s | of roofline |');
  console.log('|---|---|---:|---:|---:|---:|');
  const rows = [];
  for (const l of loaded) {
    const { weights, kvAtMid } = stepBytes(l.model, l.dtype);
    const roof = (readGbs * 1e9) / weights;
    for (const s of ['engine', 'js']) {
      const name = `${l.dtype} ${s}`;
      const tps = (N - 1) / medians[name]!;
      console.log(`| ${l.dtype} | ${s} | ${tps.toFixed(1)} | ${(weights / 1e6).toFixed(1)} | ${roof.toFixed(1)} | ${((100 * tps) / roof).toFixed(0)}% |`);
      rows.push({ variant: name, decode_tokens_per_s: tps, weight_bytes_per_step: weights, kv_bytes_at_mid: kvAtMid, roofline_tokens_per_s: roof, of_roofline: tps / roof });
    }
    console.log(`  (${l.dtype}: the KV cache adds ${(kvAtMid / 1e6).toFixed(1)} MB per step at mid-decode)`);
  }
  console.log(
    JSON.stringify({
      bench: 'decode',
      arch: flags.arch,
      prompt: P,
      new_tokens: N,
      sampling,
      threads,
      cpu,
      bandwidth_before: bwBefore,
      bandwidth_after: bwAfter,
      reps: reps.map((r) => ({ ...r })),
      counted,
      all_busy: allBusy,
      rows,
    }),
  );
} finally {
  for (const l of loaded) l.model.dispose();
}
