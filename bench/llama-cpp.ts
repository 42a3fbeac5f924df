// Benchmark: prefill and batch-1 decode, neurotap against llama.cpp (node-llama-cpp's prebuilt CPU
// binary) on the Llama-architecture model of bench/make-llama-small.py converted to GGUF, alternating
// in one process, both on --threads threads, with the machine's ceilings measured in the same run.
//
//   npx tsx bench/llama-cpp.ts [--dtype f32|bf16] [--compute MODE] [--prefill 1024] [--prompt 128]
//       [--decode 64] [--threads 2] [--reps 5] [--max-reps 15] [--warmup 1] [--max-foreign 0.3]
//       [--quiet-wait 60] [--flash off|on] [--kv f32|f16] [--model DIR] [--python python3]
//
// node-llama-cpp is not a dependency of neurotap: on first use the script installs it (3.22.1,
// about 700 MB with its prebuilt binaries) into bench/out/llama-cpp, extracts llama.cpp's
// converter from the package's bundled source, installs sentencepiece there for the converter, and
// converts the model to GGUF f32 and bf16 (bench/gguf-prep.py). Before timing it checks llama.cpp's
// logits (flash attention off, f32 KV cache) and neurotap's against HF's on the same prompt.
// Prefill: one forward over --prefill tokens, last position's logits only on both sides. Decode:
// greedy, --decode tokens after a --prompt-token prompt; the time from the prompt's token to the
// last one, so decode tokens/s = --decode / that time. --flash and --kv set llama.cpp's timed
// context (default: the checked configuration). Busy reps are left out (common.ts alternatingReps).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { loadModel, type LoadModelOptions } from '../src/index.js';
import { alternatingReps, benchSettings, cpuModel, medianRatio, positiveInt, prng, quietness, repRange, summarizeReps, type Timed } from './common.js';
import { at, bestOf, bf16Peak, ceilingLines, computeNote, cpuFlags, flopsPerToken, fp32Peak, machineLine, matmulParams, measureCeilings, modelShape } from './machine.js';

const NODE_LLAMA_CPP = '3.22.1';
const here = dirname(fileURLToPath(import.meta.url));
const s = await benchSettings(
  here,
  { reps: '5', maxReps: '15', warmup: '1' },
  { arch: 'llama', dtype: 'f32', compute: '', prefill: '1024', prompt: '128', decode: '64', flash: 'off', kv: 'f32' },
);
const { threads, maxForeign, quietWait, modelDir } = s;
const dtype = s.extra.dtype!;
if (dtype !== 'f32' && dtype !== 'bf16') throw new Error(`--dtype must be f32 or bf16, not ${dtype}`);
const compute = s.extra.compute || undefined;
const prefillLen = positiveInt('prefill', s.extra.prefill!);
const promptLen = positiveInt('prompt', s.extra.prompt!);
const decodeLen = positiveInt('decode', s.extra.decode!);
if (s.extra.flash !== 'on' && s.extra.flash !== 'off') throw new Error(`--flash must be on or off, not ${s.extra.flash}`);
if (s.extra.kv !== 'f32' && s.extra.kv !== 'f16') throw new Error(`--kv must be f32 or f16, not ${s.extra.kv}`);
const quiet = { maxForeign, quietWait };

// ---- The peer, installed on demand into bench/out/llama-cpp (git-ignored) ----

const lcDir = join(here, 'out', 'llama-cpp');
const pkgDir = join(lcDir, 'node_modules', 'node-llama-cpp');
const pyDir = join(lcDir, 'py');
const convertDir = join(lcDir, 'convert');

function run(cmd: string, args: string[], what: string, opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): void {
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...opts });
  if (r.status !== 0) throw new Error(`${what} failed (${cmd} ${args.join(' ')}: status ${r.status})`);
}

