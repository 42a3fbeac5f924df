// Fuzz supervisor: runs case ids through long-lived worker processes (worker.ts), one case at a
// time per worker, killing and restarting a worker whose case passes the time or RSS bound or
// crashes it; that case, and only that case, gets the failure. See summary.ts for the report.
import { fork, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { parseCaseId, type Kind } from './cases.js';
import { targetRoot, type CaseOutcome, type FromWorker } from './protocol.js';

export interface FuzzOptions {
  /** Worker processes run in parallel. Defaults to 2. */
  workers?: number;
  /** Wall-clock bound per case. Defaults to 5000 ms. */
  timeoutMs?: number;
  /** Bound on the worker's peak RSS growth during a case. Defaults to 1.5 GiB. */
  memoryBytes?: number;
  /** A worker is replaced after this many cases (or once its RSS has grown 512 MiB). Defaults to 200. */
  recycleEvery?: number;
  /** Called after each case. */
  onResult?: (r: CaseResult, done: number, total: number) => void;
}

export interface CaseResult {
  id: string;
  kind: Kind;
  what: string;
  outcome: CaseOutcome;
  ms: number;
}

const WORKER = join(dirname(fileURLToPath(import.meta.url)), 'worker.ts');
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const STARTUP_MS = 120_000;

/** Peak RSS since the last reset (VmHWM), else current RSS (VmRSS), in bytes; 0 once the process is gone. */
function rssOf(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmHWM:\s+(\d+) kB/.exec(status) ?? /VmRSS:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Resets the peak RSS (VmHWM) so it measures the case about to run. */
function resetPeak(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
  } catch {
    // Older kernels: VmHWM then keeps the process peak, a stricter bound.
  }
}

/** One worker process and the case it is running. */
class Worker {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  tmp = '';
  casesRun = 0;
  baseRss = 0;
  /** Ids this worker ran before the current one (for attributing delayed crashes). */
  history: string[] = [];
  private output = '';
  private pending: ((m: FromWorker | { type: 'exit'; why: string }) => void) | null = null;

  constructor(heapMb: number) {
    this.child = fork(WORKER, [], {
      execArgv: ['--import', TSX, '--expose-gc', `--max-old-space-size=${heapMb}`],
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    const keep = (d: Buffer) => {
      this.output = (this.output + d.toString()).slice(-4000);
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.child.on('message', (m: FromWorker) => this.pending?.(m));
    this.child.on('exit', (code, signal) => {
      this.pending?.({ type: 'exit', why: signal ? `killed by ${signal}` : `exited with code ${code}` });
      if (this.tmp) rmSync(this.tmp, { recursive: true, force: true });
    });
    this.ready = new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`fuzz worker did not start in ${STARTUP_MS} ms: ${this.output}`)), STARTUP_MS);
      this.pending = (m) => {
        clearTimeout(t);
        if (m.type === 'ready') {
          this.tmp = m.tmp;
          this.baseRss = rssOf(this.child.pid!);
          resolve();
        } else reject(new Error(`fuzz worker failed to start (${m.type === 'exit' ? m.why : m.type}): ${this.output}`));
      };
    });
  }

  private killed = false;

  get alive(): boolean {
    return !this.killed && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Runs one case within the bounds; a bound or crash kills this worker. */
  run(id: string, timeoutMs: number, memoryBytes: number): Promise<{ what: string; outcome: CaseOutcome }> {
    const pid = this.child.pid!;
    resetPeak(pid);
    const start = rssOf(pid);
    this.output = '';
    let what = '';
    return new Promise((resolve) => {
      let poll: NodeJS.Timeout | undefined;
      let timer: NodeJS.Timeout | undefined;
      const finish = (outcome: CaseOutcome, kill: boolean) => {
        clearTimeout(timer);
        clearInterval(poll);
        this.pending = null;
        if (kill && this.alive) {
          this.killed = true;
          this.child.kill('SIGKILL');
        }
        this.casesRun++;
        this.history.push(id);
        resolve({ what, outcome });
      };
      const fail = (outcome: string, message: string, kill: boolean) => finish({ status: 'failure', outcome, message }, kill);
      this.pending = (m) => {
        if (m.type === 'started') what = m.what;
        else if (m.type === 'done') finish(m.outcome, false);
        else if (m.type === 'exit') {
          const oom = /heap out of memory|Allocation failed/i.test(this.output);
          const tail = this.output.trim().split('\n').slice(-3).join(' | ').slice(0, 400);
          fail(oom ? 'memory' : 'crash', `worker ${m.why}${tail ? `: ${tail}` : ''}`, false);
        }
      };
      timer = setTimeout(() => fail('timeout', `no outcome within ${timeoutMs} ms`, true), timeoutMs);
      poll = setInterval(() => {
        const grown = rssOf(pid) - start;
        if (grown > memoryBytes) fail('memory', `RSS grew by ${(grown / 2 ** 20).toFixed(0)} MiB (bound ${(memoryBytes / 2 ** 20).toFixed(0)} MiB)`, true);
      }, 20);
      this.child.send({ id });
    });
  }

  stop(): void {
    if (this.alive && this.child.connected) this.child.disconnect();
    this.killed = true;
  }
}

