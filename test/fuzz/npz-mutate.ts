// NumPy .npz mutations for the fuzz harness: .npy header edits (descr, shape, fortran_order,
// version, header length), member edits (drop, rename, duplicate), zip field edits, deflate and
// zip64 rewrites. The archive is rebuilt by a small zip writer, so each edit lands on its own
// and the reader under test (src/io/npz.ts) gets past the layers it should get past.
import { crc32, deflateRawSync } from 'node:zlib';

import { mutateBytes, mutateField, type Field } from './bytes.js';
import type { Rng } from './rng.js';

interface Member {
  name: string;
  data: Buffer;
}

/** Reads the members of a well-formed zip (the committed fixture) through its central directory. */
function readMembers(buf: Buffer): Member[] {
  let eocd = buf.length - 22;
  while (eocd >= 0 && buf.readUInt32LE(eocd) !== 0x06054b50) eocd--;
  if (eocd < 0) throw new Error('no end of central directory');
  const count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  const out: Member[] = [];
  for (let i = 0; i < count; i++) {
    const size = buf.readUInt32LE(p + 20);
    const nameLen = buf.readUInt16LE(p + 28);
    const name = buf.toString('utf8', p + 46, p + 46 + nameLen);
    const local = buf.readUInt32LE(p + 42);
    const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    out.push({ name, data: buf.subarray(start, start + size) });
    p += 46 + nameLen + buf.readUInt16LE(p + 30) + buf.readUInt16LE(p + 32);
  }
  return out;
}

