// Extraction input: readDocuments (text, whole-file, JSONL, pre-tokenized, bad input) and
// packWindows / shardFilter / parseShard / describePacking (src/extract/), incl. a 50 MB streaming run.
import { chmodSync, createWriteStream, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { NeurotapError } from '../src/errors.js';
import { describePacking, packWindows, parseShard, shardFilter, type PackingOptions, type Window } from '../src/extract/packing.js';
import { readDocuments, type Document, type SourceSpec } from '../src/extract/sources.js';
import { Tokenizer } from '../src/tokenizer.js';
import { fixtureDir } from './helpers.js';

let dir: string;
let tok: Tokenizer;
const encode = (t: string): number[] => tok.encode(t);

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'neurotap-extract-'));
  tok = Tokenizer.fromDir(fixtureDir('gpt2'))!;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function* fromArray(docs: Document[]): AsyncGenerator<Document> {
  yield* docs;
}

const tokenDocs = (...rows: number[][]): AsyncGenerator<Document> => fromArray(rows.map((tokens, i) => ({ tokens, file: 'mem', line: i + 1 })));

/** Windows as plain arrays (checking index order, size and padding), for readable comparisons. */
async function windows(docs: AsyncIterable<Document>, opts: PackingOptions, enc: ((t: string) => number[]) | null = null): Promise<number[][]> {
  const out: number[][] = [];
  let expected = 0;
  for await (const w of packWindows(docs, enc, opts)) {
    expect(w.index).toBe(expected++);
    expect(w.tokens.length).toBe(opts.seqLen);
    out.push([...w.tokens]);
    if (w.length < opts.seqLen) expect([...w.tokens.subarray(w.length)].every((id) => id === (opts.padId ?? 0))).toBe(true);
  }
  return out;
}

/** Expects `p` to reject with a NeurotapError of `code` whose message contains `text`. */
async function rejects(p: Promise<unknown>, code: string, text?: string): Promise<NeurotapError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(NeurotapError);
  const e = err as NeurotapError;
  expect(e.code).toBe(code);
  if (text !== undefined) expect(e.message).toContain(text);
  return e;
}

describe('readDocuments', () => {
  it('text: a document per non-blank line, files in order, 1-based lines, CRLF and BOM handled', async () => {
    const a = file('a.txt', '\uFEFFfirst line\n\n   \nsecond line\r\nthird\n');
    const b = file('b.txt', 'other file');
    const docs = await collect(readDocuments({ kind: 'text', files: [a, b] }));
    expect(docs).toEqual([
      { text: 'first line', file: a, line: 1 },
      { text: 'second line', file: a, line: 4 },
      { text: 'third', file: a, line: 5 },
      { text: 'other file', file: b, line: 1 },
    ]);
  });

  it('text --whole-file: one document per file with its full content, line 0; blank files skipped', async () => {
    const a = file('w1.txt', 'para one\n\npara two\n');
    const blank = file('w2.txt', ' \n\n');
    const b = file('w3.txt', '\uFEFFlast');
    const docs = await collect(readDocuments({ kind: 'text', files: [a, blank, b], wholeFile: true }));
    expect(docs).toEqual([
      { text: 'para one\n\npara two\n', file: a, line: 0 },
      { text: 'last', file: b, line: 0 },
    ]);
  });

  it('jsonl: the text field of each object; blank lines skipped; other fields ignored', async () => {
    const f = file('d.jsonl', '{"text": "hello", "id": 1}\n\n{"id": 2, "text": ""}\n  \n{"text": "line\\nbreak"}\n');
    const docs = await collect(readDocuments({ kind: 'jsonl', files: [f], textField: 'text' }));
    expect(docs).toEqual([
      { text: 'hello', file: f, line: 1 },
      { text: '', file: f, line: 3 },
      { text: 'line\nbreak', file: f, line: 5 },
    ]);
    const g = file('e.jsonl', '{"body": "x", "text": 5}\n');
    expect(await collect(readDocuments({ kind: 'jsonl', files: [g], textField: 'body' }))).toEqual([{ text: 'x', file: g, line: 1 }]);
  });

  it('tokens: a JSON array of ids per line; blank lines skipped; [] kept as an empty document', async () => {
    const f = file('t.jsonl', '[1, 2, 3]\n\n[]\n[0,2147483647]\n');
    const docs = await collect(readDocuments({ kind: 'tokens', files: [f] }));
    expect(docs).toEqual([
      { tokens: [1, 2, 3], file: f, line: 1 },
      { tokens: [], file: f, line: 3 },
      { tokens: [0, 2147483647], file: f, line: 4 },
    ]);
  });

  it('stops reading (and closes the file) when the consumer stops early', async () => {
    const f = file('many.txt', Array.from({ length: 1000 }, (_, i) => `line ${i}`).join('\n'));
    const fds = (): number => readdirSync('/proc/self/fd').length;
    const before = process.platform === 'linux' ? fds() : 0;
    for (let round = 0; round < 20; round++) {
      for await (const d of readDocuments({ kind: 'text', files: [f] })) if (d.line === 3) break;
    }
    await new Promise((r) => setTimeout(r, 50));
    if (process.platform === 'linux') expect(fds()).toBeLessThanOrEqual(before + 1);
  });
});

