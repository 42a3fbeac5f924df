// Benchmark: the cost of a 32x SAE (d_sae 24576) attached at blocks.6.hook_resid_pre of the
// GPT-2-small bench model, against the plain forward, neurotap and PyTorch CPU in the same run.
//
//   npx tsx bench/sae-overhead.ts [--seq 1024] [--batch 1] [--threads 2] [--reps 5] [--warmup 1]
//                                 [--configs plain,standard,error,jumprelu,topk,features]
//                                 [--engines both|neurotap] [--sweep] [--profile-wait]
//                                 [--model DIR] [--sae DIR] [--python python3]
//
// The SAEs come from bench/make-sae-gpt2.py (written into bench/out/sae-gpt2-small-32x on first
// use): SAELens v6 directories sharing one random encoder/decoder, with biases or thresholds
// calibrated so that L0 is about 64 on random tokens, and TopK k = 64. Configs, neurotap side
// (each SAE config has its own loaded model with that SAE attached, so nothing is attached or
// detached between reps and the SAE's scratch buffers stay warm):
//
//   plain     no SAE
//   standard  ReLU SAE spliced in (attachSae, useErrorTerm false)
//   error     the same SAE with useErrorTerm true
//   jumprelu  JumpReLU SAE spliced in
//   topk      TopK (k 64) SAE spliced in
//   features  the standard SAE plus saeFeatures { k: 32 } (the 32 largest features per token)
//
// Every neurotap run is `model.run(tokens, { returnLogits: true, logitsOutput })` into one
// preallocated logits array. The PyTorch side (bench/torch-sae.py, a long-lived worker) runs
// HF GPT2LMHeadModel with a forward pre-hook on block 6 that does the SAELens math densely; it
// also times `error_saelens` (the error term from a second clean SAE pass, as SAELens does).
// Within a rep the configs run in an order that rotates every rep and reverses every other rep,
// and within a config the engine that goes first alternates, so drift falls on all alike; only
// one engine computes at a time. Before the reps, an untimed check run per config compares the
// first 16 logits of row 0's last position with PyTorch's and counts L0 (features > 0 per
// token) from a capture of hook_sae_acts_post.
//
// --sweep: neurotap only, the standard SAE with its b_enc set for L0 about 16, 64, 256, 1024
// (bench/out/sae-gpt2-small-32x/l0-sweep.safetensors), against plain: how the SAE's cost moves
// with L0. --profile-wait: after the warm-up, print the pid, wait for SIGUSR1 (attach `perf
// record -p PID` first), then run the reps. Results: bench/RESULTS.md. Not a test.
import { spawn, spawnSync, type ChildProcessByStdio } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadModel, loadSae, readSafetensors, Sae, type Model } from '../src/index.js';
import { cpuModel, median, positiveInt, prng, WorkerChannel } from './common.js';

const here = dirname(fileURLToPath(import.meta.url));
const HOOK = 'blocks.6.hook_resid_pre';

const { values: flags } = parseArgs({
  options: {
    seq: { type: 'string', default: '1024' },
    batch: { type: 'string', default: '1' },
    threads: { type: 'string', default: '2' },
    reps: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    configs: { type: 'string' },
    engines: { type: 'string', default: 'both' },
    sweep: { type: 'boolean', default: false },
    'profile-wait': { type: 'boolean', default: false },
    model: { type: 'string' },
    sae: { type: 'string' },
    python: { type: 'string', default: process.env.PYTHON ?? 'python3' },
  },
});

const seq = positiveInt('seq', flags.seq);
const batch = positiveInt('batch', flags.batch);
const threads = positiveInt('threads', flags.threads);
const reps = positiveInt('reps', flags.reps);
const warmup = flags.warmup === '0' ? 0 : positiveInt('warmup', flags.warmup);
const modelDir = resolve(flags.model ?? join(here, 'out', 'gpt2-small'));
const saeDir = resolve(flags.sae ?? join(here, 'out', 'sae-gpt2-small-32x'));
const python = flags.python;
if (flags.engines !== 'both' && flags.engines !== 'neurotap') throw new Error(`--engines must be both or neurotap, not ${flags.engines}`);
const withTorch = flags.engines === 'both' && !flags.sweep;

