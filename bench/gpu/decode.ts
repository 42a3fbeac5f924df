// Benchmark D1 (decode), neurotap side: a Llama-3.2-1B-shaped model (bench/gpu/make-model.py
// llama-1b), batch 1, greedy, with and without a steering vector added at one layer's
// `hook_resid_post`. Decode tokens/s, steering overhead, with the baseline
// (bench/gpu/hf_decode.py: HF `generate`) run by bench/gpu/run.sh on the same GPU.
//
//   node .device/js/bench/gpu/decode.js [--model DIR] [--device cuda] [--dtype bf16]
//        [--prompt-len 32] [--new-tokens 128] [--reps 3] [--layer 8] [--scale 4]
//        [--max-seconds 120] [--warmup 1]
//   npx tsx bench/gpu/decode.ts ...      (where tsx is installed)
//
// Each generation streams its steps (model.generateStream); the clock is read when step 0 (the
// prompt forward and the first token) arrives and when the last step does, so
// decode tokens/s = (new tokens - 1) / (t_last - t_first): no prefill in it. Plain and steered
// generations alternate, their order flipping every rep. Steering overhead = median steered
// time per token / median plain time per token - 1. The HBM roofline (bytes one decode step must
// read: every weight, the tied embedding as the LM head) is computed by bench/gpu/collect.py
// from `weight_bytes_per_token` and the measured copy bandwidth. Prints a JSON line
// {"bench":"D1-decode","engine":"neurotap",...}.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { edits, loadModel, type Model } from '../../src/index.js';
import { benchToken, checkpointSize, median, positiveInt, positiveNumber, randomVector } from './common.js';

const root = process.env.NEUROTAP_ROOT ?? join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values: flags } = parseArgs({
  options: {
    model: { type: 'string', default: join(root, 'bench', 'out', 'llama-1b-bf16') },
    device: { type: 'string', default: 'cuda' },
    dtype: { type: 'string', default: 'bf16' },
    'prompt-len': { type: 'string', default: '32' },
    'new-tokens': { type: 'string', default: '128' },
    reps: { type: 'string', default: '3' },
    layer: { type: 'string', default: '8' },
    scale: { type: 'string', default: '4' },
    'max-seconds': { type: 'string', default: '120' },
    warmup: { type: 'string', default: '1' },
    threads: { type: 'string', default: '4' },
  },
});
const device = flags.device as 'cpu' | 'cuda';
const dtype = flags.dtype as 'f32' | 'bf16' | 'f16';
const promptLen = positiveInt('prompt-len', flags['prompt-len']);
const newTokens = positiveInt('new-tokens', flags['new-tokens']);
if (newTokens < 2) throw new Error('--new-tokens must be at least 2 (the first token comes from the prompt forward)');
const reps = positiveInt('reps', flags.reps);
const layerFlag = Number(flags.layer);
const scale = Number(flags.scale);
const maxSeconds = positiveNumber('max-seconds', flags['max-seconds']);
const warmup = flags.warmup === '0' ? 0 : positiveInt('warmup', flags.warmup);
const threads = positiveInt('threads', flags.threads);
const modelDir = resolve(flags.model);

interface Timed {
  prefillSeconds: number;
  decodeSeconds: number;
  tokens: number[];
}

/** One generation, timed by its streamed steps. */
async function timedGenerate(model: Model, prompt: number[], n: number, hooks?: Record<string, unknown>): Promise<Timed> {
  const t0 = performance.now();
  let tFirst = 0;
  let tLast = 0;
  const tokens: number[] = [];
  const it = model.generateStream([prompt], { maxNewTokens: n, ...(hooks ? { hooks: hooks as never } : {}) });
  for await (const step of it) {
    const now = performance.now();
    if (step.step === 0) tFirst = now;
    tLast = now;
    tokens.push(step.tokens[0]!);
  }
  if (tokens.length !== n) throw new Error(`generated ${tokens.length} tokens, expected ${n} (a stop token?)`);
  return { prefillSeconds: (tFirst - t0) / 1000, decodeSeconds: (tLast - tFirst) / 1000, tokens };
}

