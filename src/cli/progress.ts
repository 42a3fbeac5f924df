// Extraction progress on stderr: a redrawn bar on a TTY, a line every few seconds otherwise,
// nothing with --quiet; and the end-of-run summary.

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

export class Progress {
  private readonly start = performance.now();
  private lastLine = 0;
  private tokens = 0;
  private fraction = NaN;

  constructor(
    private readonly mode: 'tty' | 'lines' | 'quiet',
    private readonly everyMs = 5000,
  ) {}

  /** `fraction` of the input read so far (NaN when unknown), for the ETA. */
  update(tokens: number, fraction: number): void {
    this.tokens = tokens;
    this.fraction = fraction;
    const now = performance.now();
    if (this.mode === 'tty') {
      if (now - this.lastLine < 100) return;
      this.lastLine = now;
      process.stderr.write(`\r${this.line(true)}\x1b[K`);
    } else if (this.mode === 'lines' && now - this.lastLine >= this.everyMs) {
      this.lastLine = now;
      process.stderr.write(`${this.line(false)}\n`);
    }
  }

  private line(bar: boolean): string {
    const secs = (performance.now() - this.start) / 1000;
    const rate = this.tokens / Math.max(secs, 1e-9);
    const f = Math.min(1, this.fraction);
    const eta = f > 0 ? (secs * (1 - f)) / f : NaN;
    const width = 24;
    const filled = Number.isFinite(f) ? Math.round(f * width) : 0;
    const barText = bar ? `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ` : '';
    return `${barText}${fmtCount(this.tokens)} tokens  ${fmtCount(rate)} tok/s  ETA ${fmtTime(eta)}`;
  }

  /** Ends the bar and prints the summary line (unless quiet). */
  finish(summary: { tokens: number; seconds: number; bytes: number }): void {
    if (this.mode === 'tty') process.stderr.write('\r\x1b[K');
    if (this.mode === 'quiet') return;
    const rate = summary.tokens / Math.max(summary.seconds, 1e-9);
    process.stderr.write(`done: ${summary.tokens} tokens in ${summary.seconds.toFixed(1)} s (${fmtCount(rate)} tokens/s), ${summary.bytes} bytes written\n`);
  }
}