/** How a neurotap config runs: which loaded model (SAE attached or not) and which read-out. */
interface Spec {
  model: string;
  features?: number;
}
const MAIN: Record<string, Spec> = {
  plain: { model: 'plain' },
  standard: { model: 'standard' },
  error: { model: 'error' },
  jumprelu: { model: 'jumprelu' },
  topk: { model: 'topk' },
  features: { model: 'standard', features: 32 },
};
const SWEEP_L0 = [16, 64, 256, 1024];
const SWEEP: Record<string, Spec> = {
  plain: { model: 'plain' },
  ...Object.fromEntries(SWEEP_L0.map((l) => [`l0_${l}`, { model: `l0_${l}` }])),
};
const table = flags.sweep ? SWEEP : MAIN;
const configs = (flags.configs ?? Object.keys(table).join(',')).split(',');
for (const c of configs) if (!table[c]) throw new Error(`unknown config '${c}' (${Object.keys(table).join(', ')})`);
if (!configs.includes('plain')) console.log('note: no plain config, so no overhead figures');


// 1. The model and the SAEs.
if (!existsSync(join(modelDir, 'config.json')) || !existsSync(join(modelDir, 'model.safetensors'))) {
  console.log(`writing ${modelDir} ...`);
  const r = spawnSync(python, [join(here, 'make-gpt2-small.py'), modelDir], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`make-gpt2-small.py failed (status ${r.status})`);
}
if (!existsSync(join(saeDir, 'meta.json'))) {
  console.log(`writing ${saeDir} ...`);
  const r = spawnSync(python, [join(here, 'make-sae-gpt2.py'), modelDir, saeDir, '--threads', String(threads)], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`make-sae-gpt2.py failed (status ${r.status})`);
}

// 2. The PyTorch worker first (it loads and warms up alone), then neurotap.
let worker: WorkerChannel | null = null;
let child: ChildProcessByStdio<Writable, Readable, null> | null = null;
let tokens: number[][];
let ready: Record<string, unknown> = {};
if (withTorch) {
  const threadEnv = { OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads) };
  child = spawn(
    python,
    [join(here, 'torch-sae.py'), modelDir, saeDir, '--seq', String(seq), '--batch', String(batch), '--threads', String(threads)],
    { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...threadEnv } },
  );
  worker = new WorkerChannel(child, 'torch worker');
  ready = await worker.next();
  if (ready.ready !== true) throw new Error(`torch worker: unexpected first reply ${JSON.stringify(ready)}`);
  tokens = ready.input_ids as number[][];
  console.log(
    `torch ${String(ready.torch)}, transformers ${String(ready.transformers)}, ${String(ready.threads)} threads, ` +
      `attention '${String(ready.attn_implementation)}', warm-up ${(ready.warmup_seconds as number).toFixed(3)} s`,
  );
} else {
  const rand = prng(1234);
  tokens = Array.from({ length: batch }, () => Array.from({ length: seq }, () => Math.floor(rand() * 50257)));
}

const modelKeys = [...new Set(configs.map((c) => table[c]!.model))];
const models = new Map<string, Model>();
const std = await loadSae(join(saeDir, 'standard'));
const otherSaes = new Map<string, Sae>();
const sweepBiases = flags.sweep ? readSafetensors(join(saeDir, 'l0-sweep.safetensors')) : null;
function saeFor(key: string): { sae: Sae; useErrorTerm: boolean } | null {
  if (key === 'plain') return null;
  if (key === 'standard') return { sae: std, useErrorTerm: false };
  if (key === 'error') return { sae: std, useErrorTerm: true };
  if (key.startsWith('l0_')) {
    const b = sweepBiases!.get(`b_enc_${key}`)!.data as Float32Array;
    return { sae: new Sae(std.cfg, std.W_enc, b, std.W_dec, std.b_dec), useErrorTerm: false };
  }
  return { sae: otherSaes.get(key)!, useErrorTerm: false };
}
for (const key of ['jumprelu', 'topk']) if (modelKeys.includes(key)) otherSaes.set(key, await loadSae(join(saeDir, key)));

