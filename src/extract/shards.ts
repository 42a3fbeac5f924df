// Writes one activation shard (a safetensors file) batch by batch into a temporary file, then
// fsyncs and renames it into place. Tests: test/extract-output.test.ts (also read from Python).
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

import { InvalidInputError, NeurotapError } from '../errors.js';
import { DTYPE_BYTES, SAFETENSORS_DTYPE, toBf16, toF16, type OutDtype } from './dtype.js';
import { hashHandle, syncDir, writeError } from './files.js';

/** One hook tensor of a shard. */
export interface ShardHook {
  /** Hook name, the tensor's name in the file (never `tokens`). */
  name: string;
  /** Shape of one sequence's activation, e.g. `[seqLen, d_model]`; the tensor is `[nSeq, ...shapePerSeq]`. */
  shapePerSeq: number[];
}

/** What a shard holds, fixed before the first byte is written. */
export interface ShardLayout {
  /** Tokens per sequence; `tokens` is int32 `[nSeq, seqLen]`. */
  seqLen: number;
  /** Hook tensors, stored in this order after `tokens`. */
  hooks: ShardHook[];
  /** Element type of the hook tensors (they arrive as float32). */
  outDtype: OutDtype;
  /** Sequences in this shard; `finish()` refuses a shard with fewer. */
  nSeq: number;
  /** Extra string entries for the header's `__metadata__` (keep them deterministic). Defaults to none. */
  metadata?: Record<string, string>;
}

/** One batch of sequences: `b` rows of tokens and of every hook. */
export interface ShardBatch {
  /** [b, seqLen] token ids. */
  tokens: Int32Array;
  /** Per hook name, [b, ...shapePerSeq] float32 activations. */
  activations: ReadonlyMap<string, Float32Array>;
}

/** A shard renamed into its final place. */
export interface FinishedShard {
  /** File name inside the output directory, e.g. `shard-00000.safetensors`. */
  file: string;
  /** Absolute or caller-relative path of the file (`join(dir, file)`). */
  path: string;
  nSeq: number;
  /** File size in bytes. */
  bytes: number;
  /** Hex sha256 of the whole file. */
  sha256: string;
}

/** Options of a ShardWriter. */
export interface ShardWriterOptions {
  /** Opens the temporary file; a seam for fault-injection tests. Defaults to `fs.promises.open(path, 'w+')` (the shard is read back for its hash). */
  openFile?: (path: string) => Promise<FileHandle>;
}