describe('bad input', () => {
  const read = (spec: SourceSpec): Promise<Document[]> => collect(readDocuments(spec));

  it('a missing file is ERR_FILE_NOT_FOUND, after the documents of the files before it', async () => {
    const a = file('ok.txt', 'one\ntwo\n');
    const missing = join(dir, 'nope.txt');
    const seen: Document[] = [];
    const run = async (): Promise<void> => {
      for await (const d of readDocuments({ kind: 'text', files: [a, missing] })) seen.push(d);
    };
    const e = await rejects(run(), 'ERR_FILE_NOT_FOUND', missing);
    expect(e.name).toBe('ModelLoadError');
    expect(seen.length).toBe(2);
    await rejects(read({ kind: 'text', files: [missing], wholeFile: true }), 'ERR_FILE_NOT_FOUND', missing);
    await rejects(read({ kind: 'jsonl', files: [missing], textField: 'text' }), 'ERR_FILE_NOT_FOUND');
    await rejects(read({ kind: 'tokens', files: [missing] }), 'ERR_FILE_NOT_FOUND');
  });

  it('an unreadable file is ERR_FILE_READ: a directory, a read error, no permission', async () => {
    const sub = join(dir, 'subdir');
    mkdirSync(sub, { recursive: true });
    await rejects(read({ kind: 'text', files: [sub] }), 'ERR_FILE_READ', sub);
    await rejects(read({ kind: 'text', files: [sub], wholeFile: true }), 'ERR_FILE_READ', sub);
    // /proc/self/mem opens as a regular file but reading offset 0 fails with EIO: a real
    // mid-stream read error.
    if (process.platform === 'linux') await rejects(read({ kind: 'text', files: ['/proc/self/mem'] }), 'ERR_FILE_READ', 'EIO');
    const locked = file('locked.txt', 'secret\n');
    chmodSync(locked, 0o000);
    // root reads anything, so the permission case only means something for other users.
    if (process.getuid?.() !== 0) await rejects(read({ kind: 'text', files: [locked] }), 'ERR_FILE_READ', locked);
  });

  it('malformed JSON is ERR_INVALID_INPUT with file:line', async () => {
    const f = file('bad.jsonl', '{"text": "a"}\n\n{"text": "b"\n');
    const e = await rejects(read({ kind: 'jsonl', files: [f], textField: 'text' }), 'ERR_INVALID_INPUT', `${f}:3`);
    expect(e.name).toBe('InvalidInputError');
    const t = file('bad-tokens.jsonl', '[1,2]\n[3,\n');
    await rejects(read({ kind: 'tokens', files: [t] }), 'ERR_INVALID_INPUT', `${t}:2`);
  });

  it('a JSONL line without a string text field is ERR_INVALID_INPUT with file:line', async () => {
    const cases: [string, string][] = [
      ['{"body": "x"}', 'missing'],
      ['{"text": 3}', 'a number'],
      ['{"text": null}', 'null'],
      ['{"text": ["a"]}', 'an array'],
      ['["text"]', 'object'],
      ['"just a string"', 'object'],
      ['null', 'object'],
    ];
    for (const [i, [line, why]] of cases.entries()) {
      const f = file(`field${i}.jsonl`, `{"text": "ok"}\n${line}\n`);
      await rejects(read({ kind: 'jsonl', files: [f], textField: 'text' }), 'ERR_INVALID_INPUT', `${f}:2`).then((e) => expect(e.message).toContain(why));
    }
  });

  it('a tokens line that is not an array of non-negative integer ids is ERR_INVALID_INPUT with file:line', async () => {
    for (const [i, line] of ['{"tokens": [1]}', '5', '[1, -1]', '[1, 2.5]', '["1"]', '[1, null]', '[[1]]', '[2147483648]', '[1e400]'].entries()) {
      const f = file(`tok${i}.jsonl`, `[0]\n\n${line}\n`);
      await rejects(read({ kind: 'tokens', files: [f] }), 'ERR_INVALID_INPUT', `${f}:3`);
    }
  });

  it('no input files or an empty text field name is ERR_INVALID_INPUT', async () => {
    await rejects(read({ kind: 'text', files: [] }), 'ERR_INVALID_INPUT');
    await rejects(read({ kind: 'jsonl', files: [file('x.jsonl', '{}')], textField: '' }), 'ERR_INVALID_INPUT');
  });
});

