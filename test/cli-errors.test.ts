// Every CLI failure is one line `neurotap: error [CODE]: message` with exit code 1 (README "CLI"),
// never a Node stack trace: unusable output paths, unreadable inputs, a read-only file system and
// a closed stdout, for every subcommand, run as subprocesses through bin/neurotap.js.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { asCodedError } from '../src/cli/io.js';
import { fixtureDir, ROOT } from './helpers.js';

const BIN = join(ROOT, 'bin', 'neurotap.js');
const GPT2 = fixtureDir('gpt2');
const tmp = mkdtempSync(join(tmpdir(), 'neurotap-clierr-'));
const file = join(tmp, 'a-file');
const dir = join(tmp, 'a-dir');
const corpus = join(tmp, 'corpus.txt');
const pairs = join(tmp, 'pairs.jsonl');

function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  // A bound on time: Node's recursive mkdir never returns for some paths under /proc.
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs `args`, expecting exit 1 and exactly one stderr line `neurotap: error [code]: ...` matching `message`. */
function expectOneLineError(args: string[], code: string, message: RegExp): void {
  const r = cli(args);
  const what = `neurotap ${args.join(' ')}\n${r.stderr}`;
  expect(r.code, what).toBe(1);
  expect(r.stderr, what).not.toMatch(/\n\s+at /);
  expect(r.stderr.split('\n'), what).toHaveLength(2);  // one line and its newline
  expect(r.stderr, what).toMatch(new RegExp(`^neurotap: error \\[${code}\\]: `));
  expect(r.stderr, what).toMatch(message);
}

const extract = (out: string) => ['extract', '--model', GPT2, '--input', corpus, '--hooks', 'hook_embed', '--seq-len', '8', '--out', out, '--quiet'];