if (!existsSync(join(pkgDir, 'package.json'))) {
  console.log(`node-llama-cpp is not a dependency of neurotap; installing node-llama-cpp@${NODE_LLAMA_CPP} into ${lcDir} (about 700 MB with its prebuilt binaries) ...`);
  mkdirSync(lcDir, { recursive: true });
  run('npm', ['install', '--prefix', lcDir, '--no-audit', '--no-fund', '--ignore-scripts', `node-llama-cpp@${NODE_LLAMA_CPP}`], 'installing node-llama-cpp');
}
if (!existsSync(join(convertDir, 'convert_hf_to_gguf.py'))) {
  // Only the converter's Python files: the full source holds TypeScript that the repository's tsconfig would pick up under bench/.
  console.log(`extracting llama.cpp's convert_hf_to_gguf.py and gguf-py from ${join(pkgDir, 'llama', 'gitRelease.bundle')} ...`);
  const bare = mkdtempSync(join(tmpdir(), 'llama-cpp-bundle-'));
  try {
    run('git', ['clone', '--quiet', '--bare', join(pkgDir, 'llama', 'gitRelease.bundle'), bare], 'cloning the bundled llama.cpp source');
    mkdirSync(convertDir, { recursive: true });
    const archive = spawnSync('git', ['--git-dir', bare, 'archive', 'HEAD', 'convert_hf_to_gguf.py', 'conversion', 'gguf-py'], { maxBuffer: 1 << 28 });
    if (archive.status !== 0) throw new Error(`git archive of the llama.cpp bundle failed: ${archive.stderr}`);
    const tar = spawnSync('tar', ['-x', '-C', convertDir], { input: archive.stdout });
    if (tar.status !== 0) throw new Error(`tar failed: ${tar.stderr}`);
  } finally {
    rmSync(bare, { recursive: true, force: true });
  }
}
const pyEnv = { ...process.env, PYTHONPATH: [pyDir, process.env.PYTHONPATH].filter(Boolean).join(':') };
if (spawnSync(s.python, ['-c', 'import sentencepiece'], { env: pyEnv }).status !== 0) {
  console.log(`installing sentencepiece (for llama.cpp's converter) into ${pyDir} ...`);
  run(s.python, ['-m', 'pip', 'install', '--quiet', '--target', pyDir, 'sentencepiece'], 'installing sentencepiece');
}
const ggufDir = join(lcDir, 'llama-small');
run(s.python, [join(here, 'gguf-prep.py'), modelDir, ggufDir, '--convert', convertDir], 'converting the model to GGUF', { env: pyEnv });

// The part of node-llama-cpp's API used here (its types are not installed with neurotap).
interface LcSequence {
  controlledEvaluate(input: (number | [number, { generateNext: { logits: true } }])[]): Promise<({ next: { logits?: Map<number, number> } } | undefined)[]>;
  evaluateWithoutGeneratingNewTokens(tokens: number[]): Promise<void>;
  evaluate(tokens: number[], options: { temperature: number }): AsyncGenerator<number, void>;
  clearHistory(): Promise<void>;
}
interface LcContext {
  getSequence(): LcSequence;
  dispose(): Promise<void>;
}
interface LcModel {
  createContext(o: Record<string, unknown>): Promise<LcContext>;
  dispose(): Promise<void>;
}
interface NodeLlamaCpp {
  getLlama(o: Record<string, unknown>): Promise<{ loadModel(o: { modelPath: string }): Promise<LcModel>; dispose(): Promise<void> }>;
  LlamaLogLevel: Record<string, unknown>;
}
const lc = (await import(pathToFileURL(join(pkgDir, 'dist', 'index.js')).href)) as NodeLlamaCpp;
const version = (JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { version: string }).version;

// ---- Check: both engines against HF on the reference prompt ----

console.log(`machine: ${machineLine()}`);
const ref = JSON.parse(readFileSync(join(ggufDir, 'reference.json'), 'utf8')) as { tokens: number[]; vocab: number };
const V = ref.vocab;
const hf = new Float32Array(readFileSync(join(ggufDir, `reference-${dtype}.bin`)).buffer.slice(0));
const checkAt = ref.tokens.map((_, i) => i).filter((i) => i % 8 === 7);
const maxAbsRef = checkAt.reduce((m, p) => hf.subarray(p * V, (p + 1) * V).reduce((a, x) => Math.max(a, Math.abs(x)), m), 0);

