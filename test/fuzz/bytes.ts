// Byte-level mutations for the fuzz harness (bit flips, byte runs, truncation, extension,
// insertion, deletion) and numeric field overwrites for the structure-aware formats.
import type { Rng } from './rng.js';

/** A little-endian unsigned integer field inside a file: where it is and what it means. */
export interface Field {
  at: number;
  size: 1 | 2 | 4 | 8;
  name: string;
}

/** Positions in [lo, hi) are preferred (a header) when given. */
export interface Region {
  lo: number;
  hi: number;
}

function position(rng: Rng, len: number, hot?: Region): number {
  if (len === 0) return 0;
  if (hot && hot.hi > hot.lo && rng.chance(0.7)) return Math.min(len - 1, hot.lo + rng.int(hot.hi - hot.lo));
  return rng.int(len);
}

/** One random byte-level edit of `buf`; `hot` biases positions toward a header. */
export function mutateBytes(rng: Rng, buf: Buffer, hot?: Region): { buf: Buffer; what: string } {
  const len = buf.length;
  const op = rng.weighted<string>([
    ['flip', 4],
    ['run', 2],
    ['truncate', 2],
    ['extend', 1],
    ['insert', 1],
    ['delete', 1],
  ]);
  switch (op) {
    case 'flip': {
      const out = Buffer.from(buf);
      const n = rng.pick([1, 1, 2, 4, 8, 32]);
      for (let i = 0; i < n && len; i++) out[position(rng, len, hot)]! ^= 1 << rng.int(8);
      return { buf: out, what: `flip ${n} bit(s)` };
    }
    case 'run': {
      const out = Buffer.from(buf);
      const at = position(rng, len, hot);
      const n = Math.min(len - at, rng.pick([1, 2, 4, 8, 16, 256, 4096]));
      const value = rng.pick([0x00, 0xff, 0x7f, 0x80, 0x20, 0x22, 0x5b, -1]);
      for (let i = 0; i < n; i++) out[at + i] = value < 0 ? rng.int(256) : value;
      return { buf: out, what: `byte run ${n}@${at}=${value}` };
    }
    case 'truncate': {
      const at = rng.chance(0.3) ? rng.pick([0, 1, 4, 8, 9, Math.max(0, len - 1), len >> 1]) : position(rng, len, hot);
      return { buf: buf.subarray(0, Math.min(at, len)), what: `truncate to ${Math.min(at, len)}` };
    }
    case 'extend': {
      const n = rng.pick([1, 7, 8, 4096, 1 << 20]);
      const tail = rng.chance(0.5) ? Buffer.alloc(n, rng.pick([0, 0xff])) : rng.bytes(Math.min(n, 65536));
      return { buf: Buffer.concat([buf, rng.chance(0.2) ? buf : tail]), what: `extend by ${n}` };
    }
    case 'insert': {
      const at = position(rng, len, hot);
      const ins = rng.bytes(rng.pick([1, 4, 8, 64]));
      return { buf: Buffer.concat([buf.subarray(0, at), ins, buf.subarray(at)]), what: `insert ${ins.length}@${at}` };
    }
    default: {
      const at = position(rng, len, hot);
      const n = rng.pick([1, 4, 8, 64, 1024]);
      return { buf: Buffer.concat([buf.subarray(0, at), buf.subarray(at + n)]), what: `delete ${n}@${at}` };
    }
  }
}

/** Values for an unsigned field of `size` bytes that break counts, lengths, offsets and types. */
export function interestingUint(rng: Rng, size: 1 | 2 | 4 | 8, current: bigint, fileLen: number): bigint {
  const max = (1n << BigInt(size * 8)) - 1n;
  const v = rng.pick<bigint>([
    0n,
    1n,
    2n,
    3n,
    4n,
    5n,
    8n,
    13n,
    current + 1n,
    current - 1n,
    current * 2n,
    current + 4096n,
    BigInt(fileLen),
    BigInt(fileLen) + 1n,
    0x7fn,
    0xffn,
    0x7fffn,
    0xffffn,
    0x7fffffffn,
    0xffffffffn,
    1n << 32n,
    1n << 53n,
    0x7fffffffffffffffn,
    max,
    BigInt(rng.u32()),
  ]);
  return ((v % (max + 1n)) + (max + 1n)) % (max + 1n);
}

export function readField(buf: Buffer, f: Field): bigint {
  if (f.at + f.size > buf.length) return 0n;
  if (f.size === 8) return buf.readBigUInt64LE(f.at);
  if (f.size === 4) return BigInt(buf.readUInt32LE(f.at));
  if (f.size === 2) return BigInt(buf.readUInt16LE(f.at));
  return BigInt(buf[f.at]!);
}

export function writeField(buf: Buffer, f: Field, v: bigint): void {
  if (f.at + f.size > buf.length) return;
  if (f.size === 8) buf.writeBigUInt64LE(v, f.at);
  else if (f.size === 4) buf.writeUInt32LE(Number(v), f.at);
  else if (f.size === 2) buf.writeUInt16LE(Number(v), f.at);
  else buf[f.at] = Number(v);
}

/** Overwrites one of `fields` with an interesting value. */
export function mutateField(rng: Rng, buf: Buffer, fields: readonly Field[]): { buf: Buffer; what: string } {
  if (fields.length === 0) return mutateBytes(rng, buf);
  const f = rng.pick(fields);
  const out = Buffer.from(buf);
  const v = interestingUint(rng, f.size, readField(buf, f), buf.length);
  writeField(out, f, v);
  return { buf: out, what: `${f.name}@${f.at}=${v}` };
}
