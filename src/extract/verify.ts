// Checks an extraction output's shard files against its manifest (presence, size, sha256): used
// by `neurotap verify` and before a resume. Tests: test/extract-verify.test.ts.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';

import { hashFile } from './files.js';
import type { Manifest } from './manifest.js';

/** A listed shard whose file does not match its manifest entry. */
export interface ShardProblem {
  /** Position in `manifest.shards`. */
  index: number;
  /** The manifest's `file` entry (relative to the manifest's directory). */
  file: string;
  /** What is wrong, in words: `missing`, `not a regular file`, `size ...`, `sha256 mismatch ...`, `cannot read ...`. */
  problem: string;
}

/** Options of checkShards. */
export interface CheckShardsOptions {
  /** Re-hash every shard that has the right size. Defaults to true. */
  hash?: boolean;
}

const reason = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** Checks one shard entry; null when the file matches it. */
async function checkShard(dir: string, s: Manifest['shards'][number], hash: boolean): Promise<string | null> {
  const path = join(dir, s.file);
  let size: number;
  try {
    const st = await stat(path);
    if (!st.isFile()) return 'not a regular file';
    size = st.size;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    return code === 'ENOENT' || code === 'ENOTDIR' ? 'missing' : `cannot read: ${reason(err)}`;
  }
  if (size !== s.bytes) return `size ${size} bytes, manifest says ${s.bytes}`;
  if (!hash) return null;
  let actual: string;
  try {
    actual = await hashFile(path);
  } catch (err) {
    return `cannot read: ${reason(err)}`;
  }
  return actual === s.sha256 ? null : `sha256 mismatch (manifest ${s.sha256}, file ${actual})`;
}

/**
 * Checks every shard `manifest` (read from `dir`, so already validated: plain names, or part
 * paths for a merge) lists: the file exists, is a regular file of the recorded size and, with
 * `hash`, has the recorded sha256. Resolves to the problems in manifest order (empty when all
 * are good); never throws for a bad shard.
 */
export async function checkShards(dir: string, manifest: Manifest, options: CheckShardsOptions = {}): Promise<ShardProblem[]> {
  const problems: ShardProblem[] = [];
  for (const [index, s] of manifest.shards.entries()) {
    const problem = await checkShard(dir, s, options.hash ?? true);
    if (problem) problems.push({ index, file: s.file, problem });
  }
  return problems;
}
