// An extraction output that no longer matches its manifest: `neurotap verify` names each bad
// shard, a resumed `neurotap extract` re-extracts what is wrong (byte-identical to a clean run),
// and corrupt or escaping manifests are refused with coded errors. All through the real CLI.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { fixtureDir, ROOT } from './helpers.js';

const BIN = join(ROOT, 'bin', 'neurotap.js');
const GPT2 = fixtureDir('gpt2');
const tmp = mkdtempSync(join(tmpdir(), 'neurotap-verify-'));
const corpus = join(tmp, 'corpus.txt');
const REF = join(tmp, 'ref');
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(args: string[]): Result {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const extractArgs = (out: string, extra: string[] = []) => ['extract', '--model', GPT2, '--input', corpus, '--hooks', 'blocks.*.hook_resid_post', 'hook_embed', '--seq-len', '16', '--batch-size', '3', '--shard-size', '6', '--out', out, '--quiet', ...extra];

/** sha256 of every file in a directory, by name. */
function digest(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir).sort()) out[f] = createHash('sha256').update(readFileSync(join(dir, f))).digest('hex');
  return out;
}

type Json = Record<string, any>;  // manifest.json as parsed, edited freely by the tests
const readJson = (dir: string): Json => JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
const writeJson = (dir: string, m: Json) => writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');

let copies = 0;
/** A copy of the clean reference output to damage. */
function copyRef(name: string): string {
  const dir = join(tmp, `${name}-${copies++}`);
  cpSync(REF, dir, { recursive: true });
  return dir;
}

/** Every stderr line is the one-line error format: no stack trace. */
function expectErrorLines(stderr: string): string[] {
  const lines = stderr.trimEnd().split('\n');
  for (const l of lines) expect(l).toMatch(/^neurotap: error \[ERR_[A-Z_]+\]: \S/);
  return lines;
}

