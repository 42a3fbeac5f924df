// Benchmark: `neurotap extract` throughput (tokens/s, disk time included) of a GPT-2-small-shaped
// model capturing all 12 `blocks.*.hook_resid_post` on the CPU, against baselines in the same run.
// Results: bench/RESULTS.md ("Extraction throughput").
//
//   npx tsx bench/extract/run.ts [--tokens 32768] [--seq-len 1024] [--batch 8] [--threads 2]
//                                [--reps 3] [--warmup-tokens SEQ*BATCH] [--variants cli,hf,forward,capture,write]
//                                [--tmp DIR] [--model DIR] [--python python3] [--seed 1] [--no-fsync-hf]
//                                [--root DIR] [--max-other 5] [--extra-reps REPS] [--quiet-wait 120]
//
// --root names the neurotap build under test (default: this checkout): its dist/, bin/ and
// addon serve both the in-process variants and the CLI processes. Point it at a separate build
// (e.g. a `git archive` export, built there) when other work may rebuild this checkout during
// the run; the addon's sha256 is checked before every CLI run either way.
//
// Variants, each over the same first --tokens tokens of one synthetic pre-tokenized corpus
// (random ids in [0, 50257), documents of 64..4096 tokens packed into seq-len windows), at the
// same batch shape and thread count:
//   cli      `node bin/neurotap.js extract --tokens corpus.jsonl --hooks 'blocks.*.hook_resid_post'
//            --seq-len S --batch-size B --out-dtype f32 --threads T --max-tokens N --overwrite`
//            in a fresh process writing to a fresh directory. Its own summary line
//            ("done: T tokens in S s ...", timed from the start of the extraction, after the
//            model load) gives tokens/s; the process wall time (load included) is kept too.
//   hf       bench/extract/hf_extract.py, a long-lived PyTorch worker: HF transformers with
//            output_hidden_states=True, numpy views, safetensors.numpy.save_file per shard
//            (same shard size as neurotap's), fsync of each file and the directory.
//   forward  in-process `model.run(rows, { returnLogits: false, stopAtLayer: 12 })` per batch:
//            the compute alone.
//   capture  the same with `capture: ['blocks.*.hook_resid_post']` into fresh memory.
//   write    neurotap's ShardWriter alone (the class the CLI uses) writing the same number of
//            shards and batches, from one batch of activation-sized pseudo-random data: write +
//            fsync + sha256 read-back + rename + directory fsync, without compute.
// Output directories live in a temp directory (same disk as the repository unless --tmp says
// otherwise) and are removed after each measurement; the whole temp directory at the end.
// Each sample also records its process's CPU seconds (user + sys; /usr/bin/time for the CLI,
// process.cpuUsage() in here, time.process_time() in the worker) and the CPU the rest of the
// machine used meanwhile (/proc/stat), to flag samples hit by other jobs on a shared machine.
// Before each rep the driver waits (up to --quiet-wait s) for the rest of the machine to be
// idle; a rep in which other processes used more than --max-other CPU seconds during any of its
// measurements is set aside and run again, at most --extra-reps times (default: --reps).
// The order inside a rep rotates and runs backwards every other cycle, so drift on a shared
// machine falls on every variant alike. The warm-up (one batch per variant) also checks that
// the CLI and HF write the same tokens and activations. Not a test.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { cpuModel, median, positiveInt, prng, WorkerChannel } from '../common.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '..', '..');
const HOOKS = 'blocks.*.hook_resid_post';
const VOCAB = 50257;
const TARGET_SHARD_BYTES = 256 * 2 ** 20; // as src/cli/extract.ts