describe('packWindows', () => {
  it('pre-tokenized: lines concatenated as given, no separator, cut into windows; trailing window dropped or padded', async () => {
    const docs = (): AsyncGenerator<Document> => tokenDocs([1, 2, 3], [4, 5], [6, 7, 8, 9, 10]);
    expect(await windows(docs(), { seqLen: 4 })).toEqual([
      [1, 2, 3, 4],
      [5, 6, 7, 8],
    ]);
    const out = await collect(packWindows(docs(), null, { seqLen: 4, padLast: true, padId: 99 }));
    expect(out.map((w) => [...w.tokens])).toEqual([
      [1, 2, 3, 4],
      [5, 6, 7, 8],
      [9, 10, 99, 99],
    ]);
    expect(out.map((w) => w.length)).toEqual([4, 4, 2]);
    expect(out.map((w) => w.index)).toEqual([0, 1, 2]);
  });

  it('an exact multiple gives no partial window, padded or not', async () => {
    const docs = (): AsyncGenerator<Document> => tokenDocs([1, 2], [3, 4, 5, 6]);
    const expected = [
      [1, 2, 3],
      [4, 5, 6],
    ];
    expect(await windows(docs(), { seqLen: 3 })).toEqual(expected);
    expect(await windows(docs(), { seqLen: 3, padLast: true })).toEqual(expected);
  });

  it('a document longer than several windows spans them; a stream shorter than one window gives none unless padded', async () => {
    expect(await windows(tokenDocs([1, 2, 3, 4, 5, 6, 7], [8]), { seqLen: 2 })).toEqual([
      [1, 2],
      [3, 4],
      [5, 6],
      [7, 8],
    ]);
    expect(await windows(tokenDocs([1, 2]), { seqLen: 5 })).toEqual([]);
    expect(await windows(tokenDocs([1, 2]), { seqLen: 5, padLast: true })).toEqual([[1, 2, 0, 0, 0]]);
    expect(await windows(tokenDocs(), { seqLen: 5, padLast: true })).toEqual([]);
  });

  it('text with the GPT-2 tokenizer: the concatenation of each document encoded alone, no BOS, no separator', async () => {
    const f = file('tok.txt', 'The cat sat on the mat.\nA second, longer document follows here.\n\nThird.\n');
    const lines = ['The cat sat on the mat.', 'A second, longer document follows here.', 'Third.'];
    const stream = lines.flatMap((l) => tok.encode(l));
    expect(stream.length).toBeGreaterThan(10);
    // GPT-2's tokenizer adds no special tokens, so no BOS appears.
    expect(lines.map((l) => tok.encode(l))).toEqual(lines.map((l) => tok.encode(l, { addSpecialTokens: false })));
    const seqLen = 4;
    const full = Math.floor(stream.length / seqLen);
    const expected = Array.from({ length: full }, (_, i) => stream.slice(i * seqLen, (i + 1) * seqLen));
    expect(await windows(readDocuments({ kind: 'text', files: [f] }), { seqLen }, encode)).toEqual(expected);
    const padded = await collect(packWindows(readDocuments({ kind: 'text', files: [f] }), encode, { seqLen, padLast: true, padId: 383 }));
    const rest = stream.length - full * seqLen;
    expect(padded.length).toBe(rest > 0 ? full + 1 : full);
    if (rest > 0) {
      const last = padded.at(-1)!;
      expect(last.length).toBe(rest);
      expect([...last.tokens]).toEqual([...stream.slice(full * seqLen), ...Array<number>(seqLen - rest).fill(383)]);
    }
  });

  it('JSONL text goes through the same tokenizer; empty texts contribute nothing', async () => {
    const f = file('tok.jsonl', '{"text": "Hello world"}\n{"text": ""}\n{"text": " and more text"}\n');
    const stream = [...tok.encode('Hello world'), ...tok.encode(' and more text')];
    const out = await collect(packWindows(readDocuments({ kind: 'jsonl', files: [f], textField: 'text' }), encode, { seqLen: 64, padLast: true }));
    expect(out.length).toBe(1);
    expect([...out[0]!.tokens.subarray(0, out[0]!.length)]).toEqual(stream);
  });

  it('a tokenizer that adds BOS marks every document start (the only boundary marker)', async () => {
    const bosEncode = (t: string): number[] => [1, ...[...t].map((c) => c.charCodeAt(0))];
    const docs = fromArray([
      { text: 'ab', file: 'mem', line: 1 },
      { text: '', file: 'mem', line: 2 },
      { text: 'cde', file: 'mem', line: 3 },
    ]);
    expect(await windows(docs, { seqLen: 3, padLast: true }, bosEncode)).toEqual([
      [1, 97, 98],
      [1, 99, 100],
      [101, 0, 0],
    ]);
  });

  it('pack: false gives one window per document, truncated or right-padded; empty documents skipped', async () => {
    const out = await collect(packWindows(tokenDocs([1, 2, 3, 4, 5], [], [6], [7, 8, 9]), null, { seqLen: 3, pack: false, padId: 50 }));
    expect(out.map((w) => [...w.tokens])).toEqual([
      [1, 2, 3],
      [6, 50, 50],
      [7, 8, 9],
    ]);
    expect(out.map((w) => w.length)).toEqual([3, 1, 3]);
    expect(out.map((w) => w.index)).toEqual([0, 1, 2]);
    // padLast changes nothing without packing.
    const again = await collect(packWindows(tokenDocs([1, 2, 3, 4, 5], [], [6], [7, 8, 9]), null, { seqLen: 3, pack: false, padId: 50, padLast: true }));
    expect(again).toEqual(out);
  });

  it('pack: false with the GPT-2 tokenizer truncates each line to seqLen', async () => {
    const f = file('nopack.txt', 'A fairly long line of text that has many tokens in it.\nShort.\n');
    const out = await collect(packWindows(readDocuments({ kind: 'text', files: [f] }), encode, { seqLen: 5, pack: false }));
    const long = tok.encode('A fairly long line of text that has many tokens in it.');
    const short = tok.encode('Short.');
    expect(out.map((w) => [...w.tokens.subarray(0, w.length)])).toEqual([long.slice(0, 5), short]);
  });

  it('every window owns its buffer', async () => {
    const out = await collect(packWindows(tokenDocs([1, 2, 3, 4, 5, 6]), null, { seqLen: 2 }));
    expect(new Set(out.map((w) => w.tokens.buffer)).size).toBe(3);
  });

  it('text without a tokenizer is ERR_NO_TOKENIZER; bad options are ERR_INVALID_INPUT', async () => {
    await rejects(collect(packWindows(fromArray([{ text: 'hi', file: 'f.txt', line: 7 }]), null, { seqLen: 4 })), 'ERR_NO_TOKENIZER', 'f.txt:7');
    for (const opts of [{ seqLen: 0 }, { seqLen: 1.5 }, { seqLen: NaN }, { seqLen: 4, padId: -1 }, { seqLen: 4, padId: 0.5 }]) {
      await rejects(collect(packWindows(tokenDocs([1]), null, opts)), 'ERR_INVALID_INPUT');
    }
  });
});

