// `neurotap extract` progress and --max-tokens (README "Extraction"): the progress numbers follow
// tokens written (not input read ahead) on the fixture model, in process through runExtract's
// onProgress; --max-tokens rounds up to whole sequences, says so, and the output verifies.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { parseArgs } from '../src/cli/args.js';
import { findCommand } from '../src/cli/commands.js';
import { runExtract } from '../src/cli/extract.js';
import type { ProgressSnapshot } from '../src/cli/progress.js';
import { loadModel, type Model } from '../src/index.js';
import { fixtureDir, ROOT } from './helpers.js';

const BIN = join(ROOT, 'bin', 'neurotap.js');
const GPT2 = fixtureDir('gpt2');
const tmp = mkdtempSync(join(tmpdir(), 'neurotap-cli-progress-'));
const SEQ = 16;
const BATCH = 3;

function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A corpus of `n` lines; `wide` uses multi-byte characters (3 UTF-8 bytes per character). */
function corpus(name: string, n: number, wide: boolean): string {
  const words = wide ? ['猫', 'が', '座った', 'マット', 'の', '上', '犬', '走る'] : ['the', 'cat', 'sat', 'on', 'mat', 'and', 'a', 'dog'];
  const lines = Array.from({ length: n }, (_, i) => Array.from({ length: 4 + (i % 7) }, (_, j) => words[(i * 5 + j * 3) % words.length]).join(' '));
  const file = join(tmp, name);
  writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

const manifestTokens = (out: string): number => {
  try {
    return (JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as { totals: { tokens: number } }).totals.tokens;
  } catch {
    return 0;
  }
};

/** Extracts `input` in process, checking at every update that the numbers match what is on disk. */
async function extractWithProgress(model: Model, input: string, out: string, extra: string[]): Promise<{ snaps: ProgressSnapshot[]; total: number }> {
  const argv = ['--model', GPT2, '--input', input, '--hooks', 'hook_embed', '--seq-len', String(SEQ), '--batch-size', String(BATCH), '--out', out, '--quiet', ...extra];
  const shardSize = extra.includes('--shard-size') ? Number(extra[extra.indexOf('--shard-size') + 1]) : Infinity;
  const snaps: ProgressSnapshot[] = [];
  await runExtract(model, parseArgs(argv, findCommand('extract')!), {
    onProgress: (s) => {
      // Tokens written: every finished shard is in the manifest; the shard in progress holds the rest.
      const onDisk = manifestTokens(out);
      expect(s.tokens).toBeGreaterThanOrEqual(onDisk);
      expect(s.tokens - onDisk).toBeLessThanOrEqual(Math.min(shardSize, 1e9) * SEQ);
      snaps.push({ ...s });
    },
  });
  return { snaps, total: manifestTokens(out) };
}

function expectFollowsWritten(snaps: ProgressSnapshot[], total: number, tolerance: number): void {
  expect(snaps.length).toBe(Math.ceil(total / SEQ / BATCH));
  let prev: ProgressSnapshot | undefined;
  for (const s of snaps) {
    const truth = s.tokens / total;
    const what = `${s.tokens} of ${total} tokens written: fraction ${s.fraction}, total ${s.total}${s.exact ? ' (exact)' : ''}`;
    expect(s.tokens - (prev?.tokens ?? 0), what).toBeGreaterThan(0);
    expect(s.tokens - (prev?.tokens ?? 0), what).toBeLessThanOrEqual(BATCH * SEQ);
    expect(s.fraction, what).toBeGreaterThanOrEqual(prev?.fraction ?? 0);
    expect(Math.abs(s.fraction - truth), what).toBeLessThanOrEqual(tolerance);
    if (s.exact) expect(s.total, what).toBe(total);
    prev = s;
  }
  expect(prev!.tokens).toBe(total);
  expect(prev!.fraction).toBe(1);
  expect(prev!.exact).toBe(true);
}

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('neurotap extract progress', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(GPT2, { threads: 2 });
  });
  afterAll(() => model.dispose());

  it('one shard read ahead whole: the total is exact once read, and the fraction is tokens written over it', async () => {
    const { snaps, total } = await extractWithProgress(model, corpus('one.txt', 200, false), join(tmp, 'one'), []);
    expect(total).toBeGreaterThan(20 * BATCH * SEQ);
    expectFollowsWritten(snaps, total, 1e-12);
    expect(snaps.every((s) => s.exact)).toBe(true);
  });

  it('small shards and a multi-byte corpus: the estimated fraction follows tokens written', async () => {
    const { snaps, total } = await extractWithProgress(model, corpus('wide.txt', 300, true), join(tmp, 'wide'), ['--shard-size', String(BATCH)]);
    expect(total).toBeGreaterThan(20 * BATCH * SEQ);
    // Read-ahead is a few batches: the estimate of the total may be off by that much early on.
    expectFollowsWritten(snaps, total, 0.1);
    expect(snaps.filter((s) => !s.exact).length).toBeGreaterThan(snaps.length / 2);
  });

  it('--max-tokens: the total is the rounded-up limit', async () => {
    const limit = 10 * BATCH * SEQ + 5;
    const { snaps, total } = await extractWithProgress(model, corpus('cap.txt', 300, false), join(tmp, 'cap'), ['--max-tokens', String(limit), '--shard-size', String(BATCH)]);
    expect(total).toBe(Math.ceil(limit / SEQ) * SEQ);
    expectFollowsWritten(snaps, total, 0.1);
  });
});

describe('neurotap extract --max-tokens', () => {
  it('rounds up to whole sequences, says so unless --quiet, and the output verifies', () => {
    const input = corpus('max.txt', 100, false);
    const run = (out: string, maxTokens: number, quiet: boolean) =>
      cli(['extract', '--model', GPT2, '--input', input, '--hooks', 'hook_embed', '--seq-len', String(SEQ), '--max-tokens', String(maxTokens), '--out', out, ...(quiet ? ['--quiet'] : [])]);
    for (const maxTokens of [SEQ + 4, 3 * SEQ]) {
      const out = join(tmp, `max-${maxTokens}`);
      const r = run(out, maxTokens, false);
      expect(r.code, r.stderr).toBe(0);
      const sequences = Math.ceil(maxTokens / SEQ);
      const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as { totals: { sequences: number; tokens: number }; run: { packing: { maxTokens: number } } };
      expect(m.totals).toMatchObject({ sequences, tokens: sequences * SEQ });
      expect(m.run.packing.maxTokens).toBe(maxTokens);
      const note = `--max-tokens ${maxTokens} is rounded up to whole sequences: at most ${sequences} of ${SEQ} tokens (${sequences * SEQ} tokens)`;
      if (maxTokens % SEQ) expect(r.stderr).toContain(note);
      else expect(r.stderr).not.toContain('rounded up');
      expect(r.stderr).toContain(`done: ${sequences * SEQ} tokens`);
      const v = cli(['verify', out]);
      expect(v.code, v.stderr).toBe(0);
      expect(v.stdout).toContain(`${sequences} sequences, ${sequences * SEQ} tokens`);
      expect(run(join(tmp, `quiet-${maxTokens}`), maxTokens, true).stderr).toBe('');
    }
  });
});