/** `shard-00042.safetensors` for index 42. */
export function shardFileName(index: number): string {
  return `shard-${String(index).padStart(5, '0')}.safetensors`;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

interface Region {
  name: string;
  rowElems: number;  // elements per sequence
  rowBytes: number;  // bytes per sequence in the file
  start: number;     // absolute file offset of the tensor's first byte
}

/**
 * Writes one shard: int32 `tokens` [nSeq, seqLen], then one tensor per hook
 * [nSeq, ...shapePerSeq] in `outDtype`, as safetensors.
 *
 * Since every shape is known up front, the header (with all `data_offsets`) is written first
 * and each batch's rows go straight to their offsets in each tensor's region with positional
 * writes: memory stays at one batch (plus its f16/bf16 copy), whatever the shard size. The file
 * is `shard-XXXXX.safetensors.tmp` until `finish()` fsyncs it, hashes it and renames it, so a
 * final name always holds a complete shard. The bytes depend only on the layout and the data:
 * identical input gives an identical file.
 *
 * Calls run in order (each `append` waits for the previous one); a batch's buffers must not
 * change until its `append` resolves. A failed write closes and removes the temporary file and
 * rejects with ERR_DISK_FULL (ENOSPC) or ERR_FILE_WRITE; the writer is then unusable.
 */
export class ShardWriter {
  readonly dir: string;
  readonly shardIndex: number;
  readonly file: string;
  readonly tmpPath: string;
  readonly layout: ShardLayout;
  readonly #open: (path: string) => Promise<FileHandle>;
  readonly #regions: Region[];
  readonly #header: Buffer;
  readonly #bytes: number;
  #fh: FileHandle | undefined;
  #written = 0;  // sequences appended
  #queue: Promise<unknown> = Promise.resolve();
  #state: 'open' | 'failed' | 'finished' | 'aborted' = 'open';
  #scratch: Uint16Array | undefined;

  constructor(dir: string, shardIndex: number, layout: ShardLayout, options: ShardWriterOptions = {}) {
    const bad = (why: string) => new InvalidInputError('ERR_INVALID_INPUT', `shard layout: ${why}`);
    if (!Number.isSafeInteger(shardIndex) || shardIndex < 0) throw bad(`shard index must be a non-negative integer, got ${shardIndex}`);
    if (!Number.isSafeInteger(layout.seqLen) || layout.seqLen < 1) throw bad(`seqLen must be a positive integer, got ${layout.seqLen}`);
    if (!Number.isSafeInteger(layout.nSeq) || layout.nSeq < 1) throw bad(`nSeq must be a positive integer, got ${layout.nSeq}`);
    if (!(layout.outDtype in DTYPE_BYTES)) throw bad(`outDtype must be f32, f16 or bf16, got ${String(layout.outDtype)}`);
    this.dir = dir;
    this.shardIndex = shardIndex;
    this.file = shardFileName(shardIndex);
    this.tmpPath = join(dir, `${this.file}.tmp`);
    this.layout = { ...layout, hooks: layout.hooks.map((h) => ({ name: h.name, shapePerSeq: [...h.shapePerSeq] })) };
    this.#open = options.openFile ?? ((p) => open(p, 'w+'));

    const header: Record<string, unknown> = {
      __metadata__: { ...layout.metadata, format: 'pt', producer: 'neurotap', shard_index: String(shardIndex), out_dtype: layout.outDtype },
    };
    const tensors: { name: string; dtype: string; shapePerSeq: number[]; elemBytes: number }[] = [
      { name: 'tokens', dtype: 'I32', shapePerSeq: [layout.seqLen], elemBytes: 4 },
    ];
    const seen = new Set<string>(['tokens', '__metadata__']);
    for (const h of this.layout.hooks) {
      if (seen.has(h.name)) throw bad(`tensor name '${h.name}' is used twice or reserved`);
      seen.add(h.name);
      if (h.shapePerSeq.length === 0 || !h.shapePerSeq.every((d) => Number.isSafeInteger(d) && d > 0)) throw bad(`hook '${h.name}' has shape [${h.shapePerSeq.join(', ')}]; dimensions must be positive integers`);
      tensors.push({ name: h.name, dtype: SAFETENSORS_DTYPE[layout.outDtype], shapePerSeq: h.shapePerSeq, elemBytes: DTYPE_BYTES[layout.outDtype] });
    }
    let offset = 0;
    const regions: Omit<Region, 'start'>[] = [];
    const starts: number[] = [];
    for (const t of tensors) {
      const rowElems = t.shapePerSeq.reduce((a, b) => a * b, 1);
      const rowBytes = rowElems * t.elemBytes;
      const size = rowBytes * layout.nSeq;
      if (!Number.isSafeInteger(offset + size)) throw bad(`tensor '${t.name}' is too large`);
      header[t.name] = { dtype: t.dtype, shape: [layout.nSeq, ...t.shapePerSeq], data_offsets: [offset, offset + size] };
      regions.push({ name: t.name, rowElems, rowBytes });
      starts.push(offset);
      offset += size;
    }
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);  // 8-byte aligned data section, as safetensors pads
    const jsonBytes = Buffer.from(json, 'utf8');
    this.#header = Buffer.alloc(8 + jsonBytes.length);
    this.#header.writeBigUInt64LE(BigInt(jsonBytes.length), 0);
    jsonBytes.copy(this.#header, 8);
    const base = this.#header.length;
    this.#regions = regions.map((r, i) => ({ ...r, start: base + starts[i]! }));
    this.#bytes = base + offset;
  }

  /** Sequences appended so far. */
  get sequences(): number {
    return this.#written;
  }

  /** Size the finished file will have, in bytes. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Appends `b` sequences (rows `[sequences, sequences + b)` of every tensor). */
  append(batch: ShardBatch): Promise<void> {
    return this.#enqueue(() => this.#append(batch));
  }

  /** Checks that all `nSeq` sequences arrived, fsyncs, hashes, closes and renames the shard into place, then fsyncs the directory. */
  finish(): Promise<FinishedShard> {
    return this.#enqueue(() => this.#finish());
  }

  /** Closes and removes the temporary file without finishing (e.g. on cancel). Safe to call at any time. */
  abort(): Promise<void> {
    const run = this.#queue.then(() => this.#discard('aborted'), () => this.#discard('aborted'));
    this.#queue = run;
    return run;
  }

  #enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #checkUsable(): void {
    if (this.#state !== 'open') throw new InvalidInputError('ERR_INVALID_INPUT', `shard ${this.file} is ${this.#state}; no more calls are accepted`);
  }

  async #handle(): Promise<FileHandle> {
    if (this.#fh) return this.#fh;
    try {
      this.#fh = await this.#open(this.tmpPath);
      await this.#writeAt(this.#header, 0);
    } catch (err) {
      throw await this.#fail(err);
    }
    return this.#fh;
  }

  async #writeAt(buf: Uint8Array, position: number): Promise<void> {
    const fh = this.#fh!;
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
      if (bytesWritten <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
      done += bytesWritten;
    }
  }

  #validate(batch: ShardBatch): number {
    const bad = (why: string) => new InvalidInputError('ERR_INVALID_INPUT', `shard ${this.file}: ${why}`);
    const { seqLen, nSeq } = this.layout;
    if (!(batch.tokens instanceof Int32Array)) throw bad('tokens must be an Int32Array');
    const b = batch.tokens.length / seqLen;
    if (!Number.isInteger(b) || b < 1) throw bad(`tokens hold ${batch.tokens.length} ids, not a positive multiple of seqLen ${seqLen}`);
    if (this.#written + b > nSeq) throw bad(`batch of ${b} sequences would exceed the shard's ${nSeq} (already ${this.#written})`);
    for (const r of this.#regions.slice(1)) {
      const a = batch.activations.get(r.name);
      if (!(a instanceof Float32Array)) throw bad(`activation '${r.name}' is missing or not a Float32Array`);
      if (a.length !== b * r.rowElems) throw bad(`activation '${r.name}' holds ${a.length} values, expected ${b} × ${r.rowElems}`);
    }
    if (batch.activations.size !== this.#regions.length - 1) {
      const extra = [...batch.activations.keys()].filter((k) => !this.#regions.some((r) => r.name === k));
      throw bad(`unexpected activations: ${extra.join(', ')}`);
    }
    return b;
  }

  #encode(data: Float32Array | Int32Array, isTokens: boolean): Uint8Array {
    let out: Uint8Array;
    let width = 4;
    if (isTokens || this.layout.outDtype === 'f32') {
      out = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    } else {
      // One scratch buffer, grown to the largest hook-batch, keeps the conversion allocation-free.
      if (!this.#scratch || this.#scratch.length < data.length) this.#scratch = new Uint16Array(data.length);
      const conv = this.layout.outDtype === 'f16' ? toF16(data as Float32Array, this.#scratch) : toBf16(data as Float32Array, this.#scratch);
      out = new Uint8Array(conv.buffer, 0, data.length * 2);
      width = 2;
    }
    if (LITTLE_ENDIAN) return out;
    const swapped = Buffer.from(out);  // safetensors is little-endian; swap a copy on big-endian hosts
    return width === 4 ? swapped.swap32() : swapped.swap16();
  }

  async #append(batch: ShardBatch): Promise<void> {
    this.#checkUsable();
    const b = this.#validate(batch);
    await this.#handle();
    try {
      for (const [i, r] of this.#regions.entries()) {
        const data = i === 0 ? batch.tokens : batch.activations.get(r.name)!;
        await this.#writeAt(this.#encode(data, i === 0), r.start + this.#written * r.rowBytes);
      }
    } catch (err) {
      throw await this.#fail(err);
    }
    this.#written += b;
  }

  async #finish(): Promise<FinishedShard> {
    this.#checkUsable();
    if (this.#written !== this.layout.nSeq) throw new InvalidInputError('ERR_INVALID_INPUT', `shard ${this.file} holds ${this.#written} of its ${this.layout.nSeq} sequences`);
    const fh = await this.#handle();
    const path = join(this.dir, this.file);
    let sha256: string;
    try {
      await fh.sync();
      const { size } = await fh.stat();
      if (size !== this.#bytes) throw Object.assign(new Error(`file is ${size} bytes, expected ${this.#bytes}`), { code: 'EIO' });
      sha256 = await hashHandle(fh, this.#bytes);  // read back: positions are not written in file order
      this.#fh = undefined;
      await fh.close();
      await rename(this.tmpPath, path);
    } catch (err) {
      throw await this.#fail(err);
    }
    this.#state = 'finished';
    await syncDir(this.dir);
    return { file: this.file, path, nSeq: this.#written, bytes: this.#bytes, sha256 };
  }

  async #fail(err: unknown): Promise<NeurotapError> {
    await this.#discard('failed');
    return writeError(err, `shard ${this.tmpPath}`);
  }

  async #discard(state: 'failed' | 'aborted'): Promise<void> {
    if (this.#state === 'finished') return;
    this.#state = state;
    const fh = this.#fh;
    this.#fh = undefined;
    await fh?.close().catch(() => undefined);
    await rm(this.tmpPath, { force: true }).catch(() => undefined);
  }
}
