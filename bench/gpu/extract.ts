// Benchmark E1 (extraction), neurotap side: a GPT-2-small-shaped model reads sequences of 1024
// tokens and every block's residual stream (all 12 `blocks.*.hook_resid_post`) is captured to
// host memory. Tokens/s over the whole stream, with the baseline (bench/gpu/hf_extract.py: HF
// transformers `output_hidden_states` + `.cpu()`) run by bench/gpu/run.sh on the same GPU.
//
//   node .device/js/bench/gpu/extract.js [--model DIR] [--device cuda] [--dtype bf16]
//        [--tokens 1048576] [--seq 1024] [--batch 8] [--max-seconds 60] [--warmup 1]
//        [--forward-only-batches 4]
//   npx tsx bench/gpu/extract.ts ...      (where tsx is installed)
//
// The captures land in float32 JS arrays (the API captures float32 only: bf16 capture does not
// exist yet), preallocated once and reused (`outputs`), so the run measures forward + device to
// host copies, not JS allocation. `--tokens` is the stream length; the run stops early after
// `--max-seconds` and reports what it did. A forward-only pass (no captures, no logits) over a
// few batches tells how much of the time the copies take. Prints a JSON line
// {"bench":"E1-extract","engine":"neurotap",...}; bench/gpu/collect.py sets it against the
// baseline and the device-to-host roofline.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { loadModel } from '../../src/index.js';
import { benchTokens, median, positiveInt, positiveNumber, rms } from './common.js';

const root = process.env.NEUROTAP_ROOT ?? join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values: flags } = parseArgs({
  options: {
    model: { type: 'string', default: join(root, 'bench', 'out', 'gpt2-small-bf16') },
    device: { type: 'string', default: 'cuda' },
    dtype: { type: 'string', default: 'bf16' },
    tokens: { type: 'string', default: String(1 << 20) },
    seq: { type: 'string', default: '1024' },
    batch: { type: 'string', default: '8' },
    'max-seconds': { type: 'string', default: '60' },
    warmup: { type: 'string', default: '1' },
    'forward-only-batches': { type: 'string', default: '4' },
    threads: { type: 'string', default: '4' },
  },
});
const device = flags.device as 'cpu' | 'cuda';
const dtype = flags.dtype as 'f32' | 'bf16' | 'f16';
const totalTokens = positiveInt('tokens', flags.tokens);
const seq = positiveInt('seq', flags.seq);
const batch = positiveInt('batch', flags.batch);
const maxSeconds = positiveNumber('max-seconds', flags['max-seconds']);
const warmup = flags.warmup === '0' ? 0 : positiveInt('warmup', flags.warmup);
const forwardOnlyBatches = flags['forward-only-batches'] === '0' ? 0 : positiveInt('forward-only-batches', flags['forward-only-batches']);
const threads = positiveInt('threads', flags.threads);
const modelDir = resolve(flags.model);

const tLoad = performance.now();
const model = await loadModel(modelDir, { device, dtype, threads });
const loadSeconds = (performance.now() - tLoad) / 1000;
try {
  const { nLayers, dModel, dVocab } = model.config;
  const hooks = Array.from({ length: nLayers }, (_, l) => `blocks.${l}.hook_resid_post`);
  const perBatch = batch * seq;
  const outputs: Record<string, Float32Array> = Object.fromEntries(hooks.map((h) => [h, new Float32Array(perBatch * dModel)]));
  const bytesPerToken = nLayers * dModel * 4;
  console.log(
    `E1 extract: ${modelDir} on ${model.device} (${model.deviceName}), weights ${model.dtype}; ${nLayers} x resid_post d_model ${dModel} captured as f32 ` +
      `(${bytesPerToken} B/token); batch ${batch} x seq ${seq}; stream ${totalTokens} tokens, at most ${maxSeconds} s; load ${loadSeconds.toFixed(2)} s`,
  );

  // The check values: block 10's residual stream (HF's hidden_states[11]; never the last block, whose HF hidden state is after ln_f) of the stream's first sequence.
  const checkLayer = Math.max(0, Math.min(10, nLayers - 2));
  const first = benchTokens(0, batch, seq, dVocab);
  const w0 = performance.now();
  await model.run(first, { outputs, returnLogits: false });
  const firstSeconds = (performance.now() - w0) / 1000;
  const seq0 = outputs[`blocks.${checkLayer}.hook_resid_post`]!.subarray(0, seq * dModel);
  const check = { layer: checkLayer, rms_seq0: rms(seq0), first4_pos0: Array.from(seq0.subarray(0, 4)), first4_last: Array.from(seq0.subarray((seq - 1) * dModel, (seq - 1) * dModel + 4)) };
  for (let i = 1; i < warmup; i++) await model.run(first, { outputs, returnLogits: false });

  const times: number[] = [];
  let done = 0;
  const t0 = performance.now();
  while (done < totalTokens && (performance.now() - t0) / 1000 < maxSeconds) {
    const rows = benchTokens(done, batch, seq, dVocab);
    const s = performance.now();
    await model.run(rows, { outputs, returnLogits: false });
    times.push((performance.now() - s) / 1000);
    done += perBatch;
  }
  const seconds = (performance.now() - t0) / 1000;

  const fwd: number[] = [];
  for (let i = 0; i < forwardOnlyBatches; i++) {
    const s = performance.now();
    await model.run(first, { returnLogits: false });
    fwd.push((performance.now() - s) / 1000);
  }
  const result = {
    bench: 'E1-extract',
    engine: 'neurotap',
    device: model.device,
    device_name: model.deviceName,
    weights_dtype: model.dtype,
    capture_dtype: 'f32',
    model: modelDir,
    layers: nLayers,
    d_model: dModel,
    seq,
    batch,
    tokens_requested: totalTokens,
    tokens: done,
    complete: done >= totalTokens,
    seconds,
    tokens_per_s: done / seconds,
    captured_bytes_per_token: bytesPerToken,
    capture_GBps: (done * bytesPerToken) / seconds / 1e9,
    batch_seconds_median: median(times),
    batch_seconds_min: Math.min(...times),
    batch_seconds_max: Math.max(...times),
    first_batch_seconds: firstSeconds,
    forward_only_tokens_per_s: fwd.length ? perBatch / median(fwd) : null,
    load_seconds: loadSeconds,
    check,
    date: new Date().toISOString(),
  };
  console.log(
    `neurotap: ${done} tokens in ${seconds.toFixed(2)} s = ${result.tokens_per_s.toFixed(0)} tokens/s (${result.capture_GBps.toFixed(2)} GB/s of captures); ` +
      `batch median ${result.batch_seconds_median.toFixed(4)} s; forward only ${result.forward_only_tokens_per_s?.toFixed(0) ?? '-'} tokens/s`,
  );
  console.log(JSON.stringify(result));
} finally {
  model.dispose();
}