const tLoad = performance.now();
const model = await loadModel(modelDir, { device, dtype, threads });
const loadSeconds = (performance.now() - tLoad) / 1000;
try {
  const { nLayers, dModel, dVocab, tiedEmbeddings } = model.config;
  const layer = Number.isInteger(layerFlag) && layerFlag >= 0 && layerFlag < nLayers ? layerFlag : nLayers >> 1;
  const size = checkpointSize(modelDir, tiedEmbeddings);
  const prompt = Array.from({ length: promptLen }, (_, i) => benchToken(i, dVocab));
  const v = randomVector(dModel, 7);
  const norm = Math.hypot(...v);
  for (let i = 0; i < dModel; i++) v[i]! /= norm;
  const hook = `blocks.${layer}.hook_resid_post`;
  const steer = { [hook]: edits.add(v, { scale }) };
  console.log(
    `D1 decode: ${modelDir} on ${model.device} (${model.deviceName}), weights ${model.dtype}; ${nLayers} layers, d_model ${dModel}, vocab ${dVocab}; ` +
      `prompt ${promptLen}, ${newTokens} new tokens, ${reps} reps; steering: add a unit vector x ${scale} at ${hook}; ` +
      `${(size.bytesPerDecodeToken / 1e9).toFixed(3)} GB of weights read per token (${size.dtypes.join(',')} on disk); load ${loadSeconds.toFixed(2)} s`,
  );

  for (let i = 0; i < warmup; i++) {
    await timedGenerate(model, prompt, Math.min(8, newTokens));
    await timedGenerate(model, prompt, Math.min(8, newTokens), steer);
  }
  const plain: Timed[] = [];
  const steered: Timed[] = [];
  const t0 = performance.now();
  for (let r = 0; r < reps; r++) {
    if ((performance.now() - t0) / 1000 > maxSeconds && plain.length && steered.length) break;
    if (r % 2 === 0) {
      plain.push(await timedGenerate(model, prompt, newTokens));
      steered.push(await timedGenerate(model, prompt, newTokens, steer));
    } else {
      steered.push(await timedGenerate(model, prompt, newTokens, steer));
      plain.push(await timedGenerate(model, prompt, newTokens));
    }
    const p = plain[plain.length - 1]!;
    const s = steered[steered.length - 1]!;
    console.log(
      `rep ${r + 1}: plain ${((newTokens - 1) / p.decodeSeconds).toFixed(1)} tok/s (prefill ${(p.prefillSeconds * 1000).toFixed(1)} ms), ` +
        `steered ${((newTokens - 1) / s.decodeSeconds).toFixed(1)} tok/s`,
    );
  }
  const perToken = (xs: Timed[]) => median(xs.map((x) => x.decodeSeconds / (newTokens - 1)));
  const plainPer = perToken(plain);
  const steeredPer = perToken(steered);
  const result = {
    bench: 'D1-decode',
    engine: 'neurotap',
    device: model.device,
    device_name: model.deviceName,
    weights_dtype: model.dtype,
    model: modelDir,
    layers: nLayers,
    d_model: dModel,
    vocab: dVocab,
    batch: 1,
    prompt_len: promptLen,
    new_tokens: newTokens,
    reps: plain.length,
    steer_layer: layer,
    steer_scale: scale,
    decode_tokens_per_s: 1 / plainPer,
    steered_decode_tokens_per_s: 1 / steeredPer,
    steering_overhead: steeredPer / plainPer - 1,
    decode_seconds_per_token: plain.map((x) => x.decodeSeconds / (newTokens - 1)),
    steered_seconds_per_token: steered.map((x) => x.decodeSeconds / (newTokens - 1)),
    prefill_seconds_median: median(plain.map((x) => x.prefillSeconds)),
    weight_bytes_per_token: size.bytesPerDecodeToken,
    weight_bytes_total: size.totalBytes,
    load_seconds: loadSeconds,
    greedy_head: plain[0]?.tokens.slice(0, 16) ?? [],
    steered_differs: plain[0] && steered[0] ? plain[0].tokens.some((t, i) => t !== steered[0]!.tokens[i]) : null,
    date: new Date().toISOString(),
  };
  console.log(
    `neurotap: ${result.decode_tokens_per_s.toFixed(1)} tokens/s plain, ${result.steered_decode_tokens_per_s.toFixed(1)} steered ` +
      `(overhead ${(result.steering_overhead * 100).toFixed(2)}%); prefill ${(result.prefill_seconds_median * 1000).toFixed(1)} ms`,
  );
  console.log(JSON.stringify(result));
} finally {
  model.dispose();
}