const { values: flags } = parseArgs({
  options: {
    tokens: { type: 'string', default: '32768' },
    'seq-len': { type: 'string', default: '1024' },
    batch: { type: 'string', default: '8' },
    threads: { type: 'string', default: '2' },
    reps: { type: 'string', default: '3' },
    'warmup-tokens': { type: 'string' },
    variants: { type: 'string', default: 'cli,hf,forward,capture,write' },
    tmp: { type: 'string', default: tmpdir() },
    model: { type: 'string', default: join(repo, 'bench', 'out', 'gpt2-small') },
    python: { type: 'string', default: process.env.PYTHON ?? 'python3' },
    seed: { type: 'string', default: '1' },
    'no-fsync-hf': { type: 'boolean', default: false },
    root: { type: 'string', default: repo },
    'max-other': { type: 'string', default: '5' },
    'extra-reps': { type: 'string' },
    'quiet-wait': { type: 'string', default: '120' },
  },
});

const seqLen = positiveInt('seq-len', flags['seq-len']);
const batch = positiveInt('batch', flags.batch);
const threads = positiveInt('threads', flags.threads);
const reps = positiveInt('reps', flags.reps);
const maxOther = Number(flags['max-other']);
const extraReps = flags['extra-reps'] === undefined ? reps : flags['extra-reps'] === '0' ? 0 : positiveInt('extra-reps', flags['extra-reps']);
const quietWait = Number(flags['quiet-wait']);
if (!(maxOther >= 0) || !(quietWait >= 0)) throw new Error('--max-other and --quiet-wait take non-negative seconds');
const nSeqs = Math.ceil(positiveInt('tokens', flags.tokens) / seqLen);
const nTokens = nSeqs * seqLen;
const warmSeqs = Math.ceil(positiveInt('warmup-tokens', flags['warmup-tokens'] ?? String(seqLen * batch)) / seqLen);
const modelDir = resolve(flags.model);
// The neurotap build under test: dist/, bin/ and the addon of --root (default: this checkout).
// The driver and every CLI process load the same files, and the addon's hash is checked before
// each CLI run, so a rebuild in the middle of a run cannot mix two builds unnoticed.
const root = resolve(flags.root);
if (!existsSync(join(root, 'dist', 'cli', 'main.js'))) throw new Error(`${root}/dist is missing: run \`npx node-gyp rebuild && npx tsc -p tsconfig.build.json\` there first`);
const nt = (await import(pathToFileURL(join(root, 'dist', 'index.js')).href)) as typeof import('../../src/index.js');
const { ShardWriter } = (await import(pathToFileURL(join(root, 'dist', 'extract', 'shards.js')).href)) as typeof import('../../src/extract/shards.js');
const addonPath = (createRequire(import.meta.url)('node-gyp-build') as { path(dir: string): string }).path(root);
const addonHash = () => createHash('sha256').update(readFileSync(addonPath)).digest('hex').slice(0, 16);
const addonAtStart = addonHash();
const python = flags.python;
const ALL = ['cli', 'hf', 'forward', 'capture', 'write'] as const;
type Variant = (typeof ALL)[number];
const variants = flags.variants.split(',').map((v) => v.trim()) as Variant[];
for (const v of variants) if (!ALL.includes(v)) throw new Error(`--variants: unknown '${v}' (known: ${ALL.join(', ')})`);

