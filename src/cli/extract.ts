// `neurotap extract` (corpus -> shard-NNNNN.safetensors + manifest.json, resumable, checking the
// shards it resumes from), `neurotap merge` and `neurotap verify` (README "Extraction").
// Tests: test/extract.test.ts, test/extract-verify.test.ts.
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';

import { InvalidInputError, NeurotapError } from '../errors.js';
import { isOutDtype, type OutDtype } from '../extract/dtype.js';
import { deriveBatchSize } from '../extract/extract.js';
import { ensureDir } from '../extract/files.js';
import { assertCompatible, cleanTemp, manifestTotals, mergeManifests, readManifest, writeManifest, type Manifest, type ManifestShard } from '../extract/manifest.js';
import { describePacking, parseShard } from '../extract/packing.js';
import { ShardWriter, shardFileName } from '../extract/shards.js';
import { checkShards } from '../extract/verify.js';
import type { SourceSpec } from '../extract/sources.js';
import type { Model } from '../model/Model.js';
import { num, one, required, UsageError, type ParsedArgs } from './args.js';
import { readInputFile } from './io.js';
import { InputMeter, Progress, type ProgressSnapshot } from './progress.js';

/** Shard files aim at about this many bytes when --shard-size is not given. */
const TARGET_SHARD_BYTES = 256 * 2 ** 20;

