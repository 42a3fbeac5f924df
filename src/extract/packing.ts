// Packs documents into fixed-length token windows, shards windows across runs and describes
// the policy for the output manifest. Tests: test/extract-sources.test.ts.
import { statSync } from 'node:fs';

import { InvalidInputError, ModelLoadError } from '../errors.js';
import type { Document, SourceSpec } from './sources.js';

/** How documents become windows. */
export interface PackingOptions {
  /** Tokens per window (a positive integer). */
  seqLen: number;
  /**
   * Concatenate documents and cut the stream into consecutive windows; false gives one window
   * per document, truncated to `seqLen` or right-padded with `padId`. Defaults to true.
   */
  pack?: boolean;
  /** Packed mode: keep the trailing partial window, right-padded with `padId`. Defaults to false. */
  padLast?: boolean;
  /** Id written into padded positions (never attended to by `length`-aware consumers). Defaults to 0. */
  padId?: number;
}

/** One window of token ids. Each window owns its buffer; nothing is reused. */
export interface Window {
  /** [seqLen] token ids; positions from `length` on hold `padId`. */
  tokens: Int32Array;
  /** Real tokens in the window: `seqLen`, or fewer only when padded. */
  length: number;
  /** 0-based index of this window in the whole stream, before any sharding. */
  index: number;
}

const MAX_ID = 0x7fffffff;

function resolve(opts: PackingOptions): Required<PackingOptions> {
  const { seqLen, pack = true, padLast = false, padId = 0 } = opts;
  if (!Number.isSafeInteger(seqLen) || seqLen < 1) throw new InvalidInputError('ERR_INVALID_INPUT', `seqLen must be a positive integer, got ${seqLen}`);
  if (!Number.isInteger(padId) || padId < 0 || padId > MAX_ID) throw new InvalidInputError('ERR_INVALID_INPUT', `padId must be an integer in [0, ${MAX_ID}], got ${padId}`);
  return { seqLen, pack, padLast, padId };
}

/**
 * Turns documents into windows of `seqLen` token ids, in stream order.
 *
 * A text document is tokenized with `encode` (pass the model tokenizer's `encode` with special
 * tokens, so BOS is added per document exactly when the model's tokenizer adds one); a
 * pre-tokenized document is used as given. Empty documents (text `''`, tokens `[]`, or text
 * that encodes to no ids) contribute nothing, not even a BOS.
 *
 * Packed (default): every document's ids are concatenated in order, with no separator (BOS,
 * when the tokenizer adds one, is the only boundary), and cut into consecutive windows; a
 * document may span windows. The trailing partial window is dropped, or with `padLast`
 * right-padded with `padId` (its `length` is the real count).
 *
 * `pack: false`: one window per non-empty document, truncated to `seqLen`, or right-padded with
 * `padId` when shorter (`padLast` does not apply).
 *
 * Memory: holds one document's ids and one window. A text document without `encode` is
 * `InvalidInputError` `ERR_NO_TOKENIZER`; bad options are `ERR_INVALID_INPUT`.
 */
export async function* packWindows(
  docs: AsyncIterable<Document>,
  encode: ((text: string) => number[]) | null,
  opts: PackingOptions,
): AsyncGenerator<Window> {
  const { seqLen, pack, padLast, padId } = resolve(opts);
  let index = 0;
  let window = new Int32Array(seqLen); // [seqLen]
  let fill = 0;
  for await (const doc of docs) {
    const ids = idsOf(doc, encode);
    if (ids.length === 0) continue;
    if (!pack) {
      const n = Math.min(ids.length, seqLen);
      const tokens = new Int32Array(seqLen).fill(padId); // [seqLen]
      for (let i = 0; i < n; i++) tokens[i] = ids[i]!;
      yield { tokens, length: n, index: index++ };
      continue;
    }
    let at = 0;
    while (at < ids.length) {
      const n = Math.min(ids.length - at, seqLen - fill);
      for (let i = 0; i < n; i++) window[fill + i] = ids[at + i]!;
      fill += n;
      at += n;
      if (fill === seqLen) {
        yield { tokens: window, length: seqLen, index: index++ };
        window = new Int32Array(seqLen);
        fill = 0;
      }
    }
  }
  if (pack && padLast && fill > 0) {
    window.fill(padId, fill);
    yield { tokens: window, length: fill, index };
  }
}

