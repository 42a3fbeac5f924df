// `neurotap extract` end to end: shards equal what model.run computes, Python reads them,
// kill -9 at random points then resuming gives byte-identical output, --shard I/N + merge,
// bounded memory on a corpus larger than the queues, and coded errors for bad input.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadModel, readSafetensors, type Model } from '../src/index.js';
import { fixtureDir, ROOT } from './helpers.js';

const BIN = join(ROOT, 'bin', 'neurotap.js');
const GPT2 = fixtureDir('gpt2');
const tmp = mkdtempSync(join(tmpdir(), 'neurotap-extract-'));
const corpus = join(tmp, 'corpus.txt');

function cli(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** sha256 of every file in a directory, by name. */
function digest(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir).sort()) out[f] = createHash('sha256').update(readFileSync(join(dir, f))).digest('hex');
  return out;
}

const base = (out: string, extra: string[] = []) => ['extract', '--model', GPT2, '--input', corpus, '--hooks', 'blocks.*.hook_resid_post', 'hook_embed', '--seq-len', '16', '--batch-size', '3', '--shard-size', '6', '--out', out, '--quiet', ...extra];

describe('neurotap extract', () => {
  let model: Model;
  beforeAll(async () => {
    const words = ['the', 'cat', 'sat', 'on', 'mat', 'and', 'a', 'dog', 'ran', 'far', 'away', 'today'];
    const lines = Array.from({ length: 120 }, (_, i) => Array.from({ length: 5 + (i % 9) }, (_, j) => words[(i * 7 + j * 3) % words.length]).join(' '));
    writeFileSync(corpus, lines.join('\n') + '\n');
    model = await loadModel(GPT2, { threads: 2 });
  });
  afterAll(() => {
    model.dispose();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('writes shards holding tokens and activations equal to model.run, and a complete manifest', async () => {
    const out = join(tmp, 'plain');
    const r = cli(base(out));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    expect(manifest.complete).toBe(true);
    expect(manifest.run.hooks.map((h: { name: string }) => h.name)).toEqual(['hook_embed', 'blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']);
    expect(manifest.shards.length).toBeGreaterThan(2);
    const first = readSafetensors(join(out, manifest.shards[1].file));
    const tokens = first.get('tokens')!;
    expect(tokens.dtype).toBe('I32');
    expect(tokens.shape).toEqual([6, 16]);
    const rows = Array.from({ length: 6 }, (_, i) => Array.from((tokens.data as Int32Array).slice(i * 16, (i + 1) * 16)));
    const direct = await model.run(rows, { capture: ['blocks.1.hook_resid_post'], returnLogits: false });
    expect(Array.from(first.get('blocks.1.hook_resid_post')!.data as Float32Array)).toEqual(Array.from(direct.cache.get('blocks.1.hook_resid_post').data));
    // Packing: the first window starts with the first document's tokens.
    const firstShard = readSafetensors(join(out, manifest.shards[0].file));
    const firstDoc = model.tokenize(readFileSync(corpus, 'utf8').split('\n')[0]!)[0]!;
    expect(Array.from((firstShard.get('tokens')!.data as Int32Array).slice(0, firstDoc.length))).toEqual(firstDoc);
    expect(manifest.totals.tokens).toBe(manifest.totals.sequences * 16);
  });

  it('prints a summary (tokens, seconds, tokens/s, bytes) unless --quiet', () => {
    const out = join(tmp, 'summary');
    const r = cli(base(out).filter((a) => a !== '--quiet'));
    expect(r.code).toBe(0);
    const m = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    expect(r.stderr).toMatch(new RegExp(`done: ${m.totals.tokens} tokens in [0-9.]+ s \\([0-9.]+k? tokens/s\\), ${m.totals.bytes} bytes written`));
  });

  it('is readable from Python with numpy alone', (ctx) => {
    if (spawnSync('python3', ['-c', 'import numpy']).status !== 0) {
      console.warn('skipping: python3 with numpy is not available');
      ctx.skip();
    }
    const out = join(tmp, 'plain');
    const r = spawnSync('python3', [join(ROOT, 'test', 'read-extract-output.py'), out], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    expect(JSON.parse(r.stdout)).toMatchObject({ sequences: manifest.totals.sequences, d: model.config.dModel });
  });

  it('killed with SIGKILL at random points, resumes to byte-identical output', async () => {
    const reference = digest(join(tmp, 'plain'));
    const total = JSON.parse(readFileSync(join(tmp, 'plain', 'manifest.json'), 'utf8')).shards.length as number;
    const out = join(tmp, 'killed');
    let seed = 12345;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const shardsDone = () => {
      try {
        return (JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as { shards: unknown[] }).shards.length;
      } catch {
        return -1;  // not written yet (or caught between write and rename: the old one stays)
      }
    };
    // Each attempt waits until the output holds a few more shards, then kills at a random
    // moment within the next shard's writing.
    const interrupted: number[] = [];
    for (let target = 1; target < total; target += 2) {
      await new Promise<void>((resolve) => {
        const child = spawn(process.execPath, [BIN, ...base(out)], { stdio: 'ignore' });
        const poll = setInterval(() => {
          if (shardsDone() >= target) {
            clearInterval(poll);
            setTimeout(() => child.kill('SIGKILL'), rand() * 30);
          }
        }, 5);
        child.on('exit', () => {
          clearInterval(poll);
          resolve();
        });
      });
      interrupted.push(shardsDone());
    }
    expect(interrupted.some((n) => n > 0 && n < total), `shards present after each kill: ${interrupted.join(', ')}`).toBe(true);
    const r = cli(base(out));
    expect(r.code).toBe(0);
    expect(digest(out)).toEqual(reference);
    // Running a complete output again changes nothing.
    expect(cli(base(out)).code).toBe(0);
    expect(digest(out)).toEqual(reference);
  });

  it('--shard I/N splits the windows disjointly and merge combines them without copying', () => {
    const parts = [0, 1, 2].map((i) => join(tmp, `part${i}`));
    parts.forEach((p, i) => expect(cli(base(p, ['--shard', `${i}/3`])).code).toBe(0));
    const merged = join(tmp, 'merged');
    const r = cli(['merge', ...parts, '--out', merged]);
    expect(r.code).toBe(0);
    const m = JSON.parse(readFileSync(join(merged, 'manifest.json'), 'utf8'));
    const whole = JSON.parse(readFileSync(join(tmp, 'plain', 'manifest.json'), 'utf8'));
    expect(m.complete).toBe(true);
    expect(m.totals.sequences).toBe(whole.totals.sequences);
    expect(readdirSync(merged)).toEqual(['manifest.json']);
    // Every window appears exactly once across the parts.
    const all = new Set<string>();
    for (const s of m.shards) {
      const t = readSafetensors(join(merged, s.file)).get('tokens')!;
      for (let i = 0; i < t.shape[0]!; i++) all.add(Array.from((t.data as Int32Array).slice(i * 16, (i + 1) * 16)).join(','));
    }
    const wholeSet = new Set<string>();
    for (const s of whole.shards) {
      const t = readSafetensors(join(tmp, 'plain', s.file)).get('tokens')!;
      for (let i = 0; i < t.shape[0]!; i++) wholeSet.add(Array.from((t.data as Int32Array).slice(i * 16, (i + 1) * 16)).join(','));
    }
    expect(all).toEqual(wholeSet);
  });

  it('stops early with --max-tokens and --stop-at-layer; f16 output', () => {
    expect(cli(['extract', '--model', GPT2, '--input', corpus, '--hooks', 'blocks.1.hook_resid_post', '--seq-len', '16', '--stop-at-layer', '1', '--out', join(tmp, 'bad-stop'), '--quiet']).stderr).toMatch(/not reached/);
    const out2 = join(tmp, 'early-ok');
    expect(cli(['extract', '--model', GPT2, '--input', corpus, '--hooks', 'blocks.0.hook_resid_post', '--seq-len', '16', '--max-tokens', '100', '--stop-at-layer', '1', '--out-dtype', 'f16', '--out', out2, '--quiet']).code).toBe(0);
    const m = JSON.parse(readFileSync(join(out2, 'manifest.json'), 'utf8'));
    expect(m.totals.tokens).toBe(112);  // ceil(100 / 16) sequences
    const t = readSafetensors(join(out2, m.shards[0].file)).get('blocks.0.hook_resid_post')!;
    expect(t.dtype).toBe('F16');
  });

  it('keeps memory flat on a corpus far larger than its queues (library API, backpressure)', async () => {
    // 40k pre-tokenized documents generated on the fly: ~1.3M tokens through a 4-batch queue.
    async function* docs() {
      for (let i = 0; i < 40000; i++) yield { tokens: Array.from({ length: 33 }, (_, j) => (i * 31 + j * 7) % 384), file: 'generated', line: i + 1 };
    }
    let batches = 0;
    let sequences = 0;
    let warm = 0;
    let peak = 0;
    for await (const b of model.extract(docs(), { hooks: ['blocks.*.hook_resid_post'], seqLen: 64, batchSize: 16, queueCapacity: 4 })) {
      sequences += b.windows.length;
      batches++;
      if (batches % 50 === 0) {
        const rss = process.memoryUsage().rss;
        if (batches === 200) warm = rss;
        if (batches > 200) peak = Math.max(peak, rss);
      }
    }
    expect(sequences).toBe(Math.floor((40000 * 33) / 64));
    expect(batches).toBeGreaterThan(1000);
    // After warm-up, resident memory may wander by allocator noise but must not grow with the corpus.
    expect((peak - warm) / 2 ** 20, `rss grew from ${(warm / 2 ** 20).toFixed(0)} MB to ${(peak / 2 ** 20).toFixed(0)} MB`).toBeLessThan(48);
  });

  it('gives coded errors for bad input and never a corrupt output', () => {
    const jsonl = join(tmp, 'bad.jsonl');
    writeFileSync(jsonl, '{"text": "fine"}\n{"text": broken\n');
    const cases: [string[], RegExp][] = [
      [['extract', '--model', GPT2, '--input', join(tmp, 'missing.txt'), '--hooks', 'hook_embed', '--seq-len', '8', '--out', join(tmp, 'e1')], /ERR_FILE_NOT_FOUND/],
      [['extract', '--model', GPT2, '--input', jsonl, '--text-field', 'text', '--hooks', 'hook_embed', '--seq-len', '2', '--out', join(tmp, 'e2')], /ERR_INVALID_INPUT.*bad\.jsonl:2/],
      [['extract', '--model', GPT2, '--input', corpus, '--hooks', 'blocks.*.hook_nothing', '--seq-len', '8', '--out', join(tmp, 'e3')], /ERR_UNKNOWN_HOOK/],
      [['extract', '--model', GPT2, '--input', corpus, '--hooks', 'hook_embed', '--seq-len', '8', '--out', join(tmp, 'plain')], /ERR_OUTPUT_EXISTS.*--overwrite/],
    ];
    for (const [args, message] of cases) {
      const r = cli([...args, '--quiet']);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(message);
    }
    // The refused directory still holds its complete output; --overwrite replaces it.
    expect(JSON.parse(readFileSync(join(tmp, 'plain', 'manifest.json'), 'utf8')).complete).toBe(true);
    const o = cli(['extract', '--model', GPT2, '--input', corpus, '--hooks', 'hook_embed', '--seq-len', '8', '--out', join(tmp, 'e2'), '--overwrite', '--quiet']);
    expect(o.code).toBe(0);
    expect(cli(['extract', '--model', GPT2, '--input', corpus, '--tokens', jsonl, '--hooks', 'hook_embed', '--seq-len', '8', '--out', join(tmp, 'e5')]).code).toBe(2);
  });
});