/** "4GB", "512MiB", "1e9" -> bytes. */
export function parseBytes(spec: string): number {
  const m = /^(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(spec.trim());
  if (!m) throw new UsageError(`--max-memory expects a size like 4GB or 512MiB, got '${spec}'`);
  const unit = { '': 1, k: 1e3, m: 1e6, g: 1e9, t: 1e12 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  const binary = m[3]?.toLowerCase() === 'ib' ? { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'] : unit;
  return Math.floor(Number(m[1]) * binary);
}

function sourceFromArgs(args: ParsedArgs): SourceSpec {
  const input = args.flags.get('input');
  const tokens = args.flags.get('tokens');
  if (!!input === !!tokens) throw new UsageError('give exactly one of --input FILE... and --tokens FILE.jsonl...');
  if (tokens) {
    if (args.flags.has('text-field') || args.flags.has('whole-file')) throw new UsageError('--text-field and --whole-file apply to --input only');
    return { kind: 'tokens', files: tokens };
  }
  const field = one(args, 'text-field');
  if (field !== undefined) {
    if (args.flags.has('whole-file')) throw new UsageError('--whole-file and --text-field cannot be combined');
    return { kind: 'jsonl', files: input!, textField: field };
  }
  return { kind: 'text', files: input!, wholeFile: args.flags.has('whole-file') };
}

/** --shard I/N, a usage error when malformed. */
function shardFlag(args: ParsedArgs): { index: number; count: number } | null {
  const spec = one(args, 'shard');
  if (spec === undefined) return null;
  try {
    return parseShard(spec);
  } catch {
    throw new UsageError(`--shard expects I/N with 0 <= I < N (e.g. 0/4), got '${spec}'`);
  }
}

/** Usage errors before the model loads: the input flags, --shard, --max-memory. */
export function checkExtractFlags(args: ParsedArgs): void {
  sourceFromArgs(args);
  shardFlag(args);
  if (args.flags.has('batch-size') && args.flags.has('max-memory')) throw new UsageError('give --batch-size or --max-memory, not both');
  const maxMemory = one(args, 'max-memory');
  if (maxMemory !== undefined) parseBytes(maxMemory);
}

/** Options of {@link runExtract} for tests and embedding. */
export interface RunExtractOptions {
  /** Called with the progress numbers after every batch written. */
  onProgress?: (s: ProgressSnapshot) => void;
}

export async function runExtract(model: Model, args: ParsedArgs, opts: RunExtractOptions = {}): Promise<void> {
  const t0 = performance.now();
  const out = resolve(required(args, 'out'));
  const seqLen = num(args, 'seq-len')!;
  const hooks = model.resolveHooks(args.flags.get('hooks') ?? []);
  const outDtype = one(args, 'out-dtype') as OutDtype;
  if (!isOutDtype(outDtype)) throw new UsageError(`--out-dtype must be f32, f16 or bf16, got '${outDtype}'`);
  const source = sourceFromArgs(args);
  const pack = !args.flags.has('no-pack');
  const padLast = args.flags.has('pad-last');
  const shard = shardFlag(args);
  const stopAtLayer = num(args, 'stop-at-layer');
  const maxTokens = num(args, 'max-tokens');
  if (args.flags.has('batch-size') && args.flags.has('max-memory')) throw new UsageError('give --batch-size or --max-memory, not both');
  const maxMemory = one(args, 'max-memory') !== undefined ? parseBytes(one(args, 'max-memory')!) : undefined;
  const batchSize = num(args, 'batch-size') ?? (maxMemory ? deriveBatchSize(model, hooks, seqLen, maxMemory) : 8);
  const shapes = hooks.map((name) => ({ name, shapePerSeq: model.hookShape(name, 1, seqLen).slice(1) }));
  const bytesPerSeq = seqLen * 4 + shapes.reduce((a, h) => a + h.shapePerSeq.reduce((x, y) => x * y, 1) * (outDtype === 'f32' ? 4 : 2), 0);
  const perShard = num(args, 'shard-size') ?? Math.max(batchSize, Math.floor(TARGET_SHARD_BYTES / bytesPerSeq / batchSize) * batchSize);
  const packing = { ...describePacking({ seqLen, pack, padLast, padId: 0 }, source), maxTokens: maxTokens ?? null, stopAtLayer: stopAtLayer ?? null };
  const config = readInputFile(join(model.dir, 'config.json'), 'model config');

  const manifest: Manifest = {
    version: 1,
    tool: 'neurotap',
    model: { path: model.dir, configHash: createHash('sha256').update(config).digest('hex'), family: model.config.family },
    run: {
      hooks: shapes.map((h) => ({ name: h.name, shape: h.shapePerSeq, dtype: outDtype })),
      seqLen,
      outDtype,
      packing,
      shard,
      batchSize,
      sequencesPerShard: perShard,
    },
    shards: [],
    totals: { sequences: 0, tokens: 0, bytes: 0 },
    complete: false,
  };
  await ensureDir(out);
  const existing = await assertCompatible(out, manifest, args.flags.has('overwrite'));
  await cleanTemp(out);
  const quiet = args.flags.has('quiet');
  const say = (line: string) => {
    if (!quiet) process.stderr.write(`${line}\n`);
  };
  const maxSequences = maxTokens !== undefined ? Math.ceil(maxTokens / seqLen) : Infinity;

  // Resume: every listed shard is checked (present, recorded size, sha256); bad ones are
  // extracted again in place, good ones are skipped without running the model.
  const redo = new Set<number>();
  if (existing) {
    for (const p of await checkShards(out, existing)) {
      say(`${join(out, p.file)}: ${p.problem}; extracting it again`);
      redo.add(p.index);
    }
    if (redo.size === 0 && provenComplete(existing, maxSequences)) {
      say(`${out} is already complete: ${existing.totals.tokens} tokens in ${existing.shards.length} shards`);
      return;
    }
    manifest.shards = existing.shards;
    manifest.complete = existing.complete && redo.size === 0;
  }
  const listed = manifest.shards.length;
  const keep = (group: number) => group < listed && !redo.has(group);
  manifest.totals = manifestTotals(seqLen, manifest.shards);
  if (!existing || redo.size > 0) await writeManifest(out, manifest);

  if (maxTokens !== undefined && maxTokens % seqLen !== 0)
    say(`--max-tokens ${maxTokens} is rounded up to whole sequences: at most ${maxSequences} of ${seqLen} tokens (${maxSequences * seqLen} tokens)`);
  const sizes = await Promise.all(source.files.map((f) => stat(f).then((s) => s.size, () => 0)));
  const meter = new InputMeter(source, sizes);
  const progress = new Progress(quiet ? 'quiet' : process.stderr.isTTY ? 'tty' : 'lines', {
    seqLen,
    maxSequences,
    meter,
    ...(opts.onProgress ? { onUpdate: opts.onProgress } : {}),
  });
  // Sequences in the shards this run keeps, then every one it writes: tokens written, for progress.
  let sequencesWritten = manifest.shards.reduce((a, sh, i) => a + (redo.has(i) ? 0 : sh.sequences), 0);
  let tokensDone = 0;
  let bytesWritten = 0;
  let writer: ShardWriter | null = null;
  try {
    const batches = model.extract(source, {
      hooks,
      seqLen,
      pack,
      padLast,
      batchSize,
      groupSize: perShard,
      skipGroup: keep,
      ...(stopAtLayer !== undefined ? { stopAtLayer } : {}),
      ...(maxTokens !== undefined ? { maxTokens } : {}),
      ...(shard ? { shard } : {}),
      onRead: (_, doc) => meter.read(doc),
      onPacked: (n, ended) => progress.packedSequences(n, ended),
    });
    for await (const batch of batches) {
      if (!writer) {
        const index = batch.sequenceStart / perShard;
        if (!Number.isInteger(index) || index > manifest.shards.length) throw new InvalidInputError('ERR_INTERNAL', `a shard would start at sequence ${batch.sequenceStart}, not at a shard boundary after the ${manifest.shards.length} listed`);
        writer = new ShardWriter(out, index, { seqLen, hooks: shapes, outDtype, nSeq: batch.groupSequences!, metadata: { producer: 'neurotap extract' } });
      }
      const acts = new Map<string, Float32Array>();
      for (const [name, t] of batch.activations) acts.set(name, t.data);
      await writer.append({ tokens: batch.tokens, activations: acts });
      tokensDone += batch.windows.length * seqLen;
      sequencesWritten += batch.windows.length;
      if (writer.sequences === writer.layout.nSeq) {
        const done = await writer.finish();
        const index = writer.shardIndex;
        writer = null;
        bytesWritten += done.bytes;
        const entry: ManifestShard = { file: done.file, sequences: done.nSeq, bytes: done.bytes, sha256: done.sha256 };
        if (index < manifest.shards.length) {
          manifest.shards[index] = entry;
          redo.delete(index);
        } else {
          manifest.shards.push(entry);
          manifest.complete = false;  // a manifest that claimed completeness lacked this shard
        }
        manifest.totals = manifestTotals(seqLen, manifest.shards);
        await writeManifest(out, manifest);
      }
      progress.update(sequencesWritten * seqLen, tokensDone);
    }
  } catch (err) {
    await writer?.abort().catch(() => undefined);
    throw err;
  }
  if (writer) throw new InvalidInputError('ERR_INTERNAL', `shard ${writer.file} was left incomplete`);
  if (redo.size > 0) {
    const files = [...redo].map(shardFileName).join(', ');
    throw new NeurotapError('ERR_SHARD_CORRUPT', `${out}: the input ended before ${files} could be extracted again; has the input changed? (use --overwrite to start over)`);
  }
  manifest.complete = true;
  await writeManifest(out, manifest);
  progress.finish({ tokens: tokensDone, seconds: (performance.now() - t0) / 1000, bytes: bytesWritten });
}

/**
 * Whether a complete manifest's shards provably cover the whole input, so a rerun need not read
 * it: its last shard is short (the input ended inside it; every other shard is full) or the
 * --max-tokens limit was reached. Otherwise the input is read again (tokenized, not run) to see.
 */
function provenComplete(m: Manifest, maxSequences: number): boolean {
  const last = m.shards.at(-1);
  return m.complete && last !== undefined && (last.sequences < m.run.sequencesPerShard || m.totals.sequences >= maxSequences);
}

export async function runMerge(args: ParsedArgs): Promise<void> {
  const inputs = args.positional;
  if (inputs.length === 0) throw new UsageError('merge needs the output directories to combine');
  const m = await mergeManifests(inputs, required(args, 'out'), { overwrite: args.flags.has('overwrite') });
  process.stdout.write(`merged ${inputs.length} outputs: ${m.shards.length} shards, ${m.totals.tokens} tokens${m.complete ? '' : ' (not every part is present: incomplete)'}\n`);
}

/** `neurotap verify DIR`: re-hashes every shard against the manifest; one error line per bad shard. */
export async function runVerify(args: ParsedArgs): Promise<void> {
  if (args.positional.length !== 1) throw new UsageError('verify needs exactly one output directory');
  const dir = args.positional[0]!;
  const m = await readManifest(dir);
  if (!m) throw new NeurotapError('ERR_FILE_NOT_FOUND', `${dir} holds no manifest.json`);
  const problems = await checkShards(dir, m);
  for (const p of problems) process.stderr.write(`neurotap: error [ERR_SHARD_CORRUPT]: ${p.file}: ${p.problem}\n`);
  if (problems.length > 0) throw new NeurotapError('ERR_SHARD_CORRUPT', `${problems.length} of ${m.shards.length} shards in ${dir} are missing or corrupt`);
  const { sequences, tokens, bytes } = m.totals;
  process.stdout.write(`${dir}: ${m.shards.length} shards, ${sequences} sequences, ${tokens} tokens, ${bytes} bytes: all match${m.complete ? '' : ' (incomplete: resume the run to finish it)'}\n`);
}
