// The extraction output's manifest.json (version 1): atomic write, validated read, resume checks
// and merging the outputs of several machines without copying shards. Tests: test/extract-output.test.ts.
import { open, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { isAbsolute, join, posix, relative, resolve, sep } from 'node:path';

import { NeurotapError } from '../errors.js';
import { isObject } from '../io/json.js';
import { isOutDtype, type OutDtype } from './dtype.js';
import { ensureDir, syncDir, writeError } from './files.js';
import { shardFileName } from './shards.js';

export const MANIFEST_FILE = 'manifest.json';

/** One hook tensor of every shard. */
export interface ManifestHook {
  name: string;
  /** Shape per sequence, e.g. `[seqLen, d_model]`; in a shard the tensor is `[sequences, ...shape]`. */
  shape: number[];
  dtype: OutDtype;
}

/** This output's part of a run split over machines (`--shard index/count`). */
export interface ShardSpec {
  index: number;
  count: number;
}

/** One finished shard file. */
export interface ManifestShard {
  /** Path relative to the manifest's directory, with `/` separators. */
  file: string;
  sequences: number;
  bytes: number;
  /** Hex sha256 of the file. */
  sha256: string;
}

/** Everything that determines the output's bytes: two manifests with equal `run`s (and model) describe the same run. */
export interface ManifestRun {
  hooks: ManifestHook[];
  seqLen: number;
  outDtype: OutDtype;
  /** The packing policy, as the input side describes it (compared, never interpreted). */
  packing: unknown;
  /** The part of the run this output holds; null for a whole run (and for a merge). */
  shard: ShardSpec | null;
  batchSize: number;
  sequencesPerShard: number;
}

/** manifest.json. */
export interface Manifest {
  version: 1;
  tool: 'neurotap';
  model: {
    path: string;
    /** Hex sha256 of the model's config.json bytes. */
    configHash: string;
    family: string;
  };
  run: ManifestRun;
  shards: ManifestShard[];
  totals: { sequences: number; tokens: number; bytes: number };
  /** True once every shard of this output (or, for a merge, of every part) is written. */
  complete: boolean;
  /** Present on a merged manifest: the merged outputs, relative to this directory, in shard order. */
  merged?: { parts: { dir: string; shard: ShardSpec }[] };
}

const invalid = (dir: string, why: string) => new NeurotapError('ERR_MANIFEST_INVALID', `${join(dir, MANIFEST_FILE)}: ${why}`);

/** Totals of a list of shards. */
export function manifestTotals(seqLen: number, shards: readonly ManifestShard[]): Manifest['totals'] {
  let sequences = 0;
  let bytes = 0;
  for (const s of shards) {
    sequences += s.sequences;
    bytes += s.bytes;
  }
  return { sequences, tokens: sequences * seqLen, bytes };
}

/** JSON with object keys sorted, so that equal values compare equal whatever their key order. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o).sort().filter((k) => o[k] !== undefined).map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

const SHARD_RE = /^shard-\d{5,}\.safetensors$/;

const isInt = (v: unknown, min = 0): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= min;

/**
 * An extraction output's own shards are `shard-00000.safetensors`, `shard-00001.safetensors`, ...
 * in order, plain names inside the manifest's directory; every one but the last holds
 * `sequencesPerShard` sequences (a shorter shard ends the input), the last at most that many.
 */
function ownShardsProblem(shards: ManifestShard[], perShard: number): string | null {
  for (const [i, s] of shards.entries()) {
    if (s.file !== shardFileName(i)) return `shard ${i} is '${s.file}', not ${shardFileName(i)} (shards are plain names inside the output directory, numbered in order)`;
    if (s.sequences > perShard || (i < shards.length - 1 && s.sequences !== perShard)) return `shard ${s.file} holds ${s.sequences} sequences; every shard but the last holds run.sequencesPerShard (${perShard}), the last at most that many`;
  }
  return null;
}

/** A merged manifest's shards are `PART_DIR/shard-NNNNN.safetensors` with PART_DIR one of its relative part directories. */
function mergedProblem(merged: unknown, shards: ManifestShard[]): string | null {
  if (!isObject(merged) || !Array.isArray(merged.parts) || merged.parts.length === 0) return 'merged.parts must be a non-empty array';
  const dirs = new Set<string>();
  for (const p of merged.parts as unknown[]) {
    if (!isObject(p) || typeof p.dir !== 'string' || p.dir === '' || isAbsolute(p.dir) || !isObject(p.shard) || !isInt(p.shard.count, 1) || !isInt(p.shard.index) || p.shard.index >= p.shard.count) return `bad merged part ${JSON.stringify(p)}`;
    dirs.add(p.dir);
  }
  for (const s of shards) {
    if (!dirs.has(posix.dirname(s.file)) || !SHARD_RE.test(posix.basename(s.file))) return `shard '${s.file}' is not a shard file of one of the merged parts (${[...dirs].join(', ')})`;
  }
  return null;
}

/** Checks the structure of a parsed manifest; returns the first problem, or null. */
export function manifestProblem(m: unknown): string | null {
  if (!isObject(m)) return 'not a JSON object';
  if (m.version !== 1) return `unsupported version ${String(m.version)} (this neurotap reads version 1)`;
  if (m.tool !== 'neurotap') return `tool is ${String(m.tool)}, not neurotap`;
  const model = m.model;
  if (!isObject(model) || typeof model.path !== 'string' || typeof model.configHash !== 'string' || typeof model.family !== 'string') return 'model must have string path, configHash and family';
  const run = m.run;
  if (!isObject(run)) return 'run is missing';
  if (!Array.isArray(run.hooks)) return 'run.hooks must be an array';
  for (const h of run.hooks as unknown[]) {
    if (!isObject(h) || typeof h.name !== 'string' || !isOutDtype(h.dtype) || !Array.isArray(h.shape) || !h.shape.every((d) => isInt(d, 1))) return `bad hook entry ${JSON.stringify(h)}`;
  }
  if (!isInt(run.seqLen, 1)) return 'run.seqLen must be a positive integer';
  if (!isOutDtype(run.outDtype)) return 'run.outDtype must be f32, f16 or bf16';
  if (!('packing' in run)) return 'run.packing is missing';
  if (run.shard !== null && !(isObject(run.shard) && isInt(run.shard.count, 1) && isInt(run.shard.index) && run.shard.index < run.shard.count)) return 'run.shard must be null or { index, count } with 0 <= index < count';
  if (!isInt(run.batchSize, 1) || !isInt(run.sequencesPerShard, 1)) return 'run.batchSize and run.sequencesPerShard must be positive integers';
  if (!Array.isArray(m.shards)) return 'shards must be an array';
  for (const s of m.shards as unknown[]) {
    if (!isObject(s) || typeof s.file !== 'string' || !isInt(s.sequences, 1) || !isInt(s.bytes, 1) || typeof s.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(s.sha256)) return `bad shard entry ${JSON.stringify(s)}`;
  }
  const files = m.merged === undefined ? ownShardsProblem(m.shards as ManifestShard[], run.sequencesPerShard) : mergedProblem(m.merged, m.shards as ManifestShard[]);
  if (files) return files;
  const t = m.totals;
  if (!isObject(t) || !isInt(t.sequences) || !isInt(t.tokens) || !isInt(t.bytes)) return 'totals must hold sequences, tokens and bytes';
  const want = manifestTotals(run.seqLen, m.shards as ManifestShard[]);
  if (t.sequences !== want.sequences || t.tokens !== want.tokens || t.bytes !== want.bytes) return `totals ${canonical(t)} do not add up to the shards' ${canonical(want)}`;
  if (typeof m.complete !== 'boolean') return 'complete must be a boolean';
  return null;
}

/** Reads and validates `dir/manifest.json`; null when there is none. A malformed one is ERR_MANIFEST_INVALID. */
export async function readManifest(dir: string): Promise<Manifest | null> {
  let text: string;
  try {
    text = await readFile(join(dir, MANIFEST_FILE), 'utf8');
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw new NeurotapError('ERR_FILE_READ', `could not read ${join(dir, MANIFEST_FILE)}: ${(err as Error).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw invalid(dir, `not valid JSON (${(err as Error).message})`);
  }
  const problem = manifestProblem(parsed);
  if (problem) throw invalid(dir, problem);
  return parsed as Manifest;
}

/**
 * Writes `dir/manifest.json` atomically: `manifest.json.tmp`, fsync, rename, fsync of the
 * directory. A reader sees the old manifest or the new one, never a mix. Full disk is
 * ERR_DISK_FULL, other failures ERR_FILE_WRITE; the old manifest stays in place either way.
 */
export async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  const problem = manifestProblem(manifest);
  if (problem) throw new NeurotapError('ERR_MANIFEST_INVALID', `refusing to write an invalid manifest: ${problem}`);
  const tmp = join(dir, `${MANIFEST_FILE}.tmp`);
  const bytes = Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`, 'utf8');
  try {
    const fh = await open(tmp, 'w');
    try {
      let done = 0;
      while (done < bytes.length) done += (await fh.write(bytes, done, bytes.length - done, done)).bytesWritten;
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, join(dir, MANIFEST_FILE));
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw writeError(err, join(dir, MANIFEST_FILE));
  }
  await syncDir(dir);
}

function diffHooks(a: ManifestHook[], b: ManifestHook[]): string | null {
  const show = (hs: ManifestHook[]) => hs.map((h) => `${h.name} [${h.shape.join(', ')}] ${h.dtype}`).join('; ');
  if (canonical(a) !== canonical(b)) return `hooks differ: ${show(a)} vs ${show(b)}`;
  return null;
}

/** Compares what makes two runs' data identical, except where each part of a split run goes. */
function sameData(a: Manifest, b: Manifest): string | null {
  if (a.model.configHash !== b.model.configHash) return `model config differs (config.json sha256 ${a.model.configHash} vs ${b.model.configHash})`;
  if (a.model.family !== b.model.family) return `model family differs (${a.model.family} vs ${b.model.family})`;
  const hooks = diffHooks(a.run.hooks, b.run.hooks);
  if (hooks) return hooks;
  if (a.run.seqLen !== b.run.seqLen) return `seqLen differs (${a.run.seqLen} vs ${b.run.seqLen})`;
  if (a.run.outDtype !== b.run.outDtype) return `out dtype differs (${a.run.outDtype} vs ${b.run.outDtype})`;
  if (canonical(a.run.packing) !== canonical(b.run.packing)) return `packing policy differs (${canonical(a.run.packing)} vs ${canonical(b.run.packing)})`;
  if (a.run.batchSize !== b.run.batchSize) return `batch size differs (${a.run.batchSize} vs ${b.run.batchSize})`;
  if (a.run.sequencesPerShard !== b.run.sequencesPerShard) return `sequences per shard differ (${a.run.sequencesPerShard} vs ${b.run.sequencesPerShard})`;
  return null;
}

const showShard = (s: ShardSpec | null) => (s ? `${s.index}/${s.count}` : 'none');

/**
 * Whether `b` continues `a` (resume): same model (path and config.json hash), family, hooks
 * with shapes and dtypes, seqLen, out dtype, packing policy, batch size, sequences per shard
 * and shard spec. Null when compatible, else the first difference in words. Callers should
 * record `model.path` resolved, so `./m` and `m` compare equal.
 */
export function sameRun(a: Manifest, b: Manifest): string | null {
  if (a.merged || b.merged) return 'a merged manifest describes no resumable run';
  if (a.model.path !== b.model.path) return `model path differs (${a.model.path} vs ${b.model.path})`;
  const data = sameData(a, b);
  if (data) return data;
  if (canonical(a.run.shard) !== canonical(b.run.shard)) return `shard spec differs (${showShard(a.run.shard)} vs ${showShard(b.run.shard)})`;
  return null;
}

const TEMP_RE = /^(shard-\d{5,}\.safetensors|manifest\.json)\.tmp$/;

async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return [];
    throw new NeurotapError('ERR_FILE_READ', `could not list ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

async function removeOutput(dir: string): Promise<void> {
  const names = await listDir(dir);
  if (names.length === 0) return;
  for (const name of names) {
    if (SHARD_RE.test(name) || TEMP_RE.test(name)) await rm(join(dir, name), { force: true });
  }
  await rm(join(dir, MANIFEST_FILE), { force: true });
  await syncDir(dir);
}

/**
 * Removes the temporary files a killed run leaves behind (`shard-XXXXX.safetensors.tmp`,
 * `manifest.json.tmp`); other files are left alone. Resolves to the names removed.
 */
export async function cleanTemp(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await listDir(dir)) {
    if (!TEMP_RE.test(name)) continue;
    await rm(join(dir, name), { force: true });
    removed.push(name);
  }
  return removed;
}

/**
 * Checks an output directory before a run writes `manifest` into it. Resolves to the existing
 * manifest when it describes the same run (resume from it), or null when there is none. A
 * different run's manifest or shard files without a manifest are ERR_OUTPUT_EXISTS, a corrupt
 * manifest (not JSON, truncated, empty, malformed) ERR_MANIFEST_INVALID, unless `overwrite`:
 * then the old manifest, shard files and temporary files are removed (other files stay) and it
 * resolves to null. Shards a merged manifest points to outside `dir` are never touched.
 */
export async function assertCompatible(dir: string, manifest: Manifest, overwrite: boolean): Promise<Manifest | null> {
  let existing: Manifest | null;
  let reason: string | null;
  try {
    existing = await readManifest(dir);
    if (existing) reason = sameRun(existing, manifest);
    else reason = (await listDir(dir)).some((n) => SHARD_RE.test(n)) ? `${dir} holds shard files but no ${MANIFEST_FILE}` : null;
  } catch (err) {
    if (!(err instanceof NeurotapError) || err.code !== 'ERR_MANIFEST_INVALID') throw err;
    if (!overwrite) throw new NeurotapError(err.code, `${err.message} (use --overwrite to replace the output)`, { cause: err });
    existing = null;
    reason = null;
  }
  if (overwrite) {
    await removeOutput(dir);
    return null;
  }
  if (reason) {
    const what = existing ? `${dir} holds the output of a different run: ${reason}` : reason;
    throw new NeurotapError('ERR_OUTPUT_EXISTS', `${what} (use --overwrite to replace it)`);
  }
  return existing;
}

/** Options of mergeManifests. */
export interface MergeOptions {
  /** Replace a different manifest already in the output directory. Defaults to false. */
  overwrite?: boolean;
}

const mergeError = (why: string) => new NeurotapError('ERR_MERGE_INVALID', `cannot merge: ${why}`);
const slash = (p: string) => p.split(sep).join('/');

/**
 * Combines the complete outputs of a run split over machines (`--shard i/N` each) into one
 * manifest in `outDir`, whose shard entries point at the original files by paths relative to
 * `outDir` (nothing is copied), ordered by part index, then shard file. Every input must be a
 * complete, unmerged output of the same run (model config hash, family, hooks, shapes, dtypes,
 * seqLen, packing, batch size, sequences per shard) with its own part of the same N, and every
 * shard file must exist with its recorded size (readManifest has checked that each is a plain
 * `shard-NNNNN.safetensors` name inside its directory; `neurotap verify` checks hashes). The result is `complete` when all N parts are
 * there. Refusals are ERR_MERGE_INVALID; an existing different manifest in `outDir` is
 * ERR_OUTPUT_EXISTS unless `overwrite`. Resolves to the written manifest.
 */
export async function mergeManifests(dirs: string[], outDir: string, options: MergeOptions = {}): Promise<Manifest> {
  if (dirs.length === 0) throw mergeError('no input directories');
  const out = resolve(outDir);
  const parts: { dir: string; m: Manifest; spec: ShardSpec }[] = [];
  for (const dir of dirs) {
    const abs = resolve(dir);
    if (abs === out) throw mergeError(`the output directory ${outDir} is also an input`);
    const m = await readManifest(abs);
    if (!m) throw mergeError(`${dir} holds no ${MANIFEST_FILE}`);
    if (m.merged) throw mergeError(`${dir} is itself a merge; merge the original outputs instead`);
    if (!m.complete) throw mergeError(`${dir} is not complete (${m.totals.sequences} sequences so far); finish or resume it first`);
    parts.push({ dir: abs, m, spec: m.run.shard ?? { index: 0, count: 1 } });
  }
  const first = parts[0]!;
  for (const p of parts.slice(1)) {
    const why = sameData(first.m, p.m);
    if (why) throw mergeError(`${p.dir} and ${first.dir} are different runs: ${why}`);
    if (p.spec.count !== first.spec.count) throw mergeError(`${p.dir} is part ${showShard(p.spec)} but ${first.dir} is part ${showShard(first.spec)}`);
  }
  parts.sort((a, b) => a.spec.index - b.spec.index);
  for (let i = 1; i < parts.length; i++) {
    if (parts[i]!.spec.index === parts[i - 1]!.spec.index) throw mergeError(`${parts[i - 1]!.dir} and ${parts[i]!.dir} are both part ${showShard(parts[i]!.spec)}`);
  }

  const shards: ManifestShard[] = [];
  for (const p of parts) {
    for (const s of p.m.shards) {
      const abs = join(p.dir, s.file);
      const st = await stat(abs).catch(() => null);
      if (!st?.isFile()) throw mergeError(`shard ${abs} listed in ${p.dir} is missing`);
      if (st.size !== s.bytes) throw mergeError(`shard ${abs} is ${st.size} bytes, its manifest says ${s.bytes}`);
      shards.push({ ...s, file: slash(relative(out, abs)) });
    }
  }
  const { m } = first;
  const count = first.spec.count;
  const merged: Manifest = {
    version: 1,
    tool: 'neurotap',
    model: { ...m.model },
    run: { ...m.run, shard: null },
    shards,
    totals: manifestTotals(m.run.seqLen, shards),
    complete: parts.length === count,
    merged: { parts: parts.map((p) => ({ dir: slash(relative(out, p.dir)) || '.', shard: p.spec })) },
  };

  await ensureDir(out);
  const existing = await readManifest(out).catch(() => undefined);
  if (existing !== null && !options.overwrite && (existing === undefined || canonical(existing) !== canonical(merged))) {
    throw new NeurotapError('ERR_OUTPUT_EXISTS', `${outDir} already holds a different ${MANIFEST_FILE} (use --overwrite to replace it)`);
  }
  await writeManifest(out, merged);
  return merged;
}