describe('sharding', () => {
  it('N=3 shards are disjoint, each keeps index % 3, and together give every window once', async () => {
    const rows = Array.from({ length: 23 }, (_, i) => Array.from({ length: (i % 5) + 1 }, (_, j) => i * 10 + j));
    const all = await collect(packWindows(tokenDocs(...rows), null, { seqLen: 4 }));
    expect(all.length).toBeGreaterThan(9);
    const shards: Window[][] = [];
    for (let s = 0; s < 3; s++) shards.push(await collect(shardFilter(packWindows(tokenDocs(...rows), null, { seqLen: 4 }), { index: s, count: 3 })));
    shards.forEach((ws, s) => expect(ws.every((w) => w.index % 3 === s)).toBe(true));
    const union = shards.flat().sort((a, b) => a.index - b.index);
    expect(union.map((w) => w.index)).toEqual(all.map((w) => w.index));
    expect(union.map((w) => [...w.tokens])).toEqual(all.map((w) => [...w.tokens]));
    // Deterministic: a second run of one shard gives the same windows.
    const again = await collect(shardFilter(packWindows(tokenDocs(...rows), null, { seqLen: 4 }), { index: 1, count: 3 }));
    expect(again.map((w) => [...w.tokens])).toEqual(shards[1]!.map((w) => [...w.tokens]));
  });

  it('shard 0/1 keeps everything; an invalid shard object is ERR_INVALID_INPUT', async () => {
    const all = await collect(shardFilter(packWindows(tokenDocs([1, 2, 3, 4]), null, { seqLen: 1 }), { index: 0, count: 1 }));
    expect(all.length).toBe(4);
    await rejects(collect(shardFilter(fromArray([]) as AsyncIterable<never>, { index: 3, count: 3 })), 'ERR_INVALID_INPUT');
  });

  it('parseShard reads I/N and refuses anything else', () => {
    expect(parseShard('0/1')).toEqual({ index: 0, count: 1 });
    expect(parseShard('2/3')).toEqual({ index: 2, count: 3 });
    expect(parseShard('07/10')).toEqual({ index: 7, count: 10 });
    for (const bad of ['', '1', '3/3', '4/3', '-1/3', '0/0', '1/-2', '1/2/3', ' 0/2', '0/2 ', 'a/b', '0.5/2', '1e1/20', '0/', '/2', '99999999999999999999/999999999999999999999']) {
      let err: unknown;
      try {
        parseShard(bad);
      } catch (e) {
        err = e;
      }
      expect(err, bad).toBeInstanceOf(NeurotapError);
      expect((err as NeurotapError).code).toBe('ERR_INVALID_INPUT');
      expect((err as NeurotapError).message).toContain(`"${bad}"`);
    }
  });
});

