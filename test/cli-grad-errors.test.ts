// `neurotap grad` / `neurotap attribute` refusals (README "CLI"): usage errors exit 2 with the
// usage text, coded errors are one line `neurotap: error [CODE]: message` with exit 1, and the
// output path and metric are checked before the model loads. Run as subprocesses.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { fixtureDir, ROOT } from './helpers.js';

const BIN = join(ROOT, 'bin', 'neurotap.js');
const GPT2 = fixtureDir('gpt2');
const tmp = mkdtempSync(join(tmpdir(), 'neurotap-grad-err-'));
const out = join(tmp, 'g.safetensors');

function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function expectOneLineError(args: string[], code: string, message: RegExp): void {
  const r = cli(args);
  const what = `neurotap ${args.join(' ')}\n${r.stderr}`;
  expect(r.code, what).toBe(1);
  expect(r.stderr.split('\n'), what).toHaveLength(2);
  expect(r.stderr, what).toMatch(new RegExp(`^neurotap: error \\[${code}\\]: `));
  expect(r.stderr, what).toMatch(message);
}

function expectUsage(args: string[], message: RegExp): void {
  const r = cli(args);
  expect(r.code, r.stderr).toBe(2);
  expect(r.stderr).toMatch(message);
  expect(r.stderr).toMatch(/neurotap grad --model DIR/);
}

const grad = (...rest: string[]) => ['grad', '--model', GPT2, '--tokens', '[[1,2,3,4]]', ...rest];

describe('neurotap grad / attribute refusals', () => {
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('--help lists both commands', () => {
    const r = cli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/neurotap grad --model DIR/);
    expect(r.stdout).toMatch(/neurotap attribute --model DIR/);
  });

  it('usage errors: metric syntax, position, missing flags', () => {
    expectUsage(grad('--metric', 'logits:3', '--hooks', 'hook_embed', '--out', out), /--metric must be/);
    expectUsage(grad('--metric', 'logit-diff:3', '--hooks', 'hook_embed', '--out', out), /two token ids/);
    expectUsage(grad('--metric', 'logit:x', '--hooks', 'hook_embed', '--out', out), /not a token id/);
    expectUsage(grad('--metric', 'logit:3', '--position', 'first', '--hooks', 'hook_embed', '--out', out), /--position must be/);
    expectUsage(grad('--metric', 'loss', '--position', '2', '--hooks', 'hook_embed', '--out', out), /takes no token and no --position/);
    expectUsage(grad('--metric', 'logit:3', '--out', out), /--hooks is required/);
    expectUsage(['grad', '--model', GPT2, '--metric', 'logit:3', '--hooks', 'hook_embed', '--out', out], /exactly one of --text and --tokens/);
    expectUsage(['attribute', '--model', GPT2, '--clean-tokens', '[[1,2]]', '--metric', 'loss', '--hooks', 'hook_embed', '--out', out], /exactly one of --corrupted and --corrupted-tokens/);
  });

  it('coded errors: a token outside the vocabulary, a position past the sequence, an unknown hook, an unwritable --out', () => {
    expectOneLineError(grad('--metric', 'logit:100000', '--hooks', 'hook_embed', '--out', out), 'ERR_TOKEN_OUT_OF_RANGE', /outside the vocabulary/);
    expectOneLineError(grad('--metric', 'logit:3', '--position', '4', '--hooks', 'hook_embed', '--out', out), 'ERR_INVALID_INPUT', /past the sequence/);
    expectOneLineError(grad('--metric', 'logit:3', '--hooks', 'blocks.0.hook_resid_pr', '--out', out), 'ERR_UNKNOWN_HOOK', /did you mean/);
    expectOneLineError(grad('--metric', 'logit:3', '--hooks', 'hook_embed', '--out', tmp), 'ERR_FILE_WRITE', /is a directory/);
    // --out is checked before the model loads: a missing model directory is not reached.
    expectOneLineError(['grad', '--model', join(tmp, 'no-model'), '--tokens', '[[1]]', '--metric', 'loss', '--hooks', 'hook_embed', '--out', join(tmp, 'missing', 'x.safetensors')], 'ERR_FILE_WRITE', /does not exist/);
    expectOneLineError(
      ['attribute', '--model', GPT2, '--clean-tokens', '[[1,2,3]]', '--corrupted-tokens', '[[1,2]]', '--metric', 'logit:3', '--hooks', 'hook_embed', '--out', out],
      'ERR_INVALID_INPUT',
      /row 0 has 3 clean tokens but 2 corrupted/,
    );
  });
});