/** Writes a zip of `members` (stored or deflated, optionally with zip64 records) and the offsets of its fields. */
function writeZip(members: Member[], opts: { deflate: boolean; zip64: boolean }): { buf: Buffer; fields: Field[] } {
  const parts: Buffer[] = [];
  const fields: Field[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  const cdFields: Field[] = [];
  for (const m of members) {
    const body = opts.deflate ? deflateRawSync(m.data) : m.data;
    const name = Buffer.from(m.name, 'utf8');
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(opts.zip64 ? 45 : 20, 4);
    local.writeUInt16LE(opts.deflate ? 8 : 0, 8);
    local.writeUInt32LE(crc32(m.data), 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(m.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    fields.push({ at: offset + 8, size: 2, name: `${m.name} local method` }, { at: offset + 26, size: 2, name: `${m.name} local name length` }, { at: offset + 28, size: 2, name: `${m.name} local extra length` });
    const localAt = offset;
    parts.push(local, name, body);
    offset += 30 + name.length + body.length;

    // Central directory entry; with zip64 its sizes and offset move into the extra field.
    const extra = opts.zip64 ? Buffer.alloc(28) : Buffer.alloc(0);
    if (opts.zip64) {
      extra.writeUInt16LE(1, 0);
      extra.writeUInt16LE(24, 2);
      extra.writeBigUInt64LE(BigInt(m.data.length), 4);
      extra.writeBigUInt64LE(BigInt(body.length), 12);
      extra.writeBigUInt64LE(BigInt(localAt), 20);
    }
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE(opts.zip64 ? 45 : 20, 4);
    cd.writeUInt16LE(opts.zip64 ? 45 : 20, 6);
    cd.writeUInt16LE(opts.deflate ? 8 : 0, 10);
    cd.writeUInt32LE(crc32(m.data), 16);
    cd.writeUInt32LE(opts.zip64 ? 0xffffffff : body.length, 20);
    cd.writeUInt32LE(opts.zip64 ? 0xffffffff : m.data.length, 24);
    cd.writeUInt16LE(name.length, 28);
    cd.writeUInt16LE(extra.length, 30);
    cd.writeUInt32LE(opts.zip64 ? 0xffffffff : localAt, 42);
    const rel = central.reduce((a, b) => a + b.length, 0);
    for (const [at, size, what] of [[10, 2, 'method'], [20, 4, 'compressed size'], [24, 4, 'size'], [28, 2, 'name length'], [30, 2, 'extra length'], [32, 2, 'comment length'], [42, 4, 'local offset']] as const)
      cdFields.push({ at: rel + at, size, name: `${m.name} ${what}` });
    if (opts.zip64) {
      const extraAt = rel + 46 + name.length;
      cdFields.push({ at: extraAt + 2, size: 2, name: `${m.name} zip64 extra size` });
      for (const [at, what] of [[4, 'zip64 size'], [12, 'zip64 compressed'], [20, 'zip64 local offset']] as const) cdFields.push({ at: extraAt + at, size: 8, name: `${m.name} ${what}` });
    }
    central.push(cd, name, extra);
  }
  const cdAt = offset;
  for (const f of cdFields) fields.push({ ...f, at: f.at + cdAt });
  const cdBytes = Buffer.concat(central);
  parts.push(cdBytes);
  offset += cdBytes.length;
  if (opts.zip64) {
    const rec = Buffer.alloc(56);
    rec.writeUInt32LE(0x06064b50, 0);
    rec.writeBigUInt64LE(44n, 4);
    rec.writeUInt16LE(45, 12);
    rec.writeUInt16LE(45, 14);
    rec.writeBigUInt64LE(BigInt(members.length), 24);
    rec.writeBigUInt64LE(BigInt(members.length), 32);
    rec.writeBigUInt64LE(BigInt(cdBytes.length), 40);
    rec.writeBigUInt64LE(BigInt(cdAt), 48);
    fields.push({ at: offset + 32, size: 8, name: 'zip64 entry count' }, { at: offset + 48, size: 8, name: 'zip64 directory offset' });
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt(offset), 8);
    loc.writeUInt32LE(1, 16);
    fields.push({ at: offset + 56 + 8, size: 8, name: 'zip64 locator offset' });
    parts.push(rec, loc);
    offset += 76;
  }
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(opts.zip64 ? 0xffff : members.length, 8);
  eocd.writeUInt16LE(opts.zip64 ? 0xffff : members.length, 10);
  eocd.writeUInt32LE(cdBytes.length, 12);
  eocd.writeUInt32LE(opts.zip64 ? 0xffffffff : cdAt, 16);
  for (const [at, size, what] of [[8, 2, 'disk entries'], [10, 2, 'entries'], [12, 4, 'directory size'], [16, 4, 'directory offset'], [20, 2, 'comment length']] as const)
    fields.push({ at: offset + at, size, name: `eocd ${what}` });
  parts.push(eocd);
  return { buf: Buffer.concat(parts), fields };
}

const DESCRS = ['<f4', '<f2', '<f8', '<i4', '>f4', '<f16', '|b1', '<i8', '|u1', 'O', '<U10', '', "<f4', 'x': '"];
const SHAPES = ['()', '(0,)', '(-1,)', '(4294967296,)', '(65536, 65536)', '(1073741824,)', '(1, 2, 3, 4, 5)', '(a,)', '(64,)', '(64, 64)', '(9007199254740993,)', '(2,', ''];

/** Edits one .npy header (its dict text, version byte or length field) and returns the new array bytes. */
function editNpy(rng: Rng, npy: Buffer): { data: Buffer; what: string } {
  const major = npy[6] ?? 1;
  const hdrStart = major === 1 ? 10 : 12;
  const hdrLen = npy.length >= hdrStart ? (major === 1 ? npy.readUInt16LE(8) : npy.readUInt32LE(8)) : 0;
  const header = npy.toString('latin1', hdrStart, hdrStart + hdrLen);
  const body = npy.subarray(hdrStart + hdrLen);
  const rebuild = (text: string, version = major) => {
    const pre = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
    const t = Buffer.from(text, 'latin1');
    const len = Buffer.alloc(version === 1 ? 2 : 4);
    if (version === 1) len.writeUInt16LE(t.length & 0xffff);
    else len.writeUInt32LE(t.length);
    return Buffer.concat([pre, len, t, body]);
  };
  const op = rng.pick(['descr', 'shape', 'fortran', 'drop-key', 'version', 'length', 'garbage', 'body']);
  switch (op) {
    case 'descr': {
      const d = rng.pick(DESCRS);
      return { data: rebuild(header.replace(/'descr':\s*'[^']*'/, `'descr': '${d}'`)), what: `descr ${d}` };
    }
    case 'shape': {
      const s = rng.pick(SHAPES);
      return { data: rebuild(header.replace(/'shape':\s*\([^)]*\)/, `'shape': ${s}`)), what: `shape ${s}` };
    }
    case 'fortran':
      return { data: rebuild(header.replace('False', rng.pick(['True', 'false', '0']))), what: 'fortran_order' };
    case 'drop-key': {
      const key = rng.pick(['descr', 'shape', 'fortran_order']);
      return { data: rebuild(header.replace(new RegExp(`'${key}'`), `'x${key}'`)), what: `drop ${key}` };
    }
    case 'version': {
      const v = rng.pick([0, 2, 3, 255]);
      return { data: rebuild(header, v), what: `version ${v}` };
    }
    case 'length': {
      const out = Buffer.from(npy);
      const r = mutateField(rng, out, [{ at: 8, size: major === 1 ? 2 : 4, name: 'npy header length' }]);
      return { data: r.buf, what: r.what };
    }
    case 'garbage':
      return { data: rebuild(rng.pick(['', '{', 'x'.repeat(70000), "{'descr': '<f4'}", header.replace(/\)/, ''), header + header])), what: 'header text' };
    default: {
      const k = rng.pick([-4, -1, 1, 4]);
      const d = k < 0 ? npy.subarray(0, npy.length + k) : Buffer.concat([npy, Buffer.alloc(k)]);
      return { data: d, what: `array bytes ${k > 0 ? '+' : ''}${k}` };
    }
  }
}

/** One npz-aware mutation of `buf` (a well-formed archive). */
export function mutateNpz(rng: Rng, buf: Buffer): { buf: Buffer; what: string } {
  let members: Member[];
  try {
    members = readMembers(buf);
  } catch {
    return mutateBytes(rng, buf);
  }
  const what: string[] = [];
  const op = rng.weighted<string>([
    ['npy', 5],
    ['member', 2],
    ['field', 3],
    ['bytes', 2],
    ['valid', 1],
  ]);
  if (op === 'npy') {
    const i = rng.int(members.length);
    const r = editNpy(rng, members[i]!.data);
    members[i] = { name: members[i]!.name, data: r.data };
    what.push(`${members[i]!.name} ${r.what}`);
  } else if (op === 'member') {
    const i = rng.int(members.length);
    const m = members[i]!;
    const kind = rng.pick(['drop', 'rename', 'duplicate', 'empty', 'extra']);
    if (kind === 'drop') members.splice(i, 1);
    else if (kind === 'rename') members[i] = { name: rng.pick([m.name.toUpperCase(), m.name.replace('.npy', ''), '../' + m.name, m.name + '.npy', 'W_ENC.npy', '']), data: m.data };
    else if (kind === 'duplicate') members.push({ name: m.name, data: members[rng.int(members.length)]!.data });
    else if (kind === 'empty') members[i] = { name: m.name, data: Buffer.alloc(0) };
    else members.push({ name: rng.pick(['notes.txt', 'extra.npy', 'dir/']), data: Buffer.from('hello') });
    what.push(`member ${kind} ${m.name}`);
  }
  const deflate = rng.chance(op === 'valid' ? 0.7 : 0.2);
  const zip64 = rng.chance(op === 'valid' ? 0.7 : 0.2);
  const z = writeZip(members, { deflate, zip64 });
  if (deflate || zip64) what.push(`${deflate ? 'deflate' : ''}${zip64 ? ' zip64' : ''}`.trim());
  let out = z.buf;
  if (op === 'field') {
    const r = mutateField(rng, out, z.fields);
    out = r.buf;
    what.push(r.what);
  } else if (op === 'bytes') {
    const r = mutateBytes(rng, out);
    out = r.buf;
    what.push(r.what);
  }
  return { buf: out, what: `npz ${what.join(', ') || 'rewritten'}` };
}