describe('verify and resume against a damaged output', () => {
  let reference: Record<string, string>;
  let nShards: number;
  beforeAll(() => {
    const words = ['the', 'cat', 'sat', 'on', 'mat', 'and', 'a', 'dog', 'ran', 'far', 'away', 'today'];
    const lines = Array.from({ length: 120 }, (_, i) => Array.from({ length: 5 + (i % 9) }, (_, j) => words[(i * 7 + j * 3) % words.length]).join(' '));
    writeFileSync(corpus, lines.join('\n') + '\n');
    const r = cli(extractArgs(REF));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    reference = digest(REF);
    nShards = readJson(REF).shards.length;
    expect(nShards).toBeGreaterThan(6);
  });

  it('verify passes a clean output with a one-line summary on stdout', () => {
    const r = cli(['verify', REF]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const m = readJson(REF);
    expect(r.stdout).toBe(`${REF}: ${nShards} shards, ${m.totals.sequences} sequences, ${m.totals.tokens} tokens, ${m.totals.bytes} bytes: all match\n`);
  });

  it('flipped bytes inside a shard: verify names it, resume re-extracts it', () => {
    const dir = copyRef('flipped');
    const path = join(dir, 'shard-00003.safetensors');
    const bytes = readFileSync(path);
    const at = bytes.length - 100;  // inside an activation tensor, far from the header
    bytes[at] = bytes[at]! ^ 0xff;
    writeFileSync(path, bytes);
    const v = cli(['verify', dir]);
    expect(v.code).toBe(1);
    expect(v.stdout).toBe('');
    const lines = expectErrorLines(v.stderr);
    expect(lines[0]).toMatch(/^neurotap: error \[ERR_SHARD_CORRUPT\]: shard-00003\.safetensors: sha256 mismatch/);
    expect(lines[1]).toBe(`neurotap: error [ERR_SHARD_CORRUPT]: 1 of ${nShards} shards in ${dir} are missing or corrupt`);
    expect(lines).toHaveLength(2);

    const untouched = [0, 4].map((i) => statSync(join(dir, `shard-0000${i}.safetensors`)));
    const damagedIno = statSync(path).ino;
    const r = cli(extractArgs(dir));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(digest(dir)).toEqual(reference);
    expect(cli(['verify', dir]).code).toBe(0);
    // Only the bad shard was written again; good ones were skipped (same inode and mtime).
    [0, 4].forEach((i, k) => {
      const st = statSync(join(dir, `shard-0000${i}.safetensors`));
      expect([st.ino, st.mtimeMs]).toEqual([untouched[k]!.ino, untouched[k]!.mtimeMs]);
    });
    expect(statSync(path).ino).not.toBe(damagedIno);
  });

  it('a wrong sha256 in the manifest: verify names the shard, resume rewrites it', () => {
    const dir = copyRef('badsha');
    const m = readJson(dir);
    m.shards[2].sha256 = createHash('sha256').update('not this shard').digest('hex');
    writeJson(dir, m);
    const v = cli(['verify', dir]);
    expect(v.code).toBe(1);
    expect(expectErrorLines(v.stderr)[0]).toMatch(/\[ERR_SHARD_CORRUPT\]: shard-00002\.safetensors: sha256 mismatch/);
    // Without --quiet the resume says what it found.
    const r = cli(extractArgs(dir).filter((a) => a !== '--quiet'));
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/shard-00002\.safetensors: sha256 mismatch .*; extracting it again/);
    expect(digest(dir)).toEqual(reference);
  });

  it('a deleted shard (manifest still complete): verify names it missing, resume writes it again', () => {
    const dir = copyRef('deleted');
    rmSync(join(dir, 'shard-00001.safetensors'));
    rmSync(join(dir, `shard-${String(nShards - 1).padStart(5, '0')}.safetensors`));
    const v = cli(['verify', dir]);
    expect(v.code).toBe(1);
    const lines = expectErrorLines(v.stderr);
    expect(lines.slice(0, 2)).toEqual([
      'neurotap: error [ERR_SHARD_CORRUPT]: shard-00001.safetensors: missing',
      `neurotap: error [ERR_SHARD_CORRUPT]: shard-${String(nShards - 1).padStart(5, '0')}.safetensors: missing`,
    ]);
    expect(lines[2]).toMatch(new RegExp(`2 of ${nShards} shards`));
    expect(readJson(dir).complete).toBe(true);
    const r = cli(extractArgs(dir));
    expect(r.code).toBe(0);
    expect(digest(dir)).toEqual(reference);
  });

  it('a shard of the wrong size is rewritten', () => {
    const dir = copyRef('short');
    const path = join(dir, 'shard-00004.safetensors');
    writeFileSync(path, readFileSync(path).subarray(0, 1000));
    expect(cli(['verify', dir]).stderr).toMatch(/shard-00004\.safetensors: size 1000 bytes, manifest says \d+/);
    expect(cli(extractArgs(dir)).code).toBe(0);
    expect(digest(dir)).toEqual(reference);
  });

  it('complete: true on a partial run: resume finishes it', () => {
    const dir = copyRef('partial');
    const m = readJson(dir);
    const keep = 4;
    for (const s of m.shards.slice(keep)) rmSync(join(dir, s.file));
    m.shards = m.shards.slice(0, keep);
    const sequences = m.shards.reduce((a: number, s: Json) => a + s.sequences, 0);
    m.totals = { sequences, tokens: sequences * 16, bytes: m.shards.reduce((a: number, s: Json) => a + s.bytes, 0) };
    m.complete = true;
    writeJson(dir, m);
    // Every listed shard is fine, so verify passes: it checks shards, not the input.
    expect(cli(['verify', dir]).code).toBe(0);
    const r = cli(extractArgs(dir));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(digest(dir)).toEqual(reference);
  });

  it('a shard entry outside the folder is refused by extract, verify and merge, and nothing is read or written there', () => {
    const dir = copyRef('escape');
    const m = readJson(dir);
    const victim = join(tmp, 'victim.bin');
    writeFileSync(victim, 'keep me');
    m.shards[1].file = '../../../../etc/passwd';
    writeJson(dir, m);
    const before = digest(dir);
    const passwd = existsSync('/etc/passwd') ? statSync('/etc/passwd').mtimeMs : null;
    for (const args of [extractArgs(dir), ['verify', dir], ['merge', dir, '--out', join(tmp, 'escape-merged')]]) {
      const r = cli(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(expectErrorLines(r.stderr)).toHaveLength(1);
      expect(r.stderr).toMatch(/\[ERR_MANIFEST_INVALID\]: .*manifest\.json: shard 1 is '\.\.\/\.\.\/\.\.\/\.\.\/etc\/passwd'/);
    }
    expect(digest(dir)).toEqual(before);
    expect(existsSync(join(tmp, 'escape-merged', 'manifest.json'))).toBe(false);
    if (passwd !== null) expect(statSync('/etc/passwd').mtimeMs).toBe(passwd);
    expect(readFileSync(victim, 'utf8')).toBe('keep me');
  });

  it('a corrupt manifest (truncated, garbage, empty) is ERR_MANIFEST_INVALID, and --overwrite replaces it', () => {
    const text = readFileSync(join(REF, 'manifest.json'), 'utf8');
    for (const [name, content] of [['truncated', text.slice(0, text.length >> 1)], ['garbage', '\u0000\u00ffnot json at all'], ['empty', '']] as const) {
      const dir = copyRef(name);
      writeFileSync(join(dir, 'manifest.json'), content);
      for (const args of [extractArgs(dir), ['verify', dir]]) {
        const r = cli(args);
        expect(r.code, `${name}: ${args[0]}`).toBe(1);
        expect(expectErrorLines(r.stderr)).toHaveLength(1);
        expect(r.stderr).toMatch(/\[ERR_MANIFEST_INVALID\]: .*manifest\.json: not valid JSON/);
      }
      expect(cli(extractArgs(dir)).stderr).toMatch(/--overwrite/);
      expect(readFileSync(join(dir, 'manifest.json'), 'utf8')).toBe(content);
      expect(cli(extractArgs(dir, ['--overwrite'])).code).toBe(0);
      expect(digest(dir)).toEqual(reference);
    }
  });

  it('verify follows a merged manifest into its parts and names a bad part shard', () => {
    const parts = [0, 1].map((i) => join(tmp, `vpart${i}`));
    parts.forEach((p, i) => expect(cli(extractArgs(p, ['--shard', `${i}/2`])).code).toBe(0));
    const merged = join(tmp, 'vmerged');
    expect(cli(['merge', ...parts, '--out', merged]).code).toBe(0);
    const ok = cli(['verify', merged]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/all match\n$/);
    const path = join(parts[1]!, 'shard-00000.safetensors');
    const bytes = readFileSync(path);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 1;
    writeFileSync(path, bytes);
    const bad = cli(['verify', merged]);
    expect(bad.code).toBe(1);
    expect(expectErrorLines(bad.stderr)[0]).toMatch(/^neurotap: error \[ERR_SHARD_CORRUPT\]: \.\.\/vpart1\/shard-00000\.safetensors: sha256 mismatch/);
  });

  it('a repaired output still reads from Python with hashlib and numpy alone', (ctx) => {
    if (spawnSync('python3', ['-c', 'import numpy']).status !== 0) {
      console.warn('skipping: python3 with numpy is not available');
      return ctx.skip();
    }
    const dir = copyRef('python');
    rmSync(join(dir, 'shard-00002.safetensors'));
    expect(cli(extractArgs(dir)).code).toBe(0);
    const r = spawnSync('python3', [join(ROOT, 'test', 'read-extract-output.py'), dir], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toMatchObject({ sequences: readJson(REF).totals.sequences, complete: true });
  });
});
