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
