// File access for the CLI with coded errors (so a failure prints `neurotap: error [CODE]: ...`,
// never a stack trace), and the last-resort mapping of any other exception. Tests: test/cli-errors.test.ts.
import { readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

import { NeurotapError } from '../errors.js';
import { errCode, writeError } from '../extract/files.js';

const reason = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** Reads a UTF-8 input file: missing is ERR_FILE_NOT_FOUND, anything else (a directory, no permission) ERR_FILE_READ. */
export function readInputFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const code = errCode(err) === 'ENOENT' ? 'ERR_FILE_NOT_FOUND' : 'ERR_FILE_READ';
    throw new NeurotapError(code, `cannot read ${what} ${path}: ${reason(err)}`, { cause: err });
  }
}

/**
 * Checks, before any work, that an output file can be created at `path`: it is not a directory
 * and its parent is an existing directory. ERR_FILE_WRITE otherwise.
 */
export function checkOutputFile(path: string): void {
  const fail = (why: string, cause?: unknown) => new NeurotapError('ERR_FILE_WRITE', `cannot write ${path}: ${why}`, { cause });
  const statOrNull = (p: string) => {
    try {
      return statSync(p);
    } catch (err) {
      if (errCode(err) === 'ENOENT' || errCode(err) === 'ENOTDIR') return null;
      throw fail(reason(err), err);
    }
  };
  const abs = resolve(path);
  if (statOrNull(abs)?.isDirectory()) throw fail('it is a directory');
  const parent = dirname(abs);
  const pst = statOrNull(parent);
  if (!pst) throw fail(`directory ${parent} does not exist`);
  if (!pst.isDirectory()) throw fail(`${parent} is not a directory`);
}

/** Runs a synchronous writer of `path`, turning its fs failures into ERR_FILE_WRITE / ERR_DISK_FULL. */
export function writeOutputFile(path: string, write: () => void): void {
  try {
    write();
  } catch (err) {
    throw writeError(err, path);
  }
}

const WRITE_CALLS = new Set(['mkdir', 'write', 'rename', 'unlink', 'rmdir', 'rm', 'fsync', 'ftruncate', 'copyfile', 'symlink', 'link', 'utime', 'chmod']);

/**
 * Any exception as a coded error for the CLI's one-line report: a NeurotapError as it is, a
 * Node file-system error as ERR_FILE_WRITE / ERR_DISK_FULL (write calls) or ERR_FILE_NOT_FOUND /
 * ERR_FILE_READ, anything else as ERR_INTERNAL.
 */
export function asCodedError(err: unknown): NeurotapError {
  if (err instanceof NeurotapError) return err;
  const syscall = (err as { syscall?: unknown }).syscall;
  if (err instanceof Error && typeof errCode(err) === 'string' && typeof syscall === 'string') {
    if (WRITE_CALLS.has(syscall) || errCode(err) === 'ENOSPC') return writeError(err, String((err as { path?: unknown }).path ?? 'a file'));
    return new NeurotapError(errCode(err) === 'ENOENT' ? 'ERR_FILE_NOT_FOUND' : 'ERR_FILE_READ', reason(err), { cause: err });
  }
  const name = err instanceof Error ? `${err.name}: ` : '';
  return new NeurotapError('ERR_INTERNAL', `unexpected ${name}${reason(err)} (please report this; NEUROTAP_DEBUG=1 prints the stack)`, { cause: err });
}