function idsOf(doc: Document, encode: ((text: string) => number[]) | null): readonly number[] {
  if (doc.tokens !== undefined) return doc.tokens;
  const text = doc.text ?? '';
  if (text === '') return [];
  if (encode === null) {
    throw new InvalidInputError('ERR_NO_TOKENIZER', `${doc.file}:${doc.line}: text input needs a tokenizer; the model has no tokenizer.json (pass pre-tokenized input)`);
  }
  return encode(text);
}

/**
 * Keeps the items whose `index % count === shard.index`. Window indices are assigned before
 * sharding, so N runs over the same input and options, one per shard, see disjoint windows
 * whose union is every window (round-robin, which also balances document lengths).
 */
export async function* shardFilter<T extends { index: number }>(items: AsyncIterable<T>, shard: { index: number; count: number }): AsyncGenerator<T> {
  const { index, count } = shard;
  if (!Number.isSafeInteger(count) || count < 1 || !Number.isSafeInteger(index) || index < 0 || index >= count) {
    throw new InvalidInputError('ERR_INVALID_INPUT', `invalid shard ${index}/${count}: need 0 <= I < N`);
  }
  for await (const item of items) if (item.index % count === index) yield item;
}

/** Parses a `--shard I/N` value ("0/4" … "3/4"); anything else is `ERR_INVALID_INPUT`. */
export function parseShard(spec: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(spec);
  const index = m ? Number(m[1]) : NaN;
  const count = m ? Number(m[2]) : NaN;
  if (!m || !Number.isSafeInteger(index) || !Number.isSafeInteger(count) || count < 1 || index >= count) {
    throw new InvalidInputError('ERR_INVALID_INPUT', `invalid --shard "${spec}": expected I/N with 0 <= I < N, e.g. 0/4`);
  }
  return { index, count };
}

/**
 * A JSON-able description of the packing policy and its input, for the output manifest.
 * Input files are identified by path (as given), size in bytes and modification time rather
 * than a content hash: hashing would cost a second full read of a possibly multi-GB corpus,
 * and size plus mtime is enough for a resumed run to notice that its input changed. A missing
 * file is `ModelLoadError` `ERR_FILE_NOT_FOUND` (`ERR_FILE_READ` when it cannot be stat'ed).
 */
export function describePacking(opts: PackingOptions, spec: SourceSpec): Record<string, unknown> {
  const { seqLen, pack, padLast, padId } = resolve(opts);
  const input: Record<string, unknown> = { kind: spec.kind };
  if (spec.kind === 'text') input.wholeFile = spec.wholeFile ?? false;
  if (spec.kind === 'jsonl') input.textField = spec.textField;
  input.files = spec.files.map((path) => {
    try {
      const st = statSync(path);
      return { path, bytes: st.size, mtime: st.mtime.toISOString() };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'ERR_FILE_NOT_FOUND' : 'ERR_FILE_READ';
      throw new ModelLoadError(code, `cannot stat input file ${path}: ${(err as Error).message}`, { cause: err });
    }
  });
  return {
    policy: pack ? 'packed' : 'per-document',
    seqLen,
    pack,
    padLast,
    padId,
    padding: pack ? (padLast ? 'trailing partial window padded' : 'trailing partial window dropped') : 'short documents padded',
    separator: 'none',
    bos: spec.kind === 'tokens' ? 'as given' : "per document, when the model's tokenizer adds one",
    emptyDocuments: 'skipped',
    truncation: pack ? 'none' : 'to seqLen',
    windowIndex: 'stream order, before sharding',
    input,
  };
}
