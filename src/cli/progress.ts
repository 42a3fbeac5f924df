// Extraction progress on stderr: a redrawn bar on a TTY, a line every few seconds otherwise,
// nothing with --quiet; and the end-of-run summary. The bar and ETA follow tokens written over
// the tokens the run will write (exact once the input is read to its end, else estimated from
// the share of input bytes read). Tests: test/cli-extract-progress.test.ts.
import type { Document, SourceSpec } from '../extract/sources.js';

function fmtCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
  return String(Math.round(n));
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return `${h ? `${h}:` : ''}${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}`;
}

function digits(id: number): number {
  let d = 1;
  for (let x = id; x >= 10; x = Math.floor(x / 10)) d++;
  return d;
}

/**
 * The share of the input files' bytes read so far, from the documents read: each document's
 * size in its file is estimated (exact for whole files; a text line plus its newline; the JSON
 * of a JSONL text field or of a token list), and once a file is finished its real size replaces
 * the estimate and corrects the estimates of the next files.
 */
export class InputMeter {
  private file = -1;
  private doneBytes = 0;
  private doneEstimate = 0;
  private current = 0;
  private readonly total: number;

  constructor(
    private readonly spec: SourceSpec,
    private readonly sizes: readonly number[],
  ) {
    this.total = sizes.reduce((a, b) => a + b, 0);
  }

  /** The estimated bytes of `doc` in its file. */
  private estimate(doc: Document): number {
    if (doc.tokens) return doc.tokens.reduce((a, id) => a + digits(id) + 1, 1) + 1;
    const text = doc.text ?? '';
    if (doc.line === 0) return Buffer.byteLength(text);
    if (this.spec.kind === 'jsonl') return Buffer.byteLength(JSON.stringify({ [this.spec.textField]: text })) + 1;
    return Buffer.byteLength(text) + 1;
  }

  read(doc: Document): void {
    while (this.file < this.sizes.length - 1 && (this.file < 0 || this.spec.files[this.file] !== doc.file)) {
      if (this.file >= 0) {
        this.doneBytes += this.sizes[this.file]!;
        this.doneEstimate += this.current;
      }
      this.file++;
      this.current = 0;
    }
    this.current += this.estimate(doc);
  }

  /** Bytes read over input bytes, in [0, 1]; NaN when the input is empty. */
  get fraction(): number {
    if (this.total === 0) return NaN;
    const scale = this.doneEstimate > 0 ? this.doneBytes / this.doneEstimate : 1;
    const inFile = Math.min(this.current * scale, this.sizes[this.file] ?? 0);
    return Math.min(1, (this.doneBytes + inFile) / this.total);
  }
}

/** Progress numbers at one point of a run, as the bar and ETA show them. */
export interface ProgressSnapshot {
  /** Tokens written to shards (those a resumed run kept included). */
  tokens: number;
  /** Tokens the run ends with: exact when `exact`, else an estimate; NaN when unknown. */
  total: number;
  exact: boolean;
  /** tokens / total in [0, 1], never decreasing (an estimate below 1 until the total is exact). */
  fraction: number;
  /** Tokens per second written by this run. */
  rate: number;
  /** Seconds left at `rate`; NaN when unknown. */
  eta: number;
}

export interface ProgressOptions {
  seqLen: number;
  /** Sequences --max-tokens allows (Infinity without it). */
  maxSequences: number;
  meter: InputMeter;
  /** Called with every update (the display is throttled; this is not). */
  onUpdate?: (s: ProgressSnapshot) => void;
  /** Milliseconds between lines when not on a TTY. */
  everyMs?: number;
}

export class Progress {
  private readonly start = performance.now();
  private lastLine = 0;
  private packed = 0;
  private ended = false;
  private fraction = 0;
  private last: ProgressSnapshot = { tokens: 0, total: NaN, exact: false, fraction: 0, rate: 0, eta: NaN };

  constructor(
    private readonly mode: 'tty' | 'lines' | 'quiet',
    private readonly opts: ProgressOptions,
  ) {}

  /** Sequences read ahead so far; `ended` once that is all of them. */
  packedSequences(sequences: number, ended: boolean): void {
    this.packed = sequences;
    this.ended ||= ended;
  }

  /** Tokens the run will have written: exact, estimated, or NaN. */
  private total(tokens: number): { total: number; exact: boolean } {
    const { seqLen, maxSequences, meter } = this.opts;
    if (this.ended) return { total: Math.max(tokens, this.packed * seqLen), exact: true };
    const f = meter.fraction;
    const estimate = f > 0 && this.packed > 0 ? Math.min(maxSequences, Math.round(this.packed / f)) * seqLen : maxSequences * seqLen;
    return { total: Number.isFinite(estimate) ? Math.max(tokens, estimate) : NaN, exact: false };
  }

  /** `tokens` written in all, `tokensThisRun` of them by this run (for the rate). */
  update(tokens: number, tokensThisRun: number): void {
    const secs = (performance.now() - this.start) / 1000;
    const { total, exact } = this.total(tokens);
    const share = total > 0 ? tokens / total : total === 0 ? 1 : NaN;
    if (Number.isFinite(share)) this.fraction = Math.max(this.fraction, exact ? share : Math.min(share, 0.99));
    const rate = tokensThisRun / Math.max(secs, 1e-9);
    const eta = Number.isFinite(total) && rate > 0 ? (total - tokens) / rate : NaN;
    this.last = { tokens, total, exact, fraction: Number.isFinite(total) ? this.fraction : NaN, rate, eta };
    this.opts.onUpdate?.(this.last);
    const now = performance.now();
    if (this.mode === 'tty') {
      if (now - this.lastLine < 100) return;
      this.lastLine = now;
      process.stderr.write(`\r${this.line(true)}\x1b[K`);
    } else if (this.mode === 'lines' && now - this.lastLine >= (this.opts.everyMs ?? 5000)) {
      this.lastLine = now;
      process.stderr.write(`${this.line(false)}\n`);
    }
  }

  private line(bar: boolean): string {
    const { tokens, fraction, rate, eta } = this.last;
    const width = 24;
    const filled = Number.isFinite(fraction) ? Math.round(fraction * width) : 0;
    const barText = bar ? `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ` : '';
    return `${barText}${fmtCount(tokens)} tokens  ${fmtCount(rate)} tok/s  ETA ${fmtTime(eta)}`;
  }

  /** Ends the bar and prints the summary line (unless quiet). */
  finish(summary: { tokens: number; seconds: number; bytes: number }): void {
    if (this.mode === 'tty') process.stderr.write('\r\x1b[K');
    if (this.mode === 'quiet') return;
    const rate = summary.tokens / Math.max(summary.seconds, 1e-9);
    process.stderr.write(`done: ${summary.tokens} tokens in ${summary.seconds.toFixed(1)} s (${fmtCount(rate)} tokens/s), ${summary.bytes} bytes written\n`);
  }
}
