// Reading user files without blocking: only regular files are read, so a FIFO, directory,
// socket or device given as tokenizer.json, an SAE or a steering file fails with a coded error
// instead of hanging. The native loader does the same (native/io/file.h). Tests: test/load-robustness.test.ts.
import { closeSync, constants, fstatSync, openSync, readFileSync, type Stats } from 'node:fs';

import { ModelLoadError, NeurotapError } from '../errors.js';

function kind(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'a special file';
}

/**
 * The bytes of the regular file `path` (`what` names it in messages). Opens with O_NONBLOCK, so
 * that opening a FIFO returns at once, then checks the type on the open descriptor (no race
 * between the check and the read). Throws ModelLoadError: ERR_FILE_NOT_FOUND, or ERR_FILE_READ
 * for anything that is not a readable regular file.
 */
export function readRegularFile(path: string, what: string): Buffer {
  const fail = (err: unknown, why = (err as Error).message) => {
    const code = (err as NodeJS.ErrnoException | undefined)?.code === 'ENOENT' ? 'ERR_FILE_NOT_FOUND' : 'ERR_FILE_READ';
    return new ModelLoadError(code, `cannot read ${what} ${path}: ${why}`, err === undefined ? undefined : { cause: err });
  };
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (err) {
    throw fail(err);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw fail(undefined, `${kind(st)}, not a regular file`);
    return readFileSync(fd);
  } catch (err) {
    throw err instanceof NeurotapError ? err : fail(err);
  } finally {
    closeSync(fd);
  }
}