describe('describePacking', () => {
  it('is JSON-able and records the policy and each input file with its size and mtime', () => {
    const a = file('m1.txt', 'abc\n');
    const b = file('m2.txt', 'hello world\n');
    const d = describePacking({ seqLen: 128 }, { kind: 'text', files: [a, b] });
    expect(JSON.parse(JSON.stringify(d))).toEqual(d);
    expect(d).toMatchObject({ policy: 'packed', seqLen: 128, pack: true, padLast: false, padId: 0, separator: 'none' });
    expect(d.input).toEqual({
      kind: 'text',
      wholeFile: false,
      files: [
        { path: a, bytes: 4, mtime: statSync(a).mtime.toISOString() },
        { path: b, bytes: 12, mtime: statSync(b).mtime.toISOString() },
      ],
    });
    const j = describePacking({ seqLen: 8, pack: false, padId: 5 }, { kind: 'jsonl', files: [a], textField: 'body' });
    expect(j).toMatchObject({ policy: 'per-document', pack: false, padId: 5, input: { kind: 'jsonl', textField: 'body' } });
    expect(describePacking({ seqLen: 8 }, { kind: 'tokens', files: [a] })).toMatchObject({ bos: 'as given', input: { kind: 'tokens' } });
  });

  it('a missing file is ERR_FILE_NOT_FOUND; bad options ERR_INVALID_INPUT', () => {
    expect(() => describePacking({ seqLen: 8 }, { kind: 'tokens', files: [join(dir, 'gone.jsonl')] })).toThrow(expect.objectContaining({ code: 'ERR_FILE_NOT_FOUND' }));
    expect(() => describePacking({ seqLen: 0 }, { kind: 'tokens', files: [] })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_INPUT' }));
  });
});

describe('streaming', () => {
  it('a ~50 MB text file is read with bounded heap', async () => {
    const big = join(dir, 'big.txt');
    const line = 'The quick brown fox jumps over the lazy dog, again and again and again. ';
    const lineCount = 700_000; // 72 chars + newline each: ~51 MB
    await new Promise<void>((resolve, reject) => {
      const out = createWriteStream(big);
      out.on('error', reject);
      out.on('finish', resolve);
      let i = 0;
      const write = (): void => {
        while (i < lineCount) {
          i++;
          if (!out.write(i % 100 === 0 ? '\n' : `${line}\n`)) {
            out.once('drain', write);
            return;
          }
        }
        out.end();
      };
      write();
    });
    try {
      expect(statSync(big).size).toBeGreaterThan(50_000_000);
      const charCodes = (t: string): number[] => Array.from(t, (c) => c.charCodeAt(0));
      const seqLen = 1000;
      const baseline = process.memoryUsage().heapUsed;
      let peak = 0;
      let count = 0;
      for await (const w of packWindows(readDocuments({ kind: 'text', files: [big] }), charCodes, { seqLen })) {
        count++;
        if (w.index % 500 === 0) peak = Math.max(peak, process.memoryUsage().heapUsed - baseline);
      }
      const docs = lineCount - lineCount / 100; // every 100th line is blank
      expect(count).toBe(Math.floor((docs * line.length) / seqLen));
      // Holding the file would take > 50 MB of heap, its ids far more (whole-file mode peaks
      // near 750 MB here); streaming holds a read buffer, one line and one window (~10-15 MB
      // measured, most of it garbage not yet collected).
      expect(peak).toBeLessThan(48 * 1024 * 1024);
    } finally {
      rmSync(big, { force: true });
    }
  });
});
