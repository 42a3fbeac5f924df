// Input documents for activation extraction: plain text, JSONL with a text field, or
// pre-tokenized JSONL, streamed line by line. Tests: test/extract-sources.test.ts.
import { promises as fsp } from 'node:fs';
import { createInterface } from 'node:readline';

import { InvalidInputError, ModelLoadError } from '../errors.js';

/**
 * Where documents come from. Files are read in the order given.
 * - `text`: a document per line (lines that are empty or only whitespace are skipped), or with
 *   `wholeFile` one document per file (its full content). Defaults to a document per line.
 * - `jsonl`: each non-blank line a JSON object whose `textField` is a string.
 * - `tokens`: each non-blank line a JSON array of token ids (integers in [0, 2^31 - 1]).
 */
export type SourceSpec =
  | { kind: 'text'; files: string[]; wholeFile?: boolean }
  | { kind: 'jsonl'; files: string[]; textField: string }
  | { kind: 'tokens'; files: string[] };

/** One document: `text` (text, jsonl) or `tokens` (pre-tokenized), with where it came from. */
export interface Document {
  text?: string;
  tokens?: number[];
  file: string;
  /** 1-based line number in `file`; 0 for a whole-file document. */
  line: number;
}

/** Largest id an Int32Array window can hold. */
const MAX_ID = 0x7fffffff;

/**
 * Streams the documents of `spec`, file by file, line by line (node:readline over a read
 * stream, so memory stays constant however large a file is; only `wholeFile` reads a file at
 * once). Lines are split as readline splits them (`\n`, `\r\n` or a lone `\r`); a UTF-8 BOM
 * at the start of a file is dropped. Line text is kept as is (no trimming).
 *
 * Errors: a missing file is `ModelLoadError` `ERR_FILE_NOT_FOUND`; a file that cannot be
 * read (a directory, no permission, an I/O error) is `ERR_FILE_READ`; malformed JSON, a
 * JSONL object without a string `textField`, or a tokens line that is not an array of
 * non-negative integer ids is `InvalidInputError` `ERR_INVALID_INPUT` naming `file:line`.
 * Errors surface when the generator reaches that file or line, not up front.
 */
export async function* readDocuments(spec: SourceSpec): AsyncGenerator<Document> {
  if (spec.files.length === 0) throw new InvalidInputError('ERR_INVALID_INPUT', 'no input files given');
  if (spec.kind === 'jsonl' && spec.textField === '') throw new InvalidInputError('ERR_INVALID_INPUT', 'the JSONL text field name is empty');
  for (const file of spec.files) {
    if (spec.kind === 'text' && spec.wholeFile) {
      const text = stripBom(await readWhole(file));
      if (text.trim() !== '') yield { text, file, line: 0 };
      continue;
    }
    for await (const [raw, line] of readLines(file)) {
      if (raw.trim() === '') continue;
      if (spec.kind === 'text') yield { text: raw, file, line };
      else if (spec.kind === 'jsonl') yield { text: parseTextLine(raw, spec.textField, file, line), file, line };
      else yield { tokens: parseTokensLine(raw, file, line), file, line };
    }
  }
}

/** The text of one JSONL line's `field`. */
function parseTextLine(raw: string, field: string, file: string, line: number): string {
  const value = parseJson(raw, file, line);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidInputError('ERR_INVALID_INPUT', `${file}:${line}: expected a JSON object with a string "${field}" field`);
  }
  const text = (value as Record<string, unknown>)[field];
  if (typeof text !== 'string') {
    const got = text === undefined ? 'it is missing' : `got ${jsonType(text)}`;
    throw new InvalidInputError('ERR_INVALID_INPUT', `${file}:${line}: field "${field}" must be a string; ${got}`);
  }
  return text;
}

/** The ids of one pre-tokenized line. */
function parseTokensLine(raw: string, file: string, line: number): number[] {
  const value = parseJson(raw, file, line);
  if (!Array.isArray(value)) {
    throw new InvalidInputError('ERR_INVALID_INPUT', `${file}:${line}: expected a JSON array of token ids, got ${jsonType(value)}`);
  }
  for (let i = 0; i < value.length; i++) {
    const id: unknown = value[i];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > MAX_ID) {
      throw new InvalidInputError('ERR_INVALID_INPUT', `${file}:${line}: token ${i} is ${JSON.stringify(id)}; ids must be integers in [0, ${MAX_ID}]`);
    }
  }
  return value as number[];
}

function parseJson(raw: string, file: string, line: number): unknown {
  try {
    return JSON.parse(raw) as unknown;
  } catch (err) {
    throw new InvalidInputError('ERR_INVALID_INPUT', `${file}:${line}: malformed JSON: ${(err as Error).message}`);
  }
}

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

function stripBom(s: string): string {
  return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
}

/** Maps a Node fs error on `file` to ERR_FILE_NOT_FOUND / ERR_FILE_READ. */
function fileError(file: string, err: unknown): ModelLoadError {
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'ENOENT') return new ModelLoadError('ERR_FILE_NOT_FOUND', `input file not found: ${file}`, { cause: err });
  return new ModelLoadError('ERR_FILE_READ', `cannot read input file ${file}: ${e.message}`, { cause: err });
}

/** Opens `file` for reading, refusing what is not a regular file. */
async function openRegular(file: string): Promise<fsp.FileHandle> {
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, 'r');
  } catch (err) {
    throw fileError(file, err);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new ModelLoadError('ERR_FILE_READ', `cannot read input file ${file}: not a regular file`);
    return fh;
  } catch (err) {
    await fh.close();
    throw err instanceof ModelLoadError ? err : fileError(file, err);
  }
}

async function readWhole(file: string): Promise<string> {
  const fh = await openRegular(file);
  try {
    return await fh.readFile({ encoding: 'utf8' });
  } catch (err) {
    throw fileError(file, err);
  } finally {
    await fh.close();
  }
}

/** Yields [line, 1-based line number] for every line of `file`, blank ones included. */
async function* readLines(file: string): AsyncGenerator<[string, number]> {
  const fh = await openRegular(file);
  // The stream owns the handle from here (autoClose): ending or destroying it closes the file.
  const stream = fh.createReadStream({ encoding: 'utf8', highWaterMark: 1 << 16 });
  // readline's iterator does not reliably reject when its input errors, so keep the error and
  // end the iteration ourselves.
  let streamError: unknown = null;
  const rl = createInterface({ input: stream, crlfDelay: Infinity });
  stream.on('error', (err) => {
    streamError ??= err;
    rl.close();
  });
  let n = 0;
  try {
    for await (const raw of rl) {
      n++;
      yield [n === 1 ? stripBom(raw) : raw, n];
    }
  } catch (err) {
    throw fileError(file, err);
  } finally {
    rl.close();
    stream.destroy();
  }
  if (streamError !== null) throw fileError(file, streamError);
}