function git(...args: string[]): string {
  const r = spawnSync('git', args, { cwd: repo, encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'unknown';
}

function cpuSince(c0: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(c0);
  return (d.user + d.system) / 1e6;
}

/** Waits until the rest of the machine has been quiet (under 0.1 core) for 10 s, at most --quiet-wait s; returns the seconds waited. */
async function waitQuiet(): Promise<number> {
  const t0 = performance.now();
  let calm = 0;
  while (calm < 2 && performance.now() - t0 < quietWait * 1000) {
    const a = machineCpu().busy;
    await new Promise((r) => setTimeout(r, 5000));
    calm = machineCpu().busy - a < 0.5 ? calm + 1 : 0;
  }
  return (performance.now() - t0) / 1000;
}

/** Busy and stolen CPU seconds of the whole machine so far (/proc/stat; zeros elsewhere). */
function machineCpu(): { busy: number; steal: number } {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = f as [number, number, number, number, number, number, number, number];
    return { busy: (user + nice + system + irq + softirq) / 100, steal: steal / 100 };
  } catch {
    return { busy: 0, steal: 0 };
  }
}

const TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : null;

/** One measurement: seconds for `tokens` tokens, plus what the variant reports about itself. */
interface Sample {
  seconds: number;
  /** CPU seconds (user + sys) the measured process spent; NaN where unknown. For cli: the whole process, model load included. */
  cpu: number;
  tokens: number;
  bytes: number;
  extra: Record<string, number>;
}

// 1. The model, the temp directory and the corpus.
if (!existsSync(join(modelDir, 'config.json')) || !existsSync(join(modelDir, 'model.safetensors'))) {
  console.log(`writing ${modelDir} ...`);
  const r = spawnSync(python, [join(repo, 'bench', 'make-gpt2-small.py'), modelDir], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`make-gpt2-small.py failed (status ${r.status})`);
}
const work = mkdtempSync(join(resolve(flags.tmp), 'neurotap-bench-extract-'));
const sameDisk = statSync(work).dev === statSync(repo).dev;
console.log(`temp directory ${work} (${sameDisk ? 'same' : 'NOT the same'} device as the repository)`);

const corpus = join(work, 'corpus.jsonl');
const need = (Math.max(nSeqs, warmSeqs) + 1) * seqLen;
const rand = prng(positiveInt('seed', flags.seed));
const stream: number[] = [];
const lines: string[] = [];
while (stream.length < need) {
  const len = 64 + Math.floor(rand() * (4096 - 64 + 1));
  const doc = Array.from({ length: len }, () => Math.floor(rand() * VOCAB));
  stream.push(...doc);
  lines.push(JSON.stringify(doc));
}
writeFileSync(corpus, `${lines.join('\n')}\n`);
console.log(`corpus: ${lines.length} documents, ${stream.length} tokens, ${statSync(corpus).size} bytes`);
// The windows every variant sees: the packed stream cut into seq-len rows.
const rowsOf = (seqs: number): number[][][] => {
  const out: number[][][] = [];
  for (let s = 0; s < seqs; s += batch) {
    const rows: number[][] = [];
    for (let i = s; i < Math.min(seqs, s + batch); i++) rows.push(stream.slice(i * seqLen, (i + 1) * seqLen));
    out.push(rows);
  }
  return out;
};

// 2. Engines: the HF worker (loads alone first), then neurotap in this process.
const threadEnv = { OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads) };
const model = await nt.loadModel(modelDir, { threads });
console.log(`neurotap from ${root}: addon ${addonPath} (sha256 ${addonAtStart}…)${root === repo ? `, checkout ${git('rev-parse', '--short', 'HEAD')}${git('status', '--porcelain', '--untracked-files=no') ? ' with local changes' : ''}` : ''}`);
const nLayers = model.config.nLayers;
const dModel = model.config.dModel;
const bytesPerSeq = seqLen * 4 + nLayers * seqLen * dModel * 4;
const perShard = Math.max(batch, Math.floor(TARGET_SHARD_BYTES / bytesPerSeq / batch) * batch); // the CLI's default
const child = spawn(
  python,
  [join(here, 'hf_extract.py'), modelDir, '--seq-len', String(seqLen), '--batch', String(batch), '--threads', String(threads), '--shard-size', String(perShard), ...(flags['no-fsync-hf'] ? ['--no-fsync'] : [])],
  { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...threadEnv } },
);
const hf = new WorkerChannel(child, 'HF worker');
let cleaned = false;
const cleanup = () => {
  if (cleaned) return;
  cleaned = true;
  hf.quit();
  model.dispose();
  rmSync(work, { recursive: true, force: true });
};
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

