// Safetensors-aware mutations for the fuzz harness: tensor entry edits (offsets, shapes,
// dtypes, names), the header length field, header padding and data-section damage.
import { mutateBytes, mutateField } from './bytes.js';
import { Dup, Raw, mutateJson, stringify, type Node } from './json-mutate.js';
import type { Rng } from './rng.js';

type Entry = { [k: string]: Node };

const DTYPES: Node[] = ['F32', 'F16', 'BF16', 'F64', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL', 'F8_E4M3', 'F8_E5M2', 'f32', 'float32', '', 'Q4_0', 5, null];

function offsetsEdit(rng: Rng, off: [number, number], dataLen: number, other: [number, number]): Node {
  const [b, e] = off;
  return rng.pick<() => Node>([
    () => [e, b],
    () => [b, dataLen + 1],
    () => [b, b],
    () => [b - 1, e - 1],
    () => [b + 1, e + 1],
    () => [0, e - b],
    () => [...other],
    () => [b, e + 4],
    () => [b, e - 2],
    () => [-4, e],
    () => [b + 0.5, e],
    () => [String(b), e],
    () => [b, new Raw('9007199254740993')],
    () => [b, new Raw('18446744073709551616')],
    () => [new Raw('18446744073709551612'), new Raw('18446744073709551616')],
    () => [b],
    () => [b, e, 0],
    () => null,
    () => ({}),
    () => [dataLen, dataLen],
  ])();
}

function shapeEdit(rng: Rng, shape: number[]): Node {
  return rng.pick<() => Node>([
    () => [],
    () => [0],
    () => [-1, ...shape.slice(1)],
    () => shape.map((d, i) => (i === 0 ? d * 2 : d)),
    () => shape.slice(1),
    () => [1, ...shape],
    () => [...shape, 1],
    () => [2 ** 32, 2 ** 32],
    () => [2 ** 31, 2],
    () => [65536, 65536, 65536, 65536],
    () => [1e20],
    () => [1.5],
    () => [String(shape[0] ?? 1)],
    () => [null],
    () => [...shape].reverse(),
    () => new Array(rng.pick([9, 64, 1000])).fill(1),
    () => 'x',
    () => null,
  ])();
}

function entryEdit(rng: Rng, header: Entry, dataLen: number): { header: Node; what: string } {
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  if (names.length === 0) return { header: { x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, what: 'add a tensor' };
  const name = rng.pick(names);
  const e = header[name] as Entry;
  const op = rng.weighted<string>([
    ['offsets', 4],
    ['shape', 4],
    ['dtype', 3],
    ['delete', 1],
    ['rename', 1],
    ['duplicate', 1],
    ['metadata', 1],
  ]);
  switch (op) {
    case 'offsets': {
      const other = (header[rng.pick(names)] as Entry).data_offsets as [number, number];
      e.data_offsets = offsetsEdit(rng, e.data_offsets as [number, number], dataLen, other);
      break;
    }
    case 'shape':
      e.shape = shapeEdit(rng, e.shape as number[]);
      break;
    case 'dtype':
      e.dtype = rng.pick(DTYPES);
      break;
    case 'delete':
      delete header[name];
      break;
    case 'rename': {
      const to = rng.chance(0.5) ? rng.pick(names) : name + rng.pick(['x', '.0', '_', '']);
      const entries = Object.entries(header).map(([k, v]) => [k === name ? to : k, v] as [string, Node]);
      return { header: new Dup(entries), what: `rename ${name} -> ${to}` };
    }
    case 'duplicate': {
      const entries = Object.entries(header) as [string, Node][];
      entries.push([name, { ...e, data_offsets: rng.chance(0.5) ? e.data_offsets! : [0, 4] }]);
      return { header: new Dup(entries), what: `duplicate ${name}` };
    }
    case 'metadata':
      header.__metadata__ = rng.pick<Node>([{ format: 5 }, [], 'x', { a: { b: 1 } }, null, { format: 'pt', ['a'.repeat(1000)]: 'b' }]);
      return { header, what: 'metadata' };
  }
  return { header, what: `${op} ${name}` };
}

/** One safetensors-aware mutation of `buf` (falls back to byte edits when the header does not parse). */
export function mutateSafetensors(rng: Rng, buf: Buffer): { buf: Buffer; what: string } {
  let n = 0;
  let header: Entry;
  try {
    n = Number(buf.readBigUInt64LE(0));
    header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Entry;
  } catch {
    return mutateBytes(rng, buf);
  }
  const data = buf.subarray(8 + n);
  const assemble = (h: Node, pad = '') => {
    const text = Buffer.from(stringify(h) + pad, 'utf8');
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(text.length));
    return Buffer.concat([len, text, data]);
  };
  const op = rng.weighted<string>([
    ['entry', 6],
    ['json', 2],
    ['length', 2],
    ['pad', 1],
    ['bytes', 2],
    ['data', 1],
    ['root', 0.5],
  ]);
  switch (op) {
    case 'entry': {
      const r = entryEdit(rng, header, data.length);
      return { buf: assemble(r.header), what: `safetensors ${r.what}` };
    }
    case 'json': {
      const r = mutateJson(rng, header, { keys: ['__metadata__', 'dtype', 'shape', 'data_offsets'], strings: DTYPES.filter((d): d is string => typeof d === 'string'), shallow: 0.3 });
      return { buf: assemble(r.root), what: `safetensors header ${r.what.join(', ')}` };
    }
    case 'length': {
      const r = mutateField(rng, buf, [{ at: 0, size: 8, name: 'header length' }]);
      return { buf: r.buf, what: `safetensors ${r.what}` };
    }
    case 'pad': {
      const pad = rng.pick([' '.repeat(7), '\u0000\u0000\u0000', 'garbage', '}', '\n']);
      return { buf: assemble(header, pad), what: `safetensors header padded with ${JSON.stringify(pad)}` };
    }
    case 'bytes': {
      const r = mutateBytes(rng, buf, { lo: 0, hi: 8 + n });
      return { buf: r.buf, what: `safetensors ${r.what}` };
    }
    case 'data': {
      const cut = rng.chance(0.5);
      const k = rng.pick([1, 2, 4, 1024]);
      const d = cut ? data.subarray(0, Math.max(0, data.length - k)) : Buffer.concat([data, Buffer.alloc(k)]);
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(n));
      return { buf: Buffer.concat([len, buf.subarray(8, 8 + n), d]), what: `safetensors data ${cut ? 'cut' : 'extended'} by ${k}` };
    }
    default: {
      const root = rng.pick<Node>([[], null, 'x', 1, {}, new Raw('{"a":1,}')]);
      return { buf: assemble(root), what: `safetensors header ${stringify(root)}` };
    }
  }
}