try {
  for (const key of modelKeys) {
    const m = await loadModel(modelDir, { threads });
    models.set(key, m);
    const s = saeFor(key);
    if (s) await m.attachSae(s.sae, { hook: HOOK, useErrorTerm: s.useErrorTerm });
  }
  const V = models.get(modelKeys[0]!)!.config.dVocab;
  const logitsOutput = new Float32Array(batch * seq * V);
  const rss = process.memoryUsage().rss / 2 ** 30;
  console.log(`neurotap: ${modelKeys.length} models loaded (${modelKeys.join(', ')}), ${threads} threads, RSS ${rss.toFixed(1)} GiB`);

  const runNeurotap = async (config: string): Promise<number> => {
    const spec = table[config]!;
    const m = models.get(spec.model)!;
    const s = performance.now();
    await m.run(tokens, { returnLogits: true, logitsOutput, ...(spec.features ? { saeFeatures: { k: spec.features } } : {}) });
    return (performance.now() - s) / 1000;
  };

  // 3. Checks (untimed): L0 from a capture of acts_post, logits and top features against torch.
  const l0: Record<string, { mean: number; median: number; min: number; max: number }> = {};
  const checks: Record<string, Record<string, unknown>> = {};
  for (const config of configs) {
    const spec = table[config]!;
    const hasSae = spec.model !== 'plain';
    const m = models.get(spec.model)!;
    const res = await m.run(tokens, {
      returnLogits: true,
      capture: hasSae ? [`${HOOK}.hook_sae_acts_post`] : [],
      ...(spec.features ? { saeFeatures: { k: spec.features } } : {}),
    });
    const line: string[] = [`check ${config}:`];
    if (hasSae) {
      const acts = res.cache.get(`${HOOK}.hook_sae_acts_post`).data;
      const S = acts.length / (batch * seq);
      const counts: number[] = [];
      for (let r = 0; r < batch * seq; r++) {
        let c = 0;
        for (let j = r * S; j < (r + 1) * S; j++) c += acts[j]! > 0 ? 1 : 0;
        counts.push(c);
      }
      l0[config] = { mean: counts.reduce((a, b) => a + b, 0) / counts.length, median: median(counts), min: Math.min(...counts), max: Math.max(...counts) };
      const s = l0[config]!;
      line.push(`neurotap L0 mean ${s.mean.toFixed(1)}, median ${s.median}, min ${s.min}, max ${s.max};`);
    }
    if (worker) {
      const c = await worker.request(`check ${config}`);
      checks[config] = c;
      const head = c.logits_last_row_head as number[];
      const row0 = res.logits!.data.subarray((seq - 1) * V, (seq - 1) * V + head.length);
      const maxDiff = Math.max(...head.map((x, i) => Math.abs(x - row0[i]!)));
      line.push(`logits vs torch, max |diff| over 16: ${maxDiff.toExponential(2)};`);
      checks[config]!.logits_max_abs_diff = maxDiff;
      if (typeof c.l0_mean === 'number') line.push(`torch L0 mean ${c.l0_mean.toFixed(1)}, min ${String(c.l0_min)}, max ${String(c.l0_max)};`);
      if (spec.features && Array.isArray(c.top32_last)) {
        const f = res.features.get(HOOK)!;
        const mine = new Set(Array.from(f.indices.subarray((seq - 1) * f.k, seq * f.k)));
        const same = (c.top32_last as number[]).filter((i) => mine.has(i)).length;
        line.push(`top-32 of the last token: ${same}/32 indices shared with torch;`);
        checks[config]!.top32_shared = same;
      }
    }
    console.log(line.join(' '));
  }
  if (worker && configs.includes('error')) {
    const c = await worker.request('check error_saelens');
    const a = c.logits_last_row_head as number[];
    const b = checks.error!.logits_last_row_head as number[];
    console.log(`check error_saelens (torch only): logits vs torch 'error', max |diff| ${Math.max(...a.map((x, i) => Math.abs(x - b[i]!))).toExponential(2)}`);
  }

  // 4. The order of a rep: configs rotated by the rep index and reversed every other rep; within
  // a config, the engine that goes first alternates. error_saelens (torch only) follows error.
  const order = (rep: number): string[] => {
    const n = configs.length;
    const rot = configs.map((_, i) => configs[(i + rep) % n]!);
    return rep % 2 ? rot.reverse() : rot;
  };
  const nt: Record<string, number[]> = Object.fromEntries(configs.map((c) => [c, []]));
  const pt: Record<string, number[]> = Object.fromEntries([...configs, ...(configs.includes('error') ? ['error_saelens'] : [])].map((c) => [c, []]));
  const oneRep = async (rep: number, record: boolean): Promise<string> => {
    const parts: string[] = [];
    for (const [i, config] of order(rep).entries()) {
      const ntFirst = (rep + i) % 2 === 0;
      let a = 0;
      let b = 0;
      let b2 = 0;
      const torchSide = async () => {
        if (!worker) return;
        b = await worker.seconds(`run ${config}`);
        if (config === 'error') b2 = await worker.seconds('run error_saelens');
      };
      if (ntFirst || !worker) {
        a = await runNeurotap(config);
        await torchSide();
      } else {
        await torchSide();
        a = await runNeurotap(config);
      }
      if (record) {
        nt[config]!.push(a);
        if (worker) pt[config]!.push(b);
        if (worker && config === 'error') pt.error_saelens!.push(b2);
      }
      parts.push(`${config} ${(a * 1000).toFixed(0)}${worker ? `/${(b * 1000).toFixed(0)}${config === 'error' ? `(+saelens ${(b2 * 1000).toFixed(0)})` : ''}` : ''}`);
    }
    return parts.join(', ');
  };

  for (let i = 0; i < warmup; i++) console.log(`warm-up ${i + 1}/${warmup} (ms, neurotap${worker ? '/torch' : ''}): ${await oneRep(i, false)}`);
  if (flags['profile-wait']) {
    console.log(`profile-ready ${process.pid}`);
    const keepAlive = setInterval(() => {}, 1000); // a signal listener alone does not keep Node running
    await new Promise<void>((res) => process.once('SIGUSR1', () => res()));
    clearInterval(keepAlive);
  }
  const t0 = Date.now();
  for (let i = 0; i < reps; i++) console.log(`rep ${i + 1}/${reps} (ms, neurotap${worker ? '/torch' : ''}): ${await oneRep(i, true)}`);
  if (flags['profile-wait']) console.log(`profile-done after ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  worker?.quit();

  // 5. Summary. Overheads are medians of the per-rep differences config - plain (same rep);
  // ratios are medians of the per-rep torch / neurotap ratios (> 1: neurotap faster).
  const ms = (x: number) => (x * 1000).toFixed(1);
  const cpu = cpuModel();
  const date = new Date().toISOString();
  const diff = (xs: number[], base: number[]) => median(xs.map((x, i) => x - base[i]!));
  console.log('');
  console.log(`GPT-2 small (random weights) + 32x SAE (d_sae 24576) at ${HOOK}, f32, batch ${batch}, seq ${seq}, ${threads} threads, ${reps} reps after ${warmup} warm-up; ${cpu}; ${date}`);
  const hasPlain = configs.includes('plain');
  if (worker) {
    console.log('| config | L0 | neurotap ms | overhead ms | overhead % | PyTorch ms | overhead ms | overhead % | PyTorch / neurotap |');
    console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  } else {
    console.log('| config | L0 | neurotap ms | overhead ms | overhead % |');
    console.log('|---|---:|---:|---:|---:|');
  }
  const rows = [...configs, ...(worker && configs.includes('error') ? ['error_saelens'] : [])];
  for (const c of rows) {
    const a = nt[c];
    const b = pt[c];
    const l = l0[c] ? l0[c]!.mean.toFixed(1) : c === 'error_saelens' ? (l0.error?.mean.toFixed(1) ?? '') : '';
    const cells = [c, l];
    if (a) {
      cells.push(ms(median(a)));
      if (hasPlain && c !== 'plain') {
        const d = diff(a, nt.plain!);
        cells.push(ms(d), `${((100 * d) / median(nt.plain!)).toFixed(1)}%`);
      } else cells.push('', '');
    } else cells.push('(torch only)', '', '');
    if (worker && b) {
      cells.push(ms(median(b)));
      if (hasPlain && c !== 'plain') {
        const d = diff(b, pt.plain!);
        cells.push(ms(d), `${((100 * d) / median(pt.plain!)).toFixed(1)}%`);
      } else cells.push('', '');
      cells.push(a ? median(b.map((x, i) => x / a[i]!)).toFixed(2) : '');
    }
    console.log(`| ${cells.join(' | ')} |`);
  }
  console.log(
    JSON.stringify({
      bench: 'sae-overhead',
      model: 'gpt2-small-random',
      sae: { hook: HOOK, d_sae: 24576, dir: saeDir },
      sweep: flags.sweep,
      batch,
      seq,
      threads,
      reps,
      warmup,
      cpu,
      date,
      torch: ready.torch ?? null,
      transformers: ready.transformers ?? null,
      l0,
      checks: Object.fromEntries(Object.entries(checks).map(([k, v]) => [k, { ...v, logits_last_row_head: undefined }])),
      neurotap_seconds: nt,
      torch_seconds: worker ? pt : null,
    }),
  );
} finally {
  for (const m of models.values()) m.dispose();
  if (child && child.exitCode === null) child.stdin.end();
}