const llama = await lc.getLlama({ build: 'never', gpu: false, maxThreads: threads, logLevel: lc.LlamaLogLevel.error, progressLogs: false });
const lcModel = await llama.loadModel({ modelPath: join(ggufDir, `model-${dtype}.gguf`) });
const contextSize = Math.ceil((Math.max(prefillLen, promptLen + decodeLen + 1) + 1) / 256) * 256;
const context = (flash: boolean, kv: string) =>
  lcModel.createContext({
    contextSize,
    batchSize: Math.max(prefillLen, promptLen),
    threads: { ideal: threads, min: threads },
    flashAttention: flash,
    experimentalKvCacheKeyType: kv.toUpperCase(),
    experimentalKvCacheValueType: kv.toUpperCase(),
  });

function compare(name: string, logitsAt: (p: number, v: number) => number): { maxDiff: number; top1: number } {
  let maxDiff = 0;
  let top1 = 0;
  for (const p of checkAt) {
    let best = 0;
    let bestRef = 0;
    for (let v = 0; v < V; v++) {
      const x = logitsAt(p, v);
      maxDiff = Math.max(maxDiff, Math.abs(x - hf[p * V + v]!));
      if (x > logitsAt(p, best)) best = v;
      if (hf[p * V + v]! > hf[p * V + bestRef]!) bestRef = v;
    }
    if (best === bestRef) top1++;
  }
  console.log(
    `check ${name} against HF ${dtype === 'f32' ? 'f32' : 'in bf16'} at ${checkAt.length} positions of a ${ref.tokens.length}-token prompt: ` +
      `max |diff| ${maxDiff.toExponential(2)} (largest |logit| ${maxAbsRef.toFixed(3)}), same top-1 at ${top1}/${checkAt.length}`,
  );
  return { maxDiff, top1 };
}

const checkCtx = await context(false, 'f32');
const lcOut = await checkCtx.getSequence().controlledEvaluate(ref.tokens.map((t, i) => (checkAt.includes(i) ? [t, { generateNext: { logits: true } }] : t)));
const lcCheck = compare(`llama.cpp ${version} (flash attention off, f32 KV cache)`, (p, v) => lcOut[p]!.next.logits!.get(v)!);
await checkCtx.dispose();
// Exact in f32 (the notes: ~1e-6); bf16 rounds activations too, so only a report there.
if (dtype === 'f32' && lcCheck.maxDiff > 1e-4 * Math.max(1, maxAbsRef))
  throw new Error(`llama.cpp's logits differ from HF's by ${lcCheck.maxDiff}: the GGUF conversion is wrong; not timing it`);

const model = await loadModel(modelDir, { threads, dtype, ...(compute ? { compute } : {}) } as LoadModelOptions);
if (compute) console.log(computeNote(model, compute));
const ntOut = (await model.run([ref.tokens], { capture: [] })).logits!.data;
const ntCheck = compare(`neurotap (dtype ${dtype}${compute ? `, compute ${compute}` : ''})`, (p, v) => ntOut[p * V + v]!);

// ---- Timing ----

const ceilingsBefore = await measureCeilings(here, threads, quiet);
for (const l of ceilingLines(ceilingsBefore, maxForeign)) console.log(l);

const flash = s.extra.flash === 'on';
const ctx = await context(flash, s.extra.kv!);
const seq = ctx.getSequence();
const rand = prng(1);
const prefillTokens = Array.from({ length: prefillLen }, () => 3 + Math.floor(rand() * (V - 3)));
const prompt = prefillTokens.slice(0, promptLen);
const generated: Record<string, number[]> = {};

async function ntDecode(): Promise<Timed> {
  let start = 0;
  const toks: number[] = [];
  for await (const step of model.generateStream([prompt], { maxNewTokens: decodeLen + 1 })) {
    if (step.step === 0) start = performance.now();
    toks.push(step.tokens[0]!);
  }
  generated.neurotap = toks;
  return { seconds: (performance.now() - start) / 1000 };
}

