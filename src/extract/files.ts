// File-system helpers of the extraction output: coded write errors, directory fsync and creation,
// shard hashing. Tests: test/extract-output.test.ts, test/extract-verify.test.ts, test/cli-errors.test.ts.
import { createHash } from 'node:crypto';
import { mkdir, open, stat, type FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

import { NeurotapError } from '../errors.js';

const HASH_CHUNK = 4 << 20;

/** The `code` of a Node system error (ENOENT, EEXIST, ...), if any. */
export const errCode = (err: unknown): unknown => (err as { code?: unknown }).code;

/** Turns a failed fs call into a coded error: ERR_DISK_FULL for ENOSPC / EDQUOT, else ERR_FILE_WRITE. */
export function writeError(err: unknown, what: string): NeurotapError {
  if (err instanceof NeurotapError) return err;
  const code = (err as { code?: unknown }).code;
  const msg = err instanceof Error ? err.message : String(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new NeurotapError('ERR_DISK_FULL', `no space left on the device while writing ${what} (${msg}); completed shards are kept and the run can be resumed`, { cause: err });
  }
  return new NeurotapError('ERR_FILE_WRITE', `could not write ${what}: ${msg}`, { cause: err });
}

/** fsyncs a directory so a rename inside it survives a crash; a no-op where directories can't be synced. */
export async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EBADF') throw writeError(err, `directory ${dir}`);
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/**
 * Creates `dir` and any missing parents, one level at a time (Node's recursive mkdir loops
 * forever on paths under /proc). An existing directory is fine; an existing file at `dir` or at
 * a parent, a read-only file system or missing permissions are ERR_FILE_WRITE naming the path
 * and the reason (ERR_DISK_FULL for a full disk).
 */
export async function ensureDir(dir: string, target = resolve(dir)): Promise<void> {
  const abs = resolve(dir);
  const fail = (why: string, cause?: unknown) => new NeurotapError('ERR_FILE_WRITE', `cannot create directory ${target}: ${why}`, { cause });
  const st = await stat(abs).catch((err: unknown) => {
    if (errCode(err) === 'ENOENT' || errCode(err) === 'ENOTDIR') return null;
    throw fail((err as Error).message, err);
  });
  if (st) {
    if (st.isDirectory()) return;
    throw fail(`${abs} exists and is not a directory`);
  }
  const parent = dirname(abs);
  if (parent !== abs) await ensureDir(parent, target);
  try {
    await mkdir(abs);
  } catch (err) {
    // Created by someone else in the meantime: fine if it is a directory.
    if (errCode(err) === 'EEXIST' && (await stat(abs).catch(() => null))?.isDirectory()) return;
    if (errCode(err) === 'ENOSPC' || errCode(err) === 'EDQUOT') throw writeError(err, `directory ${abs}`);
    throw fail((err as Error).message, err);
  }
}

/** Hex sha256 of the first `bytes` bytes of an open file. */
export async function hashHandle(fh: FileHandle, bytes: number): Promise<string> {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(Math.max(1, Math.min(HASH_CHUNK, bytes)));
  for (let pos = 0; pos < bytes;) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, bytes - pos), pos);
    if (bytesRead <= 0) throw Object.assign(new Error('unexpected end of file while hashing'), { code: 'EIO' });
    hash.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return hash.digest('hex');
}

/** Hex sha256 of a whole file (read in 4 MiB chunks). Rejects with the raw fs error. */
export async function hashFile(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    return await hashHandle(fh, (await fh.stat()).size);
  } finally {
    await fh.close();
  }
}