beforeAll(() => {
  writeFileSync(file, 'not a directory');
  mkdirSync(dir);
  writeFileSync(corpus, 'the cat sat on the mat and the dog ran far away today\n'.repeat(8));
  writeFileSync(pairs, '{"positive": "happy day", "negative": "sad day"}\n');
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('CLI failures are one coded line', () => {
  it('extract and merge: --out is a file, under a file, or cannot be created', () => {
    expectOneLineError(extract(file), 'ERR_FILE_WRITE', /cannot create directory .*a-file: .*a-file exists and is not a directory/);
    expectOneLineError(extract(join(file, 'sub')), 'ERR_FILE_WRITE', /a-file exists and is not a directory/);
    // /proc refuses new entries: a path that cannot be created, on any Linux, as root or not.
    expectOneLineError(extract('/proc/neurotap-test/out'), 'ERR_FILE_WRITE', /cannot create directory \/proc\/neurotap-test\/out: /);
    const part = join(tmp, 'part');
    expect(cli(extract(part)).code).toBe(0);
    expectOneLineError(['merge', part, '--out', file], 'ERR_FILE_WRITE', /a-file exists and is not a directory/);
    expectOneLineError(['merge', part, '--out', join(file, 'x')], 'ERR_FILE_WRITE', /a-file exists and is not a directory/);
    expectOneLineError(['merge', part, '--out', '/proc/neurotap-test/merged'], 'ERR_FILE_WRITE', /cannot create directory/);
  });

  it('run, generate, steer-train: unusable --out and unreadable input files', () => {
    const run = ['run', '--model', GPT2, '--tokens', '[[1, 2, 3]]'];
    expectOneLineError([...run, '--out', dir], 'ERR_FILE_WRITE', /a-dir: it is a directory/);
    expectOneLineError([...run, '--out', join(file, 'x.safetensors')], 'ERR_FILE_WRITE', /a-file is not a directory/);
    expectOneLineError([...run, '--out', join(tmp, 'nowhere', 'x.safetensors')], 'ERR_FILE_WRITE', /directory .*nowhere does not exist/);
    expectOneLineError([...run, '--out', '/proc/x.safetensors'], 'ERR_FILE_WRITE', /\/proc\/x\.safetensors/);
    expectOneLineError(['run', '--model', GPT2, '--tokens', `@${join(tmp, 'missing.json')}`], 'ERR_FILE_NOT_FOUND', /--tokens file .*missing\.json/);
    expectOneLineError(['run', '--model', GPT2, '--tokens', `@${dir}`], 'ERR_FILE_READ', /--tokens file .*a-dir/);
    expectOneLineError(['generate', '--model', GPT2, '--tokens', `@${join(tmp, 'missing.json')}`, '--max-new-tokens', '2'], 'ERR_FILE_NOT_FOUND', /missing\.json/);
    const train = ['steer-train', '--model', GPT2, '--layers', '0', '--method', 'mean'];
    expectOneLineError([...train, '--pairs', join(tmp, 'missing.jsonl'), '--out', join(tmp, 'v.safetensors')], 'ERR_FILE_NOT_FOUND', /--pairs file/);
    expectOneLineError([...train, '--pairs', dir, '--out', join(tmp, 'v.safetensors')], 'ERR_FILE_READ', /--pairs file/);
    expectOneLineError([...train, '--pairs', pairs, '--out', join(file, 'v.gguf')], 'ERR_FILE_WRITE', /a-file is not a directory/);
    expectOneLineError([...train, '--pairs', pairs, '--out', '/proc/v.gguf'], 'ERR_FILE_WRITE', /\/proc\/v\.gguf/);
  });

  it('tokenize, hooks, verify: a file or nothing where a directory is expected', () => {
    expectOneLineError(['tokenize', '--model', file, '--text', 'hi'], 'ERR_FILE_NOT_FOUND', /config\.json/);
    expectOneLineError(['hooks', '--model', join(file, 'x')], 'ERR_FILE_NOT_FOUND', /config\.json/);
    expectOneLineError(['verify', file], 'ERR_FILE_NOT_FOUND', /holds no manifest\.json/);
    expectOneLineError(['verify', join(tmp, 'nowhere')], 'ERR_FILE_NOT_FOUND', /holds no manifest\.json/);
  });

  describe('on a read-only file system', () => {
    // A read-only tmpfs needs root and mount (skipped with the reason otherwise); /proc above
    // covers a path that cannot be created everywhere.
    const mnt = join(tmp, 'ro');
    let skip: string | null = 'not tried';
    beforeAll(() => {
      mkdirSync(mnt);
      const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', mnt], { encoding: 'utf8' });
      skip = r.status === 0 ? null : `cannot mount a read-only tmpfs: ${(r.stderr || String(r.error)).trim()}`;
      if (skip) console.log(`skipping the read-only file system cases: ${skip}`);
    });
    afterAll(() => {
      if (!skip && spawnSync('umount', [mnt]).status !== 0) spawnSync('umount', ['-l', mnt]);
    });

    it('extract, merge, run and steer-train report EROFS as ERR_FILE_WRITE', (ctx) => {
      if (skip) return ctx.skip();
      expectOneLineError(extract(join(mnt, 'new', 'out')), 'ERR_FILE_WRITE', /cannot create directory .*ro\/new\/out: EROFS/);
      expectOneLineError(['merge', join(tmp, 'part'), '--out', join(mnt, 'merged')], 'ERR_FILE_WRITE', /EROFS/);
      expectOneLineError(['run', '--model', GPT2, '--tokens', '[[1, 2]]', '--out', join(mnt, 'x.safetensors')], 'ERR_FILE_WRITE', /EROFS/);
      expectOneLineError(['steer-train', '--model', GPT2, '--layers', '0', '--pairs', pairs, '--out', join(mnt, 'v.gguf')], 'ERR_FILE_WRITE', /EROFS/);
    });
  });

  it('a reader that closes stdout early ends the command quietly with exit 0', async () => {
    for (const args of [['hooks', '--model', GPT2], ['generate', '--model', GPT2, '--tokens', '[1, 2, 3]', '--max-new-tokens', '40', '--stream']]) {
      const { code, stderr } = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
        child.stdout.destroy();  // closed before the first write: every write gets EPIPE
        let err = '';
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('close', (c) => resolve({ code: c, stderr: err }));
      });
      expect(stderr, args[0]).toBe('');
      expect(code, args[0]).toBe(0);
    }
  });

  it('maps any other exception to a code', () => {
    const mkdirErr = Object.assign(new Error("EACCES: permission denied, mkdir '/x'"), { code: 'EACCES', syscall: 'mkdir', path: '/x' });
    expect(asCodedError(mkdirErr).code).toBe('ERR_FILE_WRITE');
    expect(asCodedError(Object.assign(new Error('ENOSPC'), { code: 'ENOSPC', syscall: 'write' })).code).toBe('ERR_DISK_FULL');
    expect(asCodedError(Object.assign(new Error('ENOENT'), { code: 'ENOENT', syscall: 'open' })).code).toBe('ERR_FILE_NOT_FOUND');
    expect(asCodedError(Object.assign(new Error('EACCES'), { code: 'EACCES', syscall: 'open' })).code).toBe('ERR_FILE_READ');
    const internal = asCodedError(new TypeError('x is not a function'));
    expect(internal.code).toBe('ERR_INTERNAL');
    expect(internal.message).toMatch(/^unexpected TypeError: x is not a function/);
    expect(asCodedError('thrown string').code).toBe('ERR_INTERNAL');
  });
});