async function lcDecode(): Promise<Timed> {
  await seq.clearHistory();
  let start = 0;
  const toks: number[] = [];
  for await (const t of seq.evaluate(prompt, { temperature: 0 })) {
    if (toks.length === 0) start = performance.now();
    toks.push(t);
    if (toks.length === decodeLen + 1) break;
  }
  generated.llamacpp = toks;
  return { seconds: (performance.now() - start) / 1000 };
}

async function lcPrefill(): Promise<Timed> {
  await seq.clearHistory();
  const t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(prefillTokens);
  return { seconds: (performance.now() - t0) / 1000 };
}

async function ntPrefill(): Promise<Timed> {
  const t0 = performance.now();
  await model.run([prefillTokens], { capture: [], returnLogits: 'last' });
  return { seconds: (performance.now() - t0) / 1000 };
}

const variants = [
  { name: 'nt_prefill', run: ntPrefill },
  { name: 'lc_prefill', run: lcPrefill },
  { name: 'nt_decode', run: ntDecode },
  { name: 'lc_decode', run: lcDecode },
];
try {
  for (let i = 0; i < s.warmup; i++) {
    const line = [];
    for (const v of variants) line.push(`${v.name} ${(await v.run()).seconds.toFixed(3)}`);
    console.log(`warm-up ${i + 1}/${s.warmup}: ${line.join(', ')} s`);
  }
  const all = await alternatingReps(variants, { reps: s.reps, maxReps: s.maxReps, maxForeign, quietWait });
  const ceilingsAfter = await measureCeilings(here, threads, quiet);
  for (const l of ceilingLines(ceilingsAfter, maxForeign)) console.log(l.replace(/^ceiling/, 'ceiling (after)'));

  // ---- Summary ----
  const { medians } = summarizeReps(all, variants.map((v) => v.name));
  const q = quietness(all, maxForeign);
  const shape = modelShape(modelDir);
  // The LM head runs on the last position only: once per prefill, not per token.
  const prefillFlops = flopsPerToken(shape, (prefillLen + 1) / 2, false) + (2 * shape.dModel * shape.vocab) / prefillLen;
  const ceil = {
    fp32_fma_512: bestOf(ceilingsBefore.fp32_fma_512, ceilingsAfter.fp32_fma_512),
    fp32_fma_256: bestOf(ceilingsBefore.fp32_fma_256, ceilingsAfter.fp32_fma_256),
    bf16_avx512: bestOf(ceilingsBefore.bf16_avx512, ceilingsAfter.bf16_avx512),
    bf16_amx: bestOf(ceilingsBefore.bf16_amx, ceilingsAfter.bf16_amx),
  };
  const fp32 = fp32Peak(ceil, threads);
  const bf16 = bf16Peak(ceil, threads);
  const bw = Math.max(at(ceilingsBefore.read_gbs, threads) ?? 0, at(ceilingsAfter.read_gbs, threads) ?? 0);
  // Decode reads every matrix once per token (the embedding row and norms are negligible).
  const weightBytes = matmulParams(shape) * (dtype === 'f32' ? 4 : 2);
  const roofline = bw > 0 ? (bw * 1e9) / weightBytes : undefined;
  const same = generated.neurotap && generated.llamacpp ? generated.neurotap.filter((t, i) => t === generated.llamacpp![i]).length : 0;
  const ratio = (a: string, b: string) => medianRatio(all, a, b);
  const date = new Date().toISOString();
  const pct = (x: number, of: number | undefined) => (of ? `${((100 * x) / of).toFixed(0)}%` : '-');
  console.log('');
  console.log(
    `Llama-arch 124M (random weights), ${dtype}${compute ? ` compute ${compute}` : ''}, ${threads} threads; llama.cpp via node-llama-cpp ${version} ` +
      `(flash attention ${s.extra.flash}, ${s.extra.kv} KV cache); ${cpuModel()}; ${date}`,
  );
  console.log(q.line);
  if (ceilingsBefore.foreignCores > maxForeign && ceilingsAfter.foreignCores > maxForeign)
    console.log('both ceiling measurements were BUSY: the peaks and bandwidth read low, the fractions of them high');
  console.log(
    `prefill ${prefillLen} tokens: ${(prefillFlops / 1e6).toFixed(1)} MFLOP/token against fp32 peak ${fp32?.toFixed(0) ?? '-'}, bf16 peak ${bf16?.toFixed(0) ?? '-'} GFLOP/s; ` +
      `decode ${decodeLen} tokens after ${promptLen}: ${(weightBytes / 1e6).toFixed(0)} MB of weights per token at ${bw.toFixed(1)} GB/s read = roofline ${roofline?.toFixed(1) ?? '-'} tok/s`,
  );
  console.log('| phase | neurotap tok/s | llama.cpp tok/s | neurotap / llama.cpp (median per rep) | neurotap of ceiling | llama.cpp of ceiling |');
  console.log('|---|---:|---:|---:|---:|---:|');
  // bf16 is set against the bf16 peak where one was measured (what bf16 compute could reach).
  const peak = dtype === 'bf16' ? (bf16 ?? fp32) : fp32;
  const gf = (sec: number) => (prefillLen * prefillFlops) / sec / 1e9;
  const pre = { nt: prefillLen / medians.nt_prefill!, lc: prefillLen / medians.lc_prefill! };
  const dec = { nt: decodeLen / medians.nt_decode!, lc: decodeLen / medians.lc_decode! };
  console.log(
    `| prefill 1 x ${prefillLen} | ${pre.nt.toFixed(1)} | ${pre.lc.toFixed(1)} | ${ratio('lc_prefill', 'nt_prefill').toFixed(2)} | ` +
      `${pct(gf(medians.nt_prefill!), peak)} of ${dtype} peak | ${pct(gf(medians.lc_prefill!), peak)} |`,
  );
  console.log(
    `| decode, batch 1 | ${dec.nt.toFixed(1)} | ${dec.lc.toFixed(1)} | ${ratio('lc_decode', 'nt_decode').toFixed(2)} | ` +
      `${pct(dec.nt, roofline)} of roofline | ${pct(dec.lc, roofline)} |`,
  );
  console.log(
    `seconds over the counted reps (min-max): prefill neurotap ${repRange(all, 'nt_prefill')}, llama.cpp ${repRange(all, 'lc_prefill')}; ` +
      `decode neurotap ${repRange(all, 'nt_decode')}, llama.cpp ${repRange(all, 'lc_decode')}`,
  );
  console.log(`greedy tokens, last rep: ${same}/${decodeLen + 1} equal between the engines${q.flagged ? '\nFLAGGED: every rep was busy; these are not results' : ''}`);
  console.log(
    JSON.stringify({
      bench: 'llama-cpp',
      dtype,
      compute: compute ?? null,
      threads,
      prefill: prefillLen,
      prompt: promptLen,
      decode: decodeLen,
      node_llama_cpp: version,
      llama_flash_attention: flash,
      llama_kv: s.extra.kv,
      cpu: cpuModel(),
      cpu_flags: cpuFlags().present,
      date,
      check: { llamacpp: lcCheck, neurotap: ntCheck, largest_abs_logit: maxAbsRef },
      quiet_reps: q.quiet,
      reps: q.all,
      flagged: q.flagged,
      max_foreign_cores: maxForeign,
      medians,
      tokens_per_s: { prefill: pre, decode: dec },
      ratio_neurotap_over_llamacpp: { prefill: ratio('lc_prefill', 'nt_prefill'), decode: ratio('lc_decode', 'nt_decode') },
      ceilings: { before: ceilingsBefore, after: ceilingsAfter, fp32_peak: fp32 ?? null, bf16_peak: bf16 ?? null, read_gbs: bw },
      decode_roofline_tokens_per_s: roofline ?? null,
      greedy_tokens_equal: same,
      per_rep: all,
    }),
  );
} finally {
  model.dispose();
  await ctx.dispose();
  await lcModel.dispose();
  await llama.dispose();
}
