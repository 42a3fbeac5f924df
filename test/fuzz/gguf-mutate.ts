// GGUF-aware mutations for the fuzz harness: header counts, KV keys, types and values, tensor
// infos (names, dims, types, offsets), added or dropped records. A lenient locator maps the
// fields of the committed fixtures; the reader under test is src/steering/gguf.ts.
import { mutateBytes, mutateField, type Field } from './bytes.js';
import type { Rng } from './rng.js';

/** A length-prefixed string: its u64 length field and its bytes. */
interface StringAt {
  len: Field;
  at: number;
  bytes: Buffer;
}
/** A whole record (one KV pair or one tensor info), for duplication and removal. */
interface Record {
  at: number;
  end: number;
}
interface Layout {
  fields: Field[];
  strings: StringAt[];
  kvs: Record[];
  tensors: Record[];
  headerEnd: number;
}

const SCALAR_SIZE: { [t: number]: 1 | 2 | 4 | 8 } = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

/** Maps the fields of a well-formed GGUF (stops quietly at the first thing it cannot follow). */
function locate(buf: Buffer): Layout {
  const L: Layout = { fields: [], strings: [], kvs: [], tensors: [], headerEnd: 24 };
  let p = 0;
  const field = (size: 1 | 2 | 4 | 8, name: string): bigint => {
    if (p + size > buf.length) throw new Error('end');
    L.fields.push({ at: p, size, name });
    const v = size === 8 ? buf.readBigUInt64LE(p) : size === 4 ? BigInt(buf.readUInt32LE(p)) : size === 2 ? BigInt(buf.readUInt16LE(p)) : BigInt(buf[p]!);
    p += size;
    return v;
  };
  const str = (name: string): string => {
    const lenAt = p;
    const n = Number(field(8, `${name} length`));
    if (p + n > buf.length) throw new Error('end');
    L.strings.push({ len: { at: lenAt, size: 8, name }, at: p, bytes: buf.subarray(p, p + n) });
    p += n;
    return buf.toString('utf8', p - n, p);
  };
  const value = (type: number, name: string): void => {
    if (type === 8) str(name);
    else if (type === 9) {
      const it = Number(field(4, `${name} item type`));
      const count = Number(field(8, `${name} count`));
      for (let i = 0; i < Math.min(count, 64); i++) value(it, `${name}[${i}]`);
      if (count > 64) throw new Error('long array');
    } else if (SCALAR_SIZE[type]) field(SCALAR_SIZE[type]!, name);
    else throw new Error('type');
  };
  try {
    p = 4;
    field(4, 'version');
    const tensors = Number(field(8, 'tensor count'));
    const kvs = Number(field(8, 'kv count'));
    for (let i = 0; i < kvs; i++) {
      const at = p;
      const key = str(`key #${i}`);
      const type = Number(field(4, `type of ${key}`));
      value(type, `value of ${key}`);
      L.kvs.push({ at, end: p });
    }
    for (let i = 0; i < tensors; i++) {
      const at = p;
      const name = str(`tensor #${i} name`);
      const dims = Number(field(4, `${name} n_dims`));
      for (let d = 0; d < dims; d++) field(8, `${name} dim ${d}`);
      field(4, `${name} type`);
      field(8, `${name} offset`);
      L.tensors.push({ at, end: p });
    }
    L.headerEnd = p;
  } catch {
    L.headerEnd = p;
  }
  return L;
}

const NEW_STRINGS = ['', 'direction.x', 'direction.-1', 'direction.99999999999999999999', 'direction.01', 'general.alignment', 'general.architecture', 'controlvector', 'llama', '\u0000', 'é'];

/** Replaces a length-prefixed string, fixing its length field (later offsets move with it). */
function replaceString(buf: Buffer, s: StringAt, to: Buffer): Buffer {
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(to.length));
  return Buffer.concat([buf.subarray(0, s.len.at), len, to, buf.subarray(s.at + s.bytes.length)]);
}

/** One GGUF-aware mutation of `buf`. */
export function mutateGguf(rng: Rng, buf: Buffer): { buf: Buffer; what: string } {
  const L = locate(buf);
  const countField = (name: string) => L.fields.find((f) => f.name === name);
  const op = rng.weighted<string>([
    ['field', 6],
    ['string', 3],
    ['dup', 1],
    ['drop', 1],
    ['bytes', 2],
    ['truncate', 1],
  ]);
  switch (op) {
    case 'field': {
      const r = mutateField(rng, buf, L.fields);
      return { buf: r.buf, what: `gguf ${r.what}` };
    }
    case 'string': {
      if (L.strings.length === 0) break;
      const s = rng.pick(L.strings);
      const to = rng.chance(0.5)
        ? Buffer.from(rng.pick(NEW_STRINGS))
        : rng.chance(0.5)
          ? Buffer.concat([s.bytes, Buffer.from('x')])
          : Buffer.from(s.bytes.map((b, i) => (i === s.bytes.length - 1 ? b ^ 1 : b)));
      return { buf: replaceString(buf, s, to), what: `gguf ${s.len.name} = ${JSON.stringify(to.toString('latin1'))}` };
    }
    case 'dup':
    case 'drop': {
      const tensors = rng.chance(0.5) && L.tensors.length > 0;
      const recs = tensors ? L.tensors : L.kvs;
      const count = countField(tensors ? 'tensor count' : 'kv count');
      if (recs.length === 0 || !count) break;
      const r = rng.pick(recs);
      const body = buf.subarray(r.at, r.end);
      const out = op === 'dup' ? Buffer.concat([buf.subarray(0, r.end), body, buf.subarray(r.end)]) : Buffer.concat([buf.subarray(0, r.at), buf.subarray(r.end)]);
      if (rng.chance(0.8)) out.writeBigUInt64LE(buf.readBigUInt64LE(count.at) + (op === 'dup' ? 1n : -1n), count.at);
      return { buf: out, what: `gguf ${op} ${tensors ? 'tensor info' : 'kv'} @${r.at}` };
    }
    case 'truncate': {
      const f = L.fields.length ? rng.pick(L.fields) : { at: 0, size: 1 };
      const at = f.at + rng.int(f.size + 1);
      return { buf: buf.subarray(0, at), what: `gguf truncate to ${at}` };
    }
  }
  const r = mutateBytes(rng, buf, { lo: 0, hi: L.headerEnd });
  return { buf: r.buf, what: `gguf ${r.what}` };
}