try {
  const ready = await hf.next();
  if (ready.ready !== true) throw new Error(`HF worker: unexpected first reply ${JSON.stringify(ready)}`);
  console.log(
    `HF: torch ${String(ready.torch)}, transformers ${String(ready.transformers)}, safetensors ${String(ready.safetensors)}, numpy ${String(ready.numpy)}, ` +
      `${String(ready.threads)} threads, attention '${String(ready.attn_implementation)}', fsync ${String(ready.fsync)}`,
  );
  console.log(`neurotap: ${model.threads} threads; ${nLayers} layers, d_model ${dModel}; shard = ${perShard} sequences (${((perShard * bytesPerSeq) / 2 ** 20).toFixed(1)} MiB)`);

  // One batch of activation-sized data for the write variant. What the bytes are does not
  // change what writing, fsync and sha256 cost, so they are filled once, pseudo-randomly.
  const fill = prng(7);
  const keep = new Map<string, Float32Array>();
  for (let l = 0; l < nLayers; l++) keep.set(`blocks.${l}.hook_resid_post`, Float32Array.from({ length: batch * seqLen * dModel }, () => fill() * 2 - 1));
  const keepTokens = Int32Array.from(stream.slice(0, batch * seqLen));
  let outCount = 0;
  const freshDir = (tag: string) => join(work, `${tag}-${outCount++}`);

  const measure: Record<Variant, (seqs: number, keepOut?: boolean) => Promise<Sample & { dir?: string }>> = {
    async cli(seqs, keepOut) {
      const out = freshDir('cli');
      const args = [
        join(root, 'bin', 'neurotap.js'), 'extract', '--model', modelDir, '--tokens', corpus, '--hooks', HOOKS,
        '--seq-len', String(seqLen), '--batch-size', String(batch), '--out', out, '--out-dtype', 'f32',
        '--threads', String(threads), '--max-tokens', String(seqs * seqLen), '--overwrite',
      ];
      // /usr/bin/time, where there is one, reports the process's CPU time, page faults and context switches.
      if (addonHash() !== addonAtStart) throw new Error(`${addonPath} changed during the run (rebuilt?); measurements would mix two builds`);
      const timeFile = join(work, 'time.txt');
      const argv = TIME ? [TIME, '-o', timeFile, '-f', '%U %S %R %w %c', process.execPath, ...args] : [process.execPath, ...args];
      const t0 = performance.now();
      const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const code = await new Promise<number | null>((r) => p.on('close', r));
      const wall = (performance.now() - t0) / 1000;
      if (code !== 0) throw new Error(`neurotap extract exited ${code}:\n${stderr}`);
      const m = /done: (\d+) tokens in ([\d.]+) s \(.*\), (\d+) bytes written/.exec(stderr);
      if (!m) throw new Error(`no summary line in:\n${stderr}`);
      const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as { run: { sequencesPerShard: number }; shards: unknown[]; complete: boolean };
      if (!manifest.complete || manifest.run.sequencesPerShard !== perShard) throw new Error(`unexpected manifest: ${JSON.stringify(manifest.run)}`);
      if (!keepOut) rmSync(out, { recursive: true, force: true });
      const extra: Record<string, number> = { wall, shards: manifest.shards.length };
      let cpu = NaN;
      if (TIME) {
        const [user, sys, minorFaults, waits, preempted] = readFileSync(timeFile, 'utf8').trim().split('\n').pop()!.split(' ').map(Number) as [number, number, number, number, number];
        cpu = user + sys;
        Object.assign(extra, { user, sys, minorFaults, voluntarySwitches: waits, involuntarySwitches: preempted });
      }
      return { seconds: Number(m[2]), cpu, tokens: Number(m[1]), bytes: Number(m[3]), extra, ...(keepOut ? { dir: out } : {}) };
    },
    async hf(seqs, keepOut) {
      const out = freshDir('hf');
      const t0 = performance.now();
      const r = (await hf.request(JSON.stringify({ cmd: 'run', corpus, out, max_tokens: seqs * seqLen }))) as Record<string, number>;
      const wall = (performance.now() - t0) / 1000;
      if (!keepOut) rmSync(out, { recursive: true, force: true });
      const { seconds, tokens, bytes, cpu_seconds: cpu, ...extra } = r;
      return { seconds: seconds!, cpu: cpu!, tokens: tokens!, bytes: bytes!, extra: { ...extra, wall }, ...(keepOut ? { dir: out } : {}) };
    },
    async forward(seqs) {
      const batches = rowsOf(seqs);
      const per: number[] = [];
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (const rows of batches) {
        const a = performance.now();
        await model.run(rows, { returnLogits: false, stopAtLayer: nLayers });
        per.push(performance.now() - a);
      }
      const seconds = (performance.now() - t0) / 1000;
      return { seconds, cpu: cpuSince(c0), tokens: seqs * seqLen, bytes: 0, extra: { medianBatchSeconds: median(per) / 1000 } };
    },
    async capture(seqs) {
      const batches = rowsOf(seqs);
      const per: number[] = [];
      let bytes = 0;
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (const rows of batches) {
        const a = performance.now();
        const { cache } = await model.run(rows, { capture: [HOOKS], returnLogits: false, stopAtLayer: nLayers });
        per.push(performance.now() - a);
        for (const t of cache.values()) bytes += t.data.byteLength;
      }
      const seconds = (performance.now() - t0) / 1000;
      return { seconds, cpu: cpuSince(c0), tokens: seqs * seqLen, bytes, extra: { medianBatchSeconds: median(per) / 1000 } };
    },
    async write(seqs) {
      const out = freshDir('write');
      mkdirSync(out);
      const hooks = [...keep.keys()].map((name) => ({ name, shapePerSeq: [seqLen, dModel] }));
      let appendS = 0;
      let finishS = 0;
      let bytes = 0;
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      for (let s0 = 0, shard = 0; s0 < seqs; s0 += perShard, shard++) {
        const n = Math.min(perShard, seqs - s0);
        const w = new ShardWriter(out, shard, { seqLen, hooks, outDtype: 'f32', nSeq: n, metadata: { producer: 'neurotap extract' } });
        for (let b0 = 0; b0 < n; b0 += batch) {
          const b = Math.min(batch, n - b0);
          const acts = new Map([...keep].map(([name, data]) => [name, data.subarray(0, b * seqLen * dModel)]));
          const a = performance.now();
          await w.append({ tokens: keepTokens.subarray(0, b * seqLen), activations: acts });
          appendS += (performance.now() - a) / 1000;
        }
        const a = performance.now();
        bytes += (await w.finish()).bytes;
        finishS += (performance.now() - a) / 1000;
      }
      const seconds = (performance.now() - t0) / 1000;
      const cpu = cpuSince(c0);
      rmSync(out, { recursive: true, force: true });
      return { seconds, cpu, tokens: seqs * seqLen, bytes, extra: { appendSeconds: appendS, finishSeconds: finishS } };
    },
  };

  // 3. Warm-up: one batch per variant. Keeps the CLI's and HF's files to check that both wrote
  //    the same tokens and (within float error) the same activations.
  const warmDirs: Partial<Record<Variant, string>> = {};
  for (const v of variants) {
    const r = await measure[v](warmSeqs, true);
    if (r.dir && (v === 'cli' || v === 'hf')) warmDirs[v] = r.dir;
    console.log(`warm-up ${v}: ${r.tokens} tokens in ${r.seconds.toFixed(2)} s (${(r.tokens / r.seconds).toFixed(1)} tok/s)`);
  }
  let check = 'not run (needs the cli and hf variants)';
  if (warmDirs.cli && warmDirs.hf) {
    const a = nt.readSafetensors(join(warmDirs.cli, 'shard-00000.safetensors'));
    const b = nt.readSafetensors(join(warmDirs.hf, 'shard-00000.safetensors'));
    const ta = a.get('tokens')!.data as Int32Array;
    const tb = b.get('tokens')!.data as Int32Array;
    if (ta.length !== tb.length || ta.some((x, i) => x !== tb[i])) throw new Error('the CLI and HF wrote different tokens');
    let worst = 0;
    for (let l = 0; l < nLayers; l++) {
      const name = `blocks.${l}.hook_resid_post`;
      const x = a.get(name)!.data as Float32Array;
      const y = b.get(name)!.data as Float32Array;
      if (x.length !== y.length) throw new Error(`${name}: ${x.length} vs ${y.length} values`);
      let maxDiff = 0;
      let maxRef = 0;
      for (let i = 0; i < x.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(x[i]! - y[i]!));
        maxRef = Math.max(maxRef, Math.abs(y[i]!));
      }
      worst = Math.max(worst, maxDiff / maxRef);
    }
    check = `same tokens; all ${nLayers} hooks agree, worst max|diff|/max|HF| ${worst.toExponential(2)}`;
    console.log(`check, shard 0 of the warm-up, CLI vs HF: ${check}`);
    if (worst > 1e-4) throw new Error('the CLI and HF activations disagree');
  }
  for (const d of Object.values(warmDirs)) rmSync(d, { recursive: true, force: true });

  // sha256 from memory, for the breakdown (the writer hashes each shard by reading it back).
  let hashGBs: number;
  {
    const t0 = performance.now();
    const h = createHash('sha256');
    for (const d of keep.values()) h.update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    h.digest();
    hashGBs = [...keep.values()].reduce((s, d) => s + d.byteLength, 0) / 1e9 / ((performance.now() - t0) / 1000);
  }

  // 4. Reps: rep i starts at variant i mod V and goes backwards every other cycle of V. Each
  //    rep waits for a quiet machine first; a rep in which another process used more than
  //    --max-other CPU seconds during any measurement is set aside and run again (at most
  //    --extra-reps times in all). Set-aside reps are printed and kept in the JSON, not used.
  const V = variants.length;
  const samples: Sample[][] = variants.map(() => []);
  const dropped: Sample[][] = variants.map(() => []);
  const started = new Date();
  let extraLeft = extraReps;
  for (let i = 0; i < reps; i++) {
    const quiet = await waitQuiet();
    const forward = Math.floor(i / V) % 2 === 0;
    const order = Array.from({ length: V }, (_, j) => (forward ? i + j : i + V - j) % V);
    const parts: string[] = [];
    const got: Sample[] = [];
    for (const k of order) {
      const m0 = machineCpu();
      const r = await measure[variants[k]!](nSeqs);
      const m1 = machineCpu();
      // CPU the rest of the machine used meanwhile: a noise flag on this shared machine.
      r.extra.otherCpu = m1.busy - m0.busy - (Number.isNaN(r.cpu) ? 0 : r.cpu);
      r.extra.steal = m1.steal - m0.steal;
      if (r.tokens !== nTokens) throw new Error(`${variants[k]} did ${r.tokens} tokens, expected ${nTokens}`);
      got[k] = r;
      parts.push(`${variants[k]} ${r.seconds.toFixed(2)} s (${(r.tokens / r.seconds).toFixed(1)} tok/s, cpu ${r.cpu.toFixed(1)} s, others ${r.extra.otherCpu.toFixed(1)} s)`);
    }
    const noisy = got.some((r) => r.extra.otherCpu! > maxOther);
    const keepRep = !noisy || extraLeft === 0;
    console.log(`rep ${i + 1}/${reps}${keepRep ? '' : ' SET ASIDE (other processes busy)'} (waited ${quiet.toFixed(0)} s for quiet; order ${order.map((k) => variants[k]).join(' ')}): ${parts.join(', ')}`);
    got.forEach((r, k) => (keepRep ? samples : dropped)[k]!.push(r));
    if (!keepRep) {
      extraLeft--;
      i--;
    }
  }
  const ended = new Date();
  if (addonHash() !== addonAtStart) throw new Error(`${addonPath} changed during the run (rebuilt?)`);

  // 5. Summary.
  const med = (v: Variant, f: (s: Sample) => number) => median(samples[variants.indexOf(v)]!.map(f));
  const tps = (v: Variant) => nTokens / med(v, (s) => s.seconds);
  const has = (v: Variant) => variants.includes(v);
  const perRepRatio = (a: Variant, b: Variant) => median(samples[variants.indexOf(a)]!.map((s, i) => samples[variants.indexOf(b)]![i]!.seconds / s.seconds));
  const cpu = cpuModel();
  console.log('');
  console.log(
    `extract ${HOOKS}, GPT-2 small (random weights), seq ${seqLen}, batch ${batch}, ${threads} threads, ${nTokens} tokens per measurement, ` +
      `${reps} reps after a ${warmSeqs * seqLen}-token warm-up; ${cpu}; ${started.toISOString()} .. ${ended.toISOString()}; neurotap from ${root} (addon sha256 ${addonAtStart}…)`,
  );
  console.log('| variant | median s | tokens/s | min–max s | median CPU s | bytes written |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const v of variants) {
    const s = samples[variants.indexOf(v)]!.map((x) => x.seconds);
    console.log(`| ${v} | ${median(s).toFixed(2)} | ${tps(v).toFixed(1)} | ${Math.min(...s).toFixed(2)}–${Math.max(...s).toFixed(2)} | ${med(v, (x) => x.cpu).toFixed(2)} | ${med(v, (x) => x.bytes)} |`);
  }
  const others = samples.flat().map((x) => x.extra.otherCpu!);
  const steal = samples.flat().map((x) => x.extra.steal!);
  console.log(`reps set aside because other processes used over ${maxOther} CPU s during a measurement: ${dropped[0]!.length}`);
  console.log(`CPU used by other processes during a kept measurement: median ${median(others).toFixed(1)} s, max ${Math.max(...others).toFixed(1)} s; steal median ${median(steal).toFixed(1)} s`);
  const ratios: Record<string, number> = {};
  const pairs: [Variant, Variant, string][] = [
    ['cli', 'forward', 'cli / forward'],
    ['cli', 'capture', 'cli / capture'],
    ['capture', 'forward', 'capture / forward'],
    ['cli', 'hf', 'cli / hf'],
  ];
  for (const [a, b, label] of pairs) {
    if (!has(a) || !has(b)) continue;
    ratios[label] = perRepRatio(a, b);
    console.log(`tokens/s ${label}: ${ratios[label]!.toFixed(3)} (median of per-rep ratios; ratio of medians ${(tps(a) / tps(b)).toFixed(3)})`);
  }
  if (has('cli')) {
    console.log(`cli: median process wall ${med('cli', (s) => s.extra.wall!).toFixed(2)} s (load and start-up ${(med('cli', (s) => s.extra.wall! - s.seconds)).toFixed(2)} s)`);
    if (TIME) {
      const keys = ['user', 'sys', 'minorFaults', 'voluntarySwitches', 'involuntarySwitches'];
      console.log(`cli (whole process, /usr/bin/time): median ${keys.map((k) => `${k} ${+med('cli', (s) => s.extra[k]!).toFixed(2)}`).join(', ')}`);
    }
  }
  if (has('hf')) {
    const keys = ['read_seconds', 'forward_seconds', 'numpy_seconds', 'save_seconds', 'fsync_seconds'];
    console.log(`hf: median ${keys.map((k) => `${k} ${med('hf', (s) => s.extra[k]!).toFixed(2)}`).join(', ')}`);
  }
  if (has('write')) console.log(`write: median append ${med('write', (s) => s.extra.appendSeconds!).toFixed(2)} s, finish (fsync + sha256 read-back + rename) ${med('write', (s) => s.extra.finishSeconds!).toFixed(2)} s; sha256 from memory ${hashGBs.toFixed(2)} GB/s`);
  console.log(
    JSON.stringify({
      bench: 'extract-gpt2',
      hooks: HOOKS,
      seqLen,
      batch,
      threads,
      tokens: nTokens,
      reps,
      perShard,
      cpu,
      started: started.toISOString(),
      ended: ended.toISOString(),
      root,
      addonSha256: addonAtStart,
      checkout: git('rev-parse', '--short', 'HEAD'),
      torch: ready.torch,
      transformers: ready.transformers,
      check,
      hashGBs,
      ratios,
      maxOther,
      samples: Object.fromEntries(variants.map((v, k) => [v, samples[k]])),
      setAside: Object.fromEntries(variants.map((v, k) => [v, dropped[k]])),
    }),
  );
} finally {
  cleanup();
}