// A timeout is the case's own: its promise never settled. A crash or the heap limit may come from
// damage an earlier case left in the worker, so those are rerun alone before being charged.
const RERUN_ALONE = new Set(['memory', 'crash']);

/** Runs `ids` and returns their results in the same order. */
export async function runFuzz(ids: readonly string[], options: FuzzOptions = {}): Promise<CaseResult[]> {
  const entry = join(targetRoot(), 'dist', 'index.js');
  if (!existsSync(entry)) throw new Error(`${entry} is missing: build the checkout under test (npx tsc -p tsconfig.build.json)`);
  const timeoutMs = options.timeoutMs ?? 5000;
  const memoryBytes = options.memoryBytes ?? 1.5 * 2 ** 30;
  const recycleEvery = options.recycleEvery ?? 200;
  const heapMb = Math.ceil(memoryBytes / 2 ** 20);
  const results: CaseResult[] = new Array(ids.length);
  let next = 0;
  let done = 0;

  const runIn = async (w: Worker, id: string) => {
    await w.ready;
    const t0 = performance.now();
    const r = await w.run(id, timeoutMs, memoryBytes);
    return { ...r, ms: Math.round(performance.now() - t0) };
  };

  const lane = async () => {
    let w: Worker | null = null;
    while (next < ids.length) {
      const i = next++;
      const id = ids[i]!;
      if (w && (!w.alive || w.casesRun >= recycleEvery || rssOf(w.child.pid!) > w.baseRss + 512 * 2 ** 20)) {
        w.stop();
        w = null;
      }
      w ??= new Worker(heapMb);
      const earlier = w.history.slice(-3);
      let r = await runIn(w, id);
      if (r.outcome.status === 'failure' && RERUN_ALONE.has(r.outcome.outcome) && earlier.length > 0) {
        // The worker had run other cases: run this one alone in a fresh worker, so that damage left
        // by an earlier case is not charged to it.
        w.stop();
        w = new Worker(heapMb);
        const alone = await runIn(w, id);
        if (alone.outcome.status !== 'failure') {
          // It passes alone: still a failure (some case left the worker damaged), marked as such.
          const first = r.outcome;
          const aloneLabel = alone.outcome.status === 'coded' ? alone.outcome.code : 'ok';
          r = { ...alone, outcome: { status: 'failure', outcome: `${first.outcome}-in-sequence`, message: `${first.message}; run alone it gave ${aloneLabel} (earlier cases in that worker: ${earlier.join(' ')})` } };
        } else r = alone;
      }
      if (!w.alive) w = null;
      results[i] = { id, kind: parseCaseId(id).kind, ...r };
      options.onResult?.(results[i]!, ++done, ids.length);
    }
    w?.stop();
  };

  await Promise.all(Array.from({ length: Math.max(1, options.workers ?? 2) }, lane));
  return results;
}
