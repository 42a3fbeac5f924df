// Helpers shared by the benchmark scripts: flag parsing, medians, the CPU's name, a seeded PRNG,
// the line-oriented JSON channel to a Python baseline worker.
import type { ChildProcessByStdio } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';

/** A positive integer flag value, or an error naming the flag. */
export function positiveInt(name: string, s: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got '${s}'`);
  return n;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The CPU model line of /proc/cpuinfo (or what os.cpus() says elsewhere). */
export function cpuModel(): string {
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('model name'));
    if (line) return line.slice(line.indexOf(':') + 1).trim();
  } catch {
    // not Linux
  }
  return cpus()[0]?.model ?? 'unknown';
}

/** Deterministic uniform floats in [0, 1) (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A line-oriented JSON channel to a Python baseline worker (PyTorch / HF): one command line in, one JSON line out. */
export class WorkerChannel {
  private readonly lines: AsyncIterator<string>;
  constructor(
    private readonly child: ChildProcessByStdio<Writable, Readable, null>,
    private readonly label: string,
  ) {
    this.lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  }
  /** The next reply; throws if the worker exited or replied with an error. */
  async next(): Promise<Record<string, unknown>> {
    const { value, done } = await this.lines.next();
    if (done) throw new Error(`${this.label} exited (code ${this.child.exitCode})`);
    const msg = JSON.parse(value) as Record<string, unknown>;
    if (typeof msg.error === 'string') throw new Error(`${this.label}: ${msg.error}`);
    return msg;
  }
  /** Sends one command line and returns the reply. */
  async request(line: string): Promise<Record<string, unknown>> {
    this.child.stdin.write(`${line}\n`);
    return this.next();
  }
  /** The `seconds` of a timing reply. */
  async seconds(line: string): Promise<number> {
    const msg = await this.request(line);
    if (typeof msg.seconds !== 'number') throw new Error(`${this.label}: unexpected reply ${JSON.stringify(msg)}`);
    return msg.seconds;
  }
  quit(): void {
    if (this.child.exitCode === null) this.child.stdin.end('quit\n');
  }
}

/** The machine's busy and total CPU seconds so far, from the first line of /proc/stat (null off Linux). */
export function cpuTimes(): { busy: number; total: number } | null {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest is inside user); USER_HZ is 100.
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
    const busy = user + nice + system + irq + softirq + steal;
    return { busy: busy / 100, total: (busy + idle + iowait) / 100 };
  } catch {
    return null;
  }
}

/** The 1-minute load average (NaN off Linux). */
export function loadAvg1(): number {
  try {
    return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
  } catch {
    return Number.NaN;
  }
}

/** One timed measurement: wall seconds and the CPU seconds of the worker process, if it ran there. */
export interface Timed {
  seconds: number;
  workerCpu?: number;
}

/** A named thing to time once per rep. */
export interface Variant {
  name: string;
  run: () => Promise<Timed>;
}

/** What one rep measured, and how busy the rest of the machine was meanwhile. */
export interface Rep {
  seconds: Record<string, number>;
  /** CPU used by other processes during the rep, in cores (machine busy - this process - the worker). */
  foreignCores: number;
  loadBefore: number;
  loadAfter: number;
  busy: boolean;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Waits (up to `quietWait` seconds) for a second in which other processes use under
 * `maxForeign` cores (the machine's busy time from /proc/stat minus this process's);
 * returns the seconds waited.
 */
export async function waitForQuiet(maxForeign: number, quietWait: number): Promise<number> {
  const waitStart = performance.now();
  while (performance.now() - waitStart < quietWait * 1000) {
    const a = cpuTimes();
    const u0 = process.cpuUsage();
    const t0 = performance.now();
    await sleep(1000);
    const b = cpuTimes();
    if (!a || !b) break;
    const u = process.cpuUsage(u0);
    const own = (u.user + u.system) / 1e6;
    if ((b.busy - a.busy - own) / ((performance.now() - t0) / 1000) < maxForeign) break;
  }
  return (performance.now() - waitStart) / 1000;
}

/**
 * Runs every variant once per rep, alternating the order rep by rep (forward, then reversed),
 * and checks the machine around each rep: before it, waits (up to `quietWait` seconds) for a
 * second in which other processes use under `maxForeign` cores; during it, takes the machine's
 * busy CPU time from /proc/stat minus this process's and the worker's own CPU time. A rep in
 * which other processes averaged more than `maxForeign` cores is busy and does not count;
 * reps continue until `reps` quiet ones or `maxReps` in all. Prints one line per rep.
 */
export async function alternatingReps(
  variants: readonly Variant[],
  opts: { reps: number; maxReps: number; maxForeign: number; quietWait: number; log?: (line: string) => void },
): Promise<Rep[]> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const out: Rep[] = [];
  for (let i = 0; i < opts.maxReps && out.filter((r) => !r.busy).length < opts.reps; i++) {
    const waited = await waitForQuiet(opts.maxForeign, opts.quietWait);
    const order = i % 2 === 0 ? [...variants] : [...variants].reverse();
    const loadBefore = loadAvg1();
    const c0 = cpuTimes();
    const u0 = process.cpuUsage();
    const w0 = performance.now();
    let workerCpu = 0;
    const seconds: Record<string, number> = {};
    for (const v of order) {
      const t = await v.run();
      seconds[v.name] = t.seconds;
      workerCpu += t.workerCpu ?? 0;
    }
    const wall = (performance.now() - w0) / 1000;
    const c1 = cpuTimes();
    const u = process.cpuUsage(u0);
    const loadAfter = loadAvg1();
    const foreignCores = c0 && c1 ? Math.max(0, c1.busy - c0.busy - (u.user + u.system) / 1e6 - workerCpu) / wall : 0;
    const busy = foreignCores > opts.maxForeign;
    out.push({ seconds, foreignCores, loadBefore, loadAfter, busy });
    log(
      `rep ${i + 1} (${i % 2 === 0 ? 'forward' : 'reversed'} order, waited ${waited.toFixed(0)} s for quiet): ` +
        variants.map((v) => `${v.name} ${seconds[v.name]!.toFixed(3)}`).join(', ') +
        ` s; others used ${foreignCores.toFixed(2)} cores, load ${loadBefore.toFixed(2)} -> ${loadAfter.toFixed(2)}${busy ? ' BUSY, not counted' : ''}`,
    );
  }
  return out;
}

/** Median seconds per variant over the quiet reps (all reps if none was quiet), and how many counted. */
export function summarizeReps(reps: readonly Rep[], names: readonly string[]): { medians: Record<string, number>; counted: number; allBusy: boolean } {
  const quiet = reps.filter((r) => !r.busy);
  const use = quiet.length > 0 ? quiet : reps;
  const medians: Record<string, number> = {};
  for (const n of names) medians[n] = median(use.map((r) => r.seconds[n]!));
  return { medians, counted: use.length, allBusy: quiet.length === 0 };
}

/**
 * The range of one variant's seconds over the counted reps, as "min-max". A wide range in quiet
 * reps means load this process cannot see (other VMs on the host: memory bandwidth, caches).
 */
export function repRange(reps: readonly Rep[], name: string): string {
  const quiet = reps.filter((r) => !r.busy);
  const xs = (quiet.length > 0 ? quiet : reps).map((r) => r.seconds[name]!);
  return `${Math.min(...xs).toFixed(3)}-${Math.max(...xs).toFixed(3)}`;
}

/** Median over the counted reps of the per-rep ratio a / b. */
export function medianRatio(reps: readonly Rep[], a: string, b: string): number {
  const quiet = reps.filter((r) => !r.busy);
  const use = quiet.length > 0 ? quiet : reps;
  return median(use.map((r) => r.seconds[a]! / r.seconds[b]!));
}

/** Starts a Python baseline worker on `threads` intra-op threads and waits for its `ready` line. */
export async function startWorker(
  python: string,
  script: string,
  args: readonly string[],
  threads: number,
  label = 'torch worker',
): Promise<{ worker: WorkerChannel; ready: Record<string, unknown>; stop: () => void }> {
  const { spawn } = await import('node:child_process');
  const env = { ...process.env, OMP_NUM_THREADS: String(threads), MKL_NUM_THREADS: String(threads) };
  const child = spawn(python, [script, ...args, '--threads', String(threads)], { stdio: ['pipe', 'pipe', 'inherit'], env });
  const worker = new WorkerChannel(child, label);
  const ready = await worker.next();
  if (ready.ready !== true) throw new Error(`${label}: unexpected first reply ${JSON.stringify(ready).slice(0, 200)}`);
  return {
    worker,
    ready,
    stop: () => {
      if (child.exitCode === null && !child.stdin.writableEnded) child.stdin.end('quit\n');
    },
  };
}

/** A timing command to the worker as a {@link Timed} (its `seconds` and `cpu`). */
export async function workerTimed(worker: WorkerChannel, command: string): Promise<Timed> {
  const msg = await worker.request(command);
  if (typeof msg.seconds !== 'number') throw new Error(`worker: unexpected reply ${JSON.stringify(msg).slice(0, 200)}`);
  return { seconds: msg.seconds, workerCpu: typeof msg.cpu === 'number' ? msg.cpu : undefined };
}

/** Times an async call in this process. */
export async function timeIt(fn: () => Promise<unknown>): Promise<Timed> {
  const s = performance.now();
  await fn();
  return { seconds: (performance.now() - s) / 1000 };
}

/** The random benchmark models: GPT-2 small and a Llama-architecture model of the same size. */
export type BenchArch = 'gpt2' | 'llama';

/** Writes bench/out's `arch` model with bench/make-<arch>-small.py if `dir` lacks it. */
export async function ensureSmallModel(dir: string, python: string, here: string, arch: BenchArch = 'gpt2'): Promise<void> {
  const { existsSync } = await import('node:fs');
  const { spawnSync } = await import('node:child_process');
  const { join } = await import('node:path');
  if (existsSync(join(dir, 'config.json')) && existsSync(join(dir, 'model.safetensors'))) return;
  const maker = `make-${arch}-small.py`;
  console.log(`writing ${dir} ...`);
  const r = spawnSync(python, [join(here, maker), dir], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`${maker} failed (status ${r.status})`);
}

/** The flags every load-checked benchmark takes, parsed. */
export interface BenchSettings {
  seq: number;
  threads: number;
  reps: number;
  maxReps: number;
  warmup: number;
  maxForeign: number;
  quietWait: number;
  arch: BenchArch;
  modelDir: string;
  python: string;
  /** The script's own flags, as given (or their defaults). */
  extra: Record<string, string>;
}

/**
 * Parses the shared flags (--seq --threads --reps --max-reps --warmup --max-foreign --quiet-wait
 * --model --python) with the script's defaults and its own string flags `extra` (name -> default),
 * and writes the model under `here`/out when --model is not given and it is missing: GPT-2 small,
 * or, when `extra` has an `arch` flag, bench/out/<arch>-small.
 */
export async function benchSettings(
  here: string,
  defaults: { seq?: string; reps?: string; maxReps?: string; warmup?: string },
  extra: Record<string, string>,
): Promise<BenchSettings> {
  const { parseArgs } = await import('node:util');
  const { join, resolve } = await import('node:path');
  const own = Object.fromEntries(Object.entries(extra).map(([k, v]) => [k, { type: 'string' as const, default: v }]));
  const { values: flags } = parseArgs({
    options: {
      seq: { type: 'string', default: defaults.seq ?? '128' },
      threads: { type: 'string', default: '2' },
      reps: { type: 'string', default: defaults.reps ?? '5' },
      'max-reps': { type: 'string', default: defaults.maxReps ?? '15' },
      warmup: { type: 'string', default: defaults.warmup ?? '1' },
      'max-foreign': { type: 'string', default: '0.3' },
      'quiet-wait': { type: 'string', default: '60' },
      model: { type: 'string' },
      python: { type: 'string', default: process.env.PYTHON ?? 'python3' },
      ...own,
    },
  });
  const f = flags as Record<string, string | undefined>;
  const python = f.python!;
  const arch = f.arch ?? 'gpt2';
  if (arch !== 'gpt2' && arch !== 'llama') throw new Error(`--arch must be gpt2 or llama, not ${arch}`);
  const modelDir = resolve(f.model ?? join(here, 'out', `${arch}-small`));
  await ensureSmallModel(modelDir, python, here, arch);
  return {
    seq: positiveInt('seq', f.seq!),
    threads: positiveInt('threads', f.threads!),
    reps: positiveInt('reps', f.reps!),
    maxReps: positiveInt('max-reps', f['max-reps']!),
    warmup: f.warmup === '0' ? 0 : positiveInt('warmup', f.warmup!),
    maxForeign: Number(f['max-foreign']),
    quietWait: Number(f['quiet-wait']),
    arch,
    modelDir,
    python,
    extra: Object.fromEntries(Object.keys(extra).map((k) => [k, f[k]!])),
  };
}

/**
 * How the reps went, for the summary: how many were quiet, and a warning to print where none
 * was (then every median and ratio is over busy reps: flagged, not a result).
 */
export function quietness(reps: readonly Rep[], maxForeign: number): { quiet: number; all: number; flagged: boolean; line: string } {
  const quiet = reps.filter((r) => !r.busy).length;
  const loads = reps.flatMap((r) => [r.loadBefore, r.loadAfter]);
  const foreign = reps.map((r) => r.foreignCores);
  const line =
    `${quiet} quiet reps of ${reps.length} (a rep is busy when other processes used over ${maxForeign} cores; ` +
    `here ${Math.min(...foreign).toFixed(2)}-${Math.max(...foreign).toFixed(2)}), load average ${Math.min(...loads).toFixed(2)}-${Math.max(...loads).toFixed(2)}` +
    (quiet === 0 ? '. NO QUIET REP: the figures below are medians over BUSY reps, flagged, not results' : '');
  return { quiet, all: reps.length, flagged: quiet === 0, line };
}

/** Starts bench/torch-backward.py in `mode` (more arguments in `args`) and prints its versions line. */
export async function startTorchBackward(
  here: string,
  s: BenchSettings,
  mode: string,
  args: readonly string[],
): Promise<{ worker: WorkerChannel; ready: Record<string, unknown>; stop: () => void }> {
  const { join } = await import('node:path');
  const torch = await startWorker(s.python, join(here, 'torch-backward.py'), [s.modelDir, '--mode', mode, '--seq', String(s.seq), ...args], s.threads);
  const r = torch.ready;
  console.log(`torch ${String(r.torch)}, transformers ${String(r.transformers)}, ${String(r.threads)} threads, attention '${String(r.attn_implementation)}'`);
  return torch;
}
