// Tests for the extraction output (src/extract/dtype.ts, shards.ts, manifest.ts): dtype rounding
// against numpy, shards read back here and from Python, byte-identity, kill -9, merge, full disk.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { NeurotapError } from '../src/errors.js';
import { toBf16, toF16, type OutDtype } from '../src/extract/dtype.js';
import { assertCompatible, cleanTemp, manifestTotals, mergeManifests, readManifest, writeManifest, type Manifest, type ManifestShard } from '../src/extract/manifest.js';
import { ShardWriter, shardFileName, type FinishedShard, type ShardLayout } from '../src/extract/shards.js';
import { f16ToF32, readSafetensors } from '../src/io/safetensors.js';
import { ROOT, randomFloats } from './helpers.js';

const TMP = mkdtempSync(join(tmpdir(), 'neurotap-out-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));
let dirCount = 0;
const freshDir = (name = 'd') => {
  const d = join(TMP, `${name}-${dirCount++}`);
  mkdirSync(d, { recursive: true });
  return d;
};

function python(mods: string): string | null {
  const r = spawnSync('python3', ['-c', `import ${mods}`], { encoding: 'utf8' });
  if (r.error) return 'python3 is not installed';
  return r.status === 0 ? null : `python3 lacks ${mods}: ${r.stderr.trim().split('\n').pop()}`;
}
const NO_NUMPY = python('numpy');
const NO_SAFETENSORS = NO_NUMPY ?? python('safetensors.numpy');
const HAS_TORCH = python('torch') === null;
if (NO_NUMPY) console.log(`skipping numpy comparisons: ${NO_NUMPY}`);
else if (NO_SAFETENSORS) console.log(`skipping safetensors.numpy checks: ${NO_SAFETENSORS}`);
if (!NO_NUMPY && !HAS_TORCH) console.log('torch is not installed: dtype rounding is checked against numpy only');

function runPython(script: string, args: string[]): string {
  const r = spawnSync('python3', ['-c', script, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
  return r.stdout;
}

async function expectCode(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  const err = await p.then(() => null, (e: unknown) => e);
  expect(err, `expected ${code}`).toBeInstanceOf(NeurotapError);
  expect((err as NeurotapError).code).toBe(code);
  if (message) expect((err as Error).message).toMatch(message);
}

const sha = (buf: Uint8Array) => createHash('sha256').update(buf).digest('hex');
const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

describe('toF16 / toBf16', () => {
  // Inputs: every f16 value, every midpoint between neighbours (ties) and one f32 ulp either
  // side, bf16 ties, random bit patterns (NaN payloads, subnormals, huge values) and edges.
  function inputs(): Float32Array {
    const vals: number[] = [];
    const f32 = new Float32Array(1);
    const u32 = new Uint32Array(f32.buffer);
    const nudge = (x: number, d: number) => {
      f32[0] = x;
      u32[0] = u32[0]! + d;
      return f32[0];
    };
    for (let h = 0; h < 0x10000; h++) vals.push(f16ToF32(h));
    for (const sign of [1, -1]) {
      for (let h = 0; h < 0x7bff; h++) {
        const mid = sign * (f16ToF32(h) + f16ToF32(h + 1)) / 2;  // exact in f32
        vals.push(mid, nudge(mid, 1), nudge(mid, -1));
      }
    }
    const edges = [65504, 65519, 65519.99609375, 65520, 65520.00390625, 65536, 3.4028234663852886e38, 2 ** -24, 2 ** -25, 2 ** -25 * 1.5, 2 ** -26, 2 ** -14, 2 ** -14 - 2 ** -25, 1e-45, 1.17549435e-38, 0, -0, Infinity, -Infinity, NaN];
    for (const e of edges) vals.push(e, -e);
    let s = 12345;
    const rand = () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return s;
    };
    const out = new Float32Array(vals.length + 3 * 200_000);
    out.set(vals);
    const bits = new Uint32Array(out.buffer);
    let i = vals.length;
    for (let k = 0; k < 200_000; k++) bits[i++] = rand();                          // any pattern
    for (let k = 0; k < 200_000; k++) bits[i++] = ((rand() & 0xffff0000) | 0x8000) >>> 0;  // bf16 ties
    for (let k = 0; k < 200_000; k++) bits[i++] = (rand() % 0x0e000000 + 0x31800000 + (rand() & 1) * 0x80000000) >>> 0;  // around f16's range
    return out;
  }

  it.skipIf(NO_NUMPY)('matches numpy (and torch when installed) bit for bit, NaN as NaN', () => {
    const x = inputs();
    const dir = freshDir('dtype');
    writeFileSync(join(dir, 'x.bin'), bytesOf(x));
    // bf16 reference in float64: round to 8 significant bits with rint (ties to even); below
    // 2^-126 the quantum stays 2^-133 (bf16 subnormals).
    runPython(`
import sys, numpy as np
d = sys.argv[1]
x = np.fromfile(d + '/x.bin', dtype='<f4')
with np.errstate(all='ignore'):
    x.astype('<f2').view('<u2').tofile(d + '/np_f16.bin')
    v = x.astype(np.float64)
    m, e = np.frexp(v)
    e = np.maximum(e, -125)
    q = np.ldexp(np.rint(np.ldexp(v, 8 - e)), e - 8)
    (q.astype('<f4').view('<u4') >> 16).astype('<u2').tofile(d + '/np_bf16.bin')
try:
    import torch
    t = torch.from_numpy(x.copy())
    t.to(torch.float16).view(torch.int16).numpy().astype('<i2').tofile(d + '/torch_f16.bin')
    t.to(torch.bfloat16).view(torch.int16).numpy().astype('<i2').tofile(d + '/torch_bf16.bin')
except ImportError:
    pass
`, [dir]);
    const ours = { f16: toF16(x), bf16: toBf16(x) };
    const isNan16 = (h: number, kind: 'f16' | 'bf16') => (kind === 'f16' ? (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0 : (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0);
    for (const kind of ['f16', 'bf16'] as const) {
      for (const ref of ['np', 'torch']) {
        const file = join(dir, `${ref}_${kind}.bin`);
        if (!existsSync(file)) continue;
        const raw = readFileSync(file);
        const want = new Uint16Array(raw.buffer, raw.byteOffset, raw.length / 2);
        expect(want.length).toBe(x.length);
        const bad: string[] = [];
        for (let i = 0; i < x.length; i++) {
          const a = ours[kind][i]!;
          const b = want[i]!;
          const ok = Number.isNaN(x[i]!) ? isNan16(a, kind) && isNan16(b, kind) : a === b;
          if (!ok && bad.push(`x=${x[i]} ours 0x${a.toString(16)} ${ref} 0x${b.toString(16)}`) >= 5) break;
        }
        expect(bad, `${kind} vs ${ref}`).toEqual([]);
      }
    }
  });

  it('round-trips every f16 value and keeps the edge cases', () => {
    const all = new Float32Array(0x10000);
    for (let h = 0; h < 0x10000; h++) all[h] = f16ToF32(h);
    const back = toF16(all);
    for (let h = 0; h < 0x10000; h++) {
      const isNan = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (isNan) expect(back[h]! & 0x7e00).toBe(0x7e00);
      else if (back[h] !== h) throw new Error(`f16 0x${h.toString(16)} came back as 0x${back[h]!.toString(16)}`);
    }
    expect([...toF16(new Float32Array([65504, 65519.99609375, 65520, -65520, 2 ** -25, 2 ** -25 * 1.5, 2 ** -24 * 1.5, 2 ** -24 * 2.5]))])
      .toEqual([0x7bff, 0x7bff, 0x7c00, 0xfc00, 0, 1, 2, 2]);
    expect([...toBf16(new Float32Array([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -Infinity, 3.4028234663852886e38, NaN]))])
      .toEqual([0x3f80, 0x3f80, 0x3f82, 0xff80, 0x7f80, 0x7fc0]);
    const out = new Uint16Array(8);
    expect(toBf16(new Float32Array([2]), out)).toBe(out);
    expect(() => toF16(new Float32Array(9), out)).toThrow(RangeError);
  });
});

// A small shard: tokens [nSeq, 4], resid [nSeq, 4, 6], pattern [nSeq, 2, 4, 4].
const SEQ = 4;
const HOOKS = [
  { name: 'blocks.0.hook_resid_post', shapePerSeq: [SEQ, 6] },
  { name: 'blocks.0.attn.hook_pattern', shapePerSeq: [2, SEQ, SEQ] },
];
const rowElems = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Deterministic data for sequences [0, nSeq) of stream `seed`. */
function sampleData(nSeq: number, seed: number): { tokens: Int32Array; acts: Float32Array[] } {
  const tokens = new Int32Array(nSeq * SEQ);
  for (let i = 0; i < tokens.length; i++) tokens[i] = (seed * 7919 + i * 104729) % 50257;
  const acts = HOOKS.map((h, k) => randomFloats(nSeq * rowElems(h.shapePerSeq), seed * 10 + k, 100));
  return { tokens, acts };
}

async function writeShard(dir: string, index: number, outDtype: OutDtype, nSeq: number, seed: number, batches: number[] = [2, 2, 1, 9, 9]): Promise<FinishedShard> {
  const w = new ShardWriter(dir, index, { seqLen: SEQ, hooks: HOOKS, outDtype, nSeq });
  const { tokens, acts } = sampleData(nSeq, seed);
  let at = 0;
  for (const b0 of batches) {
    const b = Math.min(b0, nSeq - at);
    if (b === 0) break;
    await w.append({
      tokens: tokens.slice(at * SEQ, (at + b) * SEQ),
      activations: new Map(HOOKS.map((h, k) => [h.name, acts[k]!.slice(at * rowElems(h.shapePerSeq), (at + b) * rowElems(h.shapePerSeq))])),
    });
    at += b;
  }
  return w.finish();
}

/** What a reader should see for a hook, upcast to float32. */
function expected(values: Float32Array, outDtype: OutDtype): Float32Array {
  if (outDtype === 'f32') return values;
  if (outDtype === 'f16') return Float32Array.from(toF16(values), f16ToF32);
  return new Float32Array(Uint32Array.from(toBf16(values), (h) => h << 16).buffer);
}

describe('ShardWriter', () => {
  for (const outDtype of ['f32', 'f16', 'bf16'] as const) {
    it(`writes a ${outDtype} shard that readSafetensors and Python read back`, async () => {
      const dir = freshDir(outDtype);
      const nSeq = 5;
      const done = await writeShard(dir, 3, outDtype, nSeq, 1);
      expect(done.file).toBe('shard-00003.safetensors');
      expect(readdirSync(dir)).toEqual(['shard-00003.safetensors']);
      const raw = readFileSync(done.path);
      expect(done.bytes).toBe(raw.length);
      expect(done.sha256).toBe(sha(raw));
      expect(Number(raw.readBigUInt64LE(0)) % 8).toBe(0);

      const { tokens, acts } = sampleData(nSeq, 1);
      const read = readSafetensors(done.path);
      expect([...read.keys()]).toEqual(['tokens', ...HOOKS.map((h) => h.name)]);
      expect(read.get('tokens')).toEqual({ dtype: 'I32', shape: [nSeq, SEQ], data: tokens });
      const want = HOOKS.map((_, k) => expected(acts[k]!, outDtype));
      HOOKS.forEach((h, k) => {
        const e = read.get(h.name)!;
        expect(e.dtype).toBe({ f32: 'F32', f16: 'F16', bf16: 'BF16' }[outDtype]);
        expect(e.shape).toEqual([nSeq, ...h.shapePerSeq]);
        expect(e.data).toEqual(want[k]);
      });

      if (NO_NUMPY) return;
      // Plain numpy (header parsed by hand) and safetensors.numpy (torch for BF16, which numpy
      // lacks), each reporting dtype, shape and the sha256 of the values upcast to float32.
      const out = JSON.parse(runPython(`
import sys, json, struct, hashlib, numpy as np
path = sys.argv[1]
def digest(a):
    if a.dtype == np.int32: return hashlib.sha256(a.astype('<i4').tobytes()).hexdigest()
    return hashlib.sha256(a.astype('<f4').tobytes()).hexdigest()
res = {}
with open(path, 'rb') as f: buf = f.read()
n = struct.unpack('<Q', buf[:8])[0]
header = json.loads(buf[8:8 + n])
meta = header.pop('__metadata__')
plain = {}
for name, e in header.items():
    a, b = e['data_offsets']
    raw = np.frombuffer(buf, dtype='<u1', count=b - a, offset=8 + n + a)
    if e['dtype'] == 'BF16': arr = (raw.view('<u2').astype(np.uint32) << 16).view(np.float32)
    else: arr = raw.view({'F32': '<f4', 'F16': '<f2', 'I32': '<i4'}[e['dtype']])
    arr = arr.reshape(e['shape'])
    plain[name] = {'dtype': e['dtype'], 'shape': list(arr.shape), 'sha': digest(arr)}
res['plain'] = plain
res['meta'] = meta
try:
    from safetensors import safe_open
    from safetensors.numpy import load_file
    if 'BF16' not in [e['dtype'] for e in header.values()]:
        res['st'] = {k: {'shape': list(v.shape), 'sha': digest(v)} for k, v in load_file(path).items()}
    else:
        import torch
        with safe_open(path, framework='pt') as f:
            res['st'] = {k: {'shape': list(f.get_tensor(k).shape), 'sha': digest(f.get_tensor(k).float().numpy() if k != 'tokens' else f.get_tensor(k).numpy())} for k in f.keys()}
except ImportError as e:
    res['st_skip'] = str(e)
print(json.dumps(res))
`, [done.path])) as { plain: Record<string, { dtype: string; shape: number[]; sha: string }>; meta: Record<string, string>; st?: Record<string, { shape: number[]; sha: string }>; st_skip?: string };
      expect(out.meta.format).toBe('pt');
      const wantSha: Record<string, string> = { tokens: sha(bytesOf(tokens)) };
      HOOKS.forEach((h, k) => (wantSha[h.name] = sha(bytesOf(want[k]!))));
      for (const [name, s] of Object.entries(wantSha)) {
        expect(out.plain[name]?.sha, `numpy ${name}`).toBe(s);
        expect(out.plain[name]?.shape).toEqual(read.get(name)!.shape);
        if (out.st) {
          expect(out.st[name]?.sha, `safetensors ${name}`).toBe(s);
          expect(out.st[name]?.shape).toEqual(read.get(name)!.shape);
        }
      }
      if (!out.st) console.log(`skipping the safetensors reader for ${outDtype}: ${out.st_skip}`);
    });
  }

  it('gives byte-identical files for identical data, however it is batched', async () => {
    const a = await writeShard(freshDir(), 0, 'bf16', 7, 5, [2, 2, 3]);
    const b = await writeShard(freshDir(), 0, 'bf16', 7, 5, [1, 6]);
    const c = await writeShard(freshDir(), 0, 'bf16', 7, 5, [7]);
    expect(b.sha256).toBe(a.sha256);
    expect(c.sha256).toBe(a.sha256);
    expect(readFileSync(b.path).equals(readFileSync(a.path))).toBe(true);
  });

  it('never shows an unfinished shard under its final name, and refuses bad batches', async () => {
    const dir = freshDir();
    const w = new ShardWriter(dir, 0, { seqLen: SEQ, hooks: HOOKS, outDtype: 'f16', nSeq: 3 });
    const { tokens, acts } = sampleData(1, 2);
    const batch = { tokens, activations: new Map(HOOKS.map((h, k) => [h.name, acts[k]!])) };
    await w.append(batch);
    expect(readdirSync(dir)).toEqual(['shard-00000.safetensors.tmp']);
    await expectCode(w.finish(), 'ERR_INVALID_INPUT', /1 of its 3/);
    await expectCode(w.append({ tokens: new Int32Array(3), activations: batch.activations }), 'ERR_INVALID_INPUT', /multiple of seqLen/);
    await expectCode(w.append({ tokens, activations: new Map([[HOOKS[0]!.name, acts[0]!]]) }), 'ERR_INVALID_INPUT', /missing/);
    await expectCode(w.append({ tokens, activations: new Map([...batch.activations, ['extra', acts[0]!]]) }), 'ERR_INVALID_INPUT', /unexpected activations: extra/);
    await expectCode(w.append({ tokens: new Int32Array(4 * SEQ), activations: batch.activations }), 'ERR_INVALID_INPUT', /exceed/);
    expect(existsSync(join(dir, 'shard-00000.safetensors'))).toBe(false);
    await w.abort();
    expect(readdirSync(dir)).toEqual([]);
    await expectCode(w.append(batch), 'ERR_INVALID_INPUT', /aborted/);
    expect(() => new ShardWriter(dir, 0, { seqLen: SEQ, hooks: [{ name: 'tokens', shapePerSeq: [1] }], outDtype: 'f32', nSeq: 1 })).toThrow(/reserved/);
    expect(() => new ShardWriter(dir, 0, { seqLen: SEQ, hooks: [], outDtype: 'f8' as OutDtype, nSeq: 1 })).toThrow(/outDtype/);
  });

  it('leaves only a .tmp file when killed with SIGKILL mid-shard; a rerun is byte-identical', async () => {
    const dir = freshDir('kill');
    const ref = await writeShard(freshDir(), 0, 'f16', 5, 9, [1, 1, 1, 1, 1]);
    // The child writes the same shard, one sequence per append, and stalls before the last.
    const child = join(dir, '..', 'child.mts');  // .mts: ESM (top-level await) outside the package
    writeFileSync(child, `
import { ShardWriter } from ${JSON.stringify(join(ROOT, 'src/extract/shards.ts'))};
const [dir, data] = process.argv.slice(2);
const { tokens, acts, hooks, seq } = JSON.parse(data);
const w = new ShardWriter(dir, 0, { seqLen: seq, hooks, outDtype: 'f16', nSeq: 5 });
for (let i = 0; i < 4; i++) {
  await w.append({ tokens: Int32Array.from(tokens.slice(i * seq, (i + 1) * seq)),
    activations: new Map(hooks.map((h, k) => { const n = acts[k].length / 5; return [h.name, Float32Array.from(acts[k].slice(i * n, (i + 1) * n))]; })) });
}
console.log('stalled');
setInterval(() => {}, 1000);
`);
    const { tokens, acts } = sampleData(5, 9);
    const data = JSON.stringify({ tokens: [...tokens], acts: acts.map((a) => [...a]), hooks: HOOKS, seq: SEQ });
    const proc = spawn(process.execPath, ['--import', 'tsx', child, dir, data], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((res, rej) => {
      proc.stdout.on('data', (d: Buffer) => d.toString().includes('stalled') && res());
      proc.on('exit', (code) => rej(new Error(`child exited ${code}: ${stderr}`)));
    });
    proc.kill('SIGKILL');
    await new Promise((res) => proc.on('exit', res));
    expect(readdirSync(dir)).toEqual(['shard-00000.safetensors.tmp']);
    expect(await cleanTemp(dir)).toEqual(['shard-00000.safetensors.tmp']);
    expect(readdirSync(dir)).toEqual([]);
    const again = await writeShard(dir, 0, 'f16', 5, 9, [5]);
    expect(again.sha256).toBe(ref.sha256);
  });
});

/** A complete part-run output of `n` shards (3 sequences each), as the extract command writes it. */
async function partRun(dir: string, shard: { index: number; count: number } | null, nShards = 2, overrides: Partial<Manifest['run']> = {}): Promise<Manifest> {
  const shards: ManifestShard[] = [];
  for (let i = 0; i < nShards; i++) {
    const s = await writeShard(dir, i, 'f16', 3, (shard?.index ?? 0) * 100 + i);
    shards.push({ file: s.file, sequences: s.nSeq, bytes: s.bytes, sha256: s.sha256 });
  }
  const m = baseManifest(shard, shards, overrides);
  await writeManifest(dir, m);
  return m;
}

function baseManifest(shard: { index: number; count: number } | null, shards: ManifestShard[] = [], overrides: Partial<Manifest['run']> = {}, complete = true): Manifest {
  return {
    version: 1,
    tool: 'neurotap',
    model: { path: '/models/gpt2', configHash: 'ab'.repeat(32), family: 'gpt2' },
    run: {
      hooks: HOOKS.map((h) => ({ name: h.name, shape: h.shapePerSeq, dtype: 'f16' as const })),
      seqLen: SEQ,
      outDtype: 'f16',
      packing: { pack: true, padLast: false, source: { kind: 'text' } },
      shard,
      batchSize: 2,
      sequencesPerShard: 3,
      ...overrides,
    },
    shards,
    totals: manifestTotals(SEQ, shards),
    complete,
  };
}

describe('manifest', () => {
  it('writes atomically and reads back; refuses malformed manifests', async () => {
    const dir = freshDir();
    expect(await readManifest(dir)).toBeNull();
    const m = await partRun(dir, null, 2);
    expect(readdirSync(dir).sort()).toEqual(['manifest.json', 'shard-00000.safetensors', 'shard-00001.safetensors']);
    expect(await readManifest(dir)).toEqual(m);
    expect(m.totals).toEqual({ sequences: 6, tokens: 6 * SEQ, bytes: m.shards[0]!.bytes + m.shards[1]!.bytes });
    await expectCode(writeManifest(dir, { ...m, totals: { ...m.totals, sequences: 5 } }), 'ERR_MANIFEST_INVALID', /do not add up/);
    expect(await readManifest(dir)).toEqual(m);
    writeFileSync(join(dir, 'manifest.json'), '{"version": 1, ');
    await expectCode(readManifest(dir), 'ERR_MANIFEST_INVALID', /not valid JSON/);
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ ...m, version: 2 }));
    await expectCode(readManifest(dir), 'ERR_MANIFEST_INVALID', /version 2/);
  });

  it('accepts only plain shard-NNNNN names in order, full shards but the last, and merged paths into their parts', async () => {
    const dir = freshDir();
    const m = await partRun(dir, null, 3);
    const withShards = (shards: ManifestShard[], extra: Partial<Manifest> = {}) => ({ ...m, shards, totals: manifestTotals(SEQ, shards), ...extra });
    const rename = (i: number, file: string) => withShards(m.shards.map((s, k) => (k === i ? { ...s, file } : s)));
    const bad: [Manifest, RegExp][] = [
      [rename(1, '../../../../etc/passwd'), /shard 1 is '\.\.\/\.\.\/\.\.\/\.\.\/etc\/passwd'/],
      [rename(0, '/etc/passwd'), /shard 0 is '\/etc\/passwd'/],
      [rename(2, 'sub/shard-00002.safetensors'), /shard 2 is/],
      [rename(1, 'shard-00002.safetensors'), /not shard-00001\.safetensors/],
      [withShards([m.shards[0]!, { ...m.shards[1]!, sequences: 2 }, m.shards[2]!]), /every shard but the last/],
      [withShards([m.shards[0]!, { ...m.shards[1]!, sequences: 4 }]), /at most that many/],
      [withShards([{ ...m.shards[0]!, file: '../other/shard-00000.safetensors' }], { merged: { parts: [{ dir: '../part', shard: { index: 0, count: 1 } }] } }), /not a shard file of one of the merged parts/],
      [withShards([{ ...m.shards[0]!, file: '../part/passwd' }], { merged: { parts: [{ dir: '../part', shard: { index: 0, count: 1 } }] } }), /not a shard file/],
      [withShards([], { merged: { parts: [{ dir: '/abs', shard: { index: 0, count: 1 } }] } }), /bad merged part/],
    ];
    for (const [manifest, why] of bad) {
      writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest));
      await expectCode(readManifest(dir), 'ERR_MANIFEST_INVALID', why);
      await expectCode(writeManifest(dir, manifest), 'ERR_MANIFEST_INVALID', why);
    }
    // A short last shard is fine.
    const shortLast = withShards([m.shards[0]!, { ...m.shards[1]!, sequences: 1 }]);
    await writeManifest(dir, shortLast);
    expect(await readManifest(dir)).toEqual(shortLast);
  });

  it('assertCompatible resumes the same run, refuses another, and replaces it with overwrite', async () => {
    const dir = freshDir();
    const m = await partRun(dir, { index: 1, count: 3 }, 1);
    writeFileSync(join(dir, 'notes.txt'), 'keep me');
    writeFileSync(join(dir, 'shard-00001.safetensors.tmp'), 'partial');
    writeFileSync(join(dir, 'scratch.tmp'), 'not ours');
    const mine = { ...m, shards: [], totals: manifestTotals(SEQ, []), complete: false };
    expect(await assertCompatible(dir, mine, false)).toEqual(m);
    expect(await cleanTemp(dir)).toEqual(['shard-00001.safetensors.tmp']);

    const other = baseManifest({ index: 1, count: 3 }, [], { hooks: [{ name: 'hook_embed', shape: [SEQ, 6], dtype: 'f16' }] }, false);
    await expectCode(assertCompatible(dir, other, false), 'ERR_OUTPUT_EXISTS', /hooks differ.*--overwrite/);
    await expectCode(assertCompatible(dir, { ...mine, run: { ...mine.run, shard: { index: 2, count: 3 } } }, false), 'ERR_OUTPUT_EXISTS', /shard spec differs \(1\/3 vs 2\/3\)/);
    await expectCode(assertCompatible(dir, { ...mine, run: { ...mine.run, packing: { pack: false } } }, false), 'ERR_OUTPUT_EXISTS', /packing policy differs/);
    // Key order in the opaque packing object does not matter.
    expect(await assertCompatible(dir, { ...mine, run: { ...mine.run, packing: { source: { kind: 'text' }, padLast: false, pack: true } } }, false)).toEqual(m);

    expect(await assertCompatible(dir, other, true)).toBeNull();
    expect(readdirSync(dir).sort()).toEqual(['notes.txt', 'scratch.tmp']);
    expect(await assertCompatible(dir, other, false)).toBeNull();

    writeFileSync(join(dir, 'shard-00000.safetensors'), 'orphan');
    await expectCode(assertCompatible(dir, other, false), 'ERR_OUTPUT_EXISTS', /shard files but no manifest/);
    writeFileSync(join(dir, 'manifest.json'), 'garbage');
    await expectCode(assertCompatible(dir, other, false), 'ERR_MANIFEST_INVALID', /not valid JSON.*--overwrite/);
    expect(await assertCompatible(dir, other, true)).toBeNull();
    expect(readdirSync(dir).sort()).toEqual(['notes.txt', 'scratch.tmp']);
    expect(await assertCompatible(join(dir, 'not-yet'), other, true)).toBeNull();
  });

  it('merges three part-runs by reference and refuses mismatched, overlapping or incomplete parts', async () => {
    const root = freshDir('merge');
    const parts = [2, 0, 1].map((i) => join(root, 'machines', `m${i}`));
    const ms: Manifest[] = [];
    for (const [k, d] of parts.entries()) {
      mkdirSync(d, { recursive: true });
      ms.push(await partRun(d, { index: [2, 0, 1][k]!, count: 3 }, k + 1));
    }
    const out = join(root, 'all');
    const merged = await mergeManifests(parts, out);
    expect(await readManifest(out)).toEqual(merged);
    expect(readdirSync(out)).toEqual(['manifest.json']);
    expect(merged.complete).toBe(true);
    expect(merged.run.shard).toBeNull();
    expect(merged.shards.map((s) => s.file)).toEqual([
      '../machines/m0/shard-00000.safetensors', '../machines/m0/shard-00001.safetensors',
      '../machines/m1/shard-00000.safetensors', '../machines/m1/shard-00001.safetensors', '../machines/m1/shard-00002.safetensors',
      '../machines/m2/shard-00000.safetensors',
    ]);
    expect(merged.totals).toEqual({ sequences: 18, tokens: 18 * SEQ, bytes: ms.reduce((a, m) => a + m.totals.bytes, 0) });
    for (const s of merged.shards) expect(sha(readFileSync(join(out, s.file)))).toBe(s.sha256);
    // Idempotent; a different manifest already there needs overwrite.
    await mergeManifests(parts, out);
    await expectCode(mergeManifests(parts.slice(0, 2), out), 'ERR_OUTPUT_EXISTS');
    const partial = await mergeManifests(parts.slice(0, 2), out, { overwrite: true });
    expect(partial.complete).toBe(false);

    if (!NO_NUMPY) {
      // A Python user follows the merged manifest with no neurotap code.
      const n = runPython(`
import sys, json, os, hashlib, struct, numpy as np
d = sys.argv[1]
m = json.load(open(os.path.join(d, 'manifest.json')))
total = 0
for s in m['shards']:
    buf = open(os.path.join(d, s['file']), 'rb').read()
    assert hashlib.sha256(buf).hexdigest() == s['sha256']
    n = struct.unpack('<Q', buf[:8])[0]
    e = json.loads(buf[8:8 + n])['tokens']
    total += np.frombuffer(buf, '<i4', count=e['shape'][0] * e['shape'][1], offset=8 + n + e['data_offsets'][0]).reshape(e['shape']).shape[0]
print(total)
`, [join(root, 'all')]);
      expect(Number(n)).toBe(partial.totals.sequences);
    }

    const odd = join(root, 'odd');
    mkdirSync(odd);
    await partRun(odd, { index: 0, count: 3 }, 1, { hooks: [{ name: 'hook_embed', shape: [SEQ, 6], dtype: 'f16' }] });
    await expectCode(mergeManifests([parts[0]!, odd], join(root, 'x')), 'ERR_MERGE_INVALID', /different runs: hooks differ/);
    const dup = join(root, 'dup');
    mkdirSync(dup);
    await partRun(dup, { index: 2, count: 3 }, 1);
    await expectCode(mergeManifests([parts[0]!, dup, parts[1]!], join(root, 'x')), 'ERR_MERGE_INVALID', /both part 2\/3/);
    const other = join(root, 'count4');
    mkdirSync(other);
    await partRun(other, { index: 3, count: 4 }, 1);
    await expectCode(mergeManifests([parts[0]!, other], join(root, 'x')), 'ERR_MERGE_INVALID', /part 3\/4/);
    const unfinished = join(root, 'unfinished');
    mkdirSync(unfinished);
    await writeManifest(unfinished, baseManifest({ index: 0, count: 3 }, [], {}, false));
    await expectCode(mergeManifests([unfinished, parts[0]!], join(root, 'x')), 'ERR_MERGE_INVALID', /not complete/);
    await expectCode(mergeManifests([parts[0]!, join(root, 'nowhere')], join(root, 'x')), 'ERR_MERGE_INVALID', /no manifest.json/);
    await expectCode(mergeManifests([parts[0]!], parts[0]!), 'ERR_MERGE_INVALID', /also an input/);
    rmSync(join(dup, 'shard-00000.safetensors'));
    await expectCode(mergeManifests([dup], join(root, 'x')), 'ERR_MERGE_INVALID', /missing/);
    expect(existsSync(join(root, 'x', 'manifest.json'))).toBe(false);
  });
});

/** Wraps a real file handle so that writes fail with `code` after `okBytes` bytes. */
function failingOpen(code: string, okBytes: number): (path: string) => Promise<FileHandle> {
  return async (path) => {
    const fh = await open(path, 'w+');
    let budget = okBytes;
    const write = async (buf: Uint8Array, off: number, len: number, pos: number) => {
      if (len > budget) throw Object.assign(new Error(`${code}: injected`), { code });
      budget -= len;
      return fh.write(buf, off, len, pos);
    };
    return new Proxy(fh, {
      get(t, p) {
        if (p === 'write') return write;
        const v = Reflect.get(t, p) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
      },
    });
  };
}

describe('disk full', () => {
  const layout = (nSeq: number): ShardLayout => ({ seqLen: SEQ, hooks: HOOKS, outDtype: 'f32', nSeq });
  async function fill(w: ShardWriter, nSeq: number): Promise<void> {
    const { tokens, acts } = sampleData(nSeq, 3);
    await w.append({ tokens, activations: new Map(HOOKS.map((h, k) => [h.name, acts[k]!])) });
  }

  it('maps an injected ENOSPC to ERR_DISK_FULL and other failures to ERR_FILE_WRITE, removing the temp file', async () => {
    const dir = freshDir();
    const w = new ShardWriter(dir, 0, layout(4), { openFile: failingOpen('ENOSPC', 600) });
    await expectCode(fill(w, 4), 'ERR_DISK_FULL', /no space left.*resumed/);
    expect(readdirSync(dir)).toEqual([]);
    await expectCode(w.finish(), 'ERR_INVALID_INPUT', /failed/);
    const w2 = new ShardWriter(dir, 1, layout(4), { openFile: failingOpen('EIO', 0) });
    await expectCode(fill(w2, 4), 'ERR_FILE_WRITE');
    expect(readdirSync(dir)).toEqual([]);
  });

  // A real full disk: a 1 MiB tmpfs (needs root and mount; skipped with the reason otherwise).
  const mnt = join(tmpdir(), `ntfull-${process.pid}`);
  let mounted: string | null = 'not tried';
  beforeAll(() => {
    mkdirSync(mnt, { recursive: true });
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { encoding: 'utf8' });
    mounted = r.status === 0 ? null : `cannot mount a tmpfs: ${(r.stderr || String(r.error)).trim()}`;
    if (mounted) console.log(`skipping the real full-disk test: ${mounted}`);
  });
  afterAll(() => {
    if (!mounted && spawnSync('umount', [mnt]).status !== 0) spawnSync('umount', ['-l', mnt]);
    rmSync(mnt, { recursive: true, force: true });
  });

  it('on a full tmpfs: ERR_DISK_FULL, no partial shard, earlier shards and manifest intact', async (ctx) => {
    if (mounted) return ctx.skip();
    const small = await writeShard(mnt, 0, 'f32', 3, 4);
    const m = baseManifest(null, [{ file: small.file, sequences: 3, bytes: small.bytes, sha256: small.sha256 }], { outDtype: 'f32' }, false);
    await writeManifest(mnt, m);
    // A sequence of this layout is 240 bytes: 10000 of them (2.4 MB) cannot fit in 1 MiB.
    const big = new ShardWriter(mnt, 1, layout(10_000));
    let err: unknown = null;
    try {
      for (let i = 0; i < 20; i++) await fill(big, 500);
    } catch (e) {
      err = e;
    }
    await big.abort();
    expect((err as NeurotapError | null)?.code).toBe('ERR_DISK_FULL');
    expect(readdirSync(mnt).sort()).toEqual(['manifest.json', 'shard-00000.safetensors']);
    expect(sha(readFileSync(small.path))).toBe(small.sha256);
    expect(await readManifest(mnt)).toEqual(m);
    // Fill what is left, then a manifest update fails cleanly and the old one stays.
    const pad = join(mnt, 'pad.bin');
    spawnSync('dd', ['if=/dev/zero', `of=${pad}`, 'bs=4k', 'count=1000'], { encoding: 'utf8' });
    await expectCode(writeManifest(mnt, { ...m, complete: true }), 'ERR_DISK_FULL');
    expect(await readManifest(mnt)).toEqual(m);
    expect(existsSync(join(mnt, 'manifest.json.tmp'))).toBe(false);
    rmSync(pad);
    expect(shardFileName(1)).toBe('shard-00001.safetensors');
  });
});
