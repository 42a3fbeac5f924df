// The CLI's help, version, typo suggestions and usage errors (README "CLI"), all from the command
// table (src/cli/commands.ts): run as subprocesses through bin/neurotap.js, and the parser in process.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { parseArgs, UsageError } from '../src/cli/args.js';
import { COMMANDS, findCommand } from '../src/cli/commands.js';
import { closest, editDistance } from '../src/cli/suggest.js';
import { ROOT } from './helpers.js';

const BIN = join(ROOT, 'bin', 'neurotap.js');
const NO_MODEL = join(ROOT, 'test', 'no-such-model');

function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 30_000, killSignal: 'SIGKILL' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exit 2 with `message` on the first stderr line and the usage after it. */
function expectUsageError(args: string[], message: RegExp): void {
  const r = cli(args);
  const what = `neurotap ${args.join(' ')}\n${r.stderr}`;
  expect(r.code, what).toBe(2);
  expect(r.stdout, what).toBe('');
  expect(r.stderr.split('\n')[0], what).toMatch(message);
  expect(r.stderr, what).toMatch(/^usage:$/m);
}

describe('neurotap help and version', () => {
  it('--help lists every command with its usage, the choices of flags that have them, and exits 0', () => {
    const r = cli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    for (const c of COMMANDS) {
      expect(r.stdout).toMatch(new RegExp(`^  neurotap ${c.name}\\b`, 'm'));
      expect(r.stdout).toMatch(new RegExp(`^  ${c.name} +${c.summary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    }
    const dtype = findCommand('run')!.flags.find((f) => f.name === 'dtype')!;
    const device = findCommand('run')!.flags.find((f) => f.name === 'device')!;
    expect(r.stdout).toContain(`[--dtype ${dtype.choices!.join('|')}]`);
    expect(r.stdout).toContain(`[--device ${device.choices!.join('|')}]`);
    expect(r.stdout).not.toMatch(/\[--dtype f32\]|\[--device cpu\]/);
  });

  it('CMD --help, CMD -h and help CMD print one line per flag of CMD on stdout, exit 0', () => {
    for (const c of COMMANDS) {
      const r = cli([c.name, '--help']);
      expect(r.code, c.name).toBe(0);
      expect(r.stderr, c.name).toBe('');
      expect(r.stdout, c.name).toMatch(new RegExp(`^usage: neurotap ${c.name}\\b`));
      const flagLines = r.stdout.split('\n').filter((l) => /^ {2}--/.test(l));
      expect(flagLines.map((l) => l.trim().split(/[ ,]/)[0]), c.name).toEqual([...c.flags.map((f) => `--${f.name}`), '--help']);
      for (const f of c.flags) {
        const line = r.stdout.slice(r.stdout.indexOf(`\n  --${f.name}`) + 1).split('\n').slice(0, 2).join(' ');
        if (f.choices) expect(line, `${c.name} --${f.name}`).toContain(f.choices.join('|'));
        if (f.default !== undefined) expect(line, `${c.name} --${f.name}`).toContain(`default ${f.default}`);
        if (f.required) expect(line, `${c.name} --${f.name}`).toContain('required');
      }
      expect(cli([c.name, '-h']).stdout, c.name).toBe(r.stdout);
      expect(cli(['help', c.name]).stdout, c.name).toBe(r.stdout);
    }
    // --help wins over everything else on the line, even a missing model or bad values.
    const r = cli(['run', '--model', NO_MODEL, '--threads', 'abc', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: neurotap run/);
  });

  it('--version prints the version in package.json', () => {
    const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = cli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${version}\n`);
  });
});

describe('neurotap usage errors', () => {
  it('an unknown command or flag exits 2 and suggests the closest', () => {
    expectUsageError(['genrate'], /^neurotap: unknown command 'genrate'; did you mean 'generate'\?$/);
    expectUsageError(['steer_train'], /did you mean 'steer-train'\?/);
    expectUsageError(['frobnicate'], /^neurotap: unknown command 'frobnicate'$/);
    expectUsageError(['--verison'], /did you mean --version\?/);
    expectUsageError(['help', 'extrat'], /did you mean 'extract'\?/);
    expectUsageError(['run', '--modle', NO_MODEL], /^neurotap: unknown option --modle for run; did you mean --model\?$/);
    expectUsageError(['extract', '--seqlen', '8'], /did you mean --seq-len\?/);
    expectUsageError(['extract', '--max-new-tokens', '8'], /--max-new-tokens for extract \(it is a flag of generate\)/);
    expectUsageError(['hooks', '--model', NO_MODEL, '--zzzzzz'], /^neurotap: unknown option --zzzzzz for hooks$/);
    expectUsageError(['run', '--model', NO_MODEL, '--text', 'a', '--capture', 'x', 'y'], /unexpected argument 'y' .*--capture takes one value, give it again for each/);
  });

  it('every bad flag value exits 2 before the model loads, quoting the value', () => {
    const cases: [string[], RegExp][] = [
      [['run', '--model', NO_MODEL, '--text', 'a', '--threads', 'abc'], /--threads must be an integer >= 1, got 'abc'/],
      [['run', '--model', NO_MODEL, '--text', 'a', '--threads', '0'], /--threads must be an integer >= 1, got '0'/],
      [['run', '--model', NO_MODEL, '--text', 'a', '--dtype', 'f64'], /--dtype must be one of f32, f16, bf16, got 'f64'/],
      [['hooks', '--model', NO_MODEL, '--device', 'gpu'], /--device must be one of cpu, cuda, auto, got 'gpu'/],
      [['run', '--model', NO_MODEL, '--tokens', '[1, 2'], /--tokens is not valid JSON \(got '\[1, 2'\)/],
      [['run', '--model', NO_MODEL, '--tokens', '{"a": 1}'], /--tokens must be a JSON array .*got '\{"a": 1\}'/],
      [['generate', '--model', NO_MODEL, '--text', 'a', '--max-new-tokens', '1.5'], /--max-new-tokens must be an integer >= 1, got '1\.5'/],
      [['generate', '--model', NO_MODEL, '--text', 'a', '--max-new-tokens', '2', '--top-p', '0'], /--top-p must be a number in \(0, 1\], got '0'/],
      [['generate', '--model', NO_MODEL, '--text', 'a', '--max-new-tokens', '2', '--temperature', '-1'], /--temperature must be a number >= 0, got '-1'/],
      [['generate', '--model', NO_MODEL, '--text', 'a', '--max-new-tokens', '2', '--stop-token', 'eos'], /--stop-token must be an integer, got 'eos'/],
      [['steer-train', '--model', NO_MODEL, '--pairs', 'p.jsonl', '--layers', '0', '--method', 'median', '--out', 'v.gguf'], /--method must be one of mean, pca, got 'median'/],
      [['steer-train', '--model', NO_MODEL, '--pairs', 'p.jsonl', '--layers', 'a-b', '--out', 'v.gguf'], /--layers expects A-B, A,B,C or A, got 'a-b'/],
      [['steer-train', '--model', NO_MODEL, '--pairs', 'p.jsonl', '--layers', '0', '--out', 'v.bin'], /--out must end in \.safetensors or \.gguf, got 'v\.bin'/],
      [['extract', '--model', NO_MODEL, '--input', 'c.txt', '--hooks', 'hook_embed', '--seq-len', 'x', '--out', 'o'], /--seq-len must be an integer >= 1, got 'x'/],
      [['extract', '--model', NO_MODEL, '--input', 'c.txt', '--hooks', 'hook_embed', '--seq-len', '8', '--out', 'o', '--out-dtype', 'f8'], /--out-dtype must be one of f32, f16, bf16, got 'f8'/],
      [['extract', '--model', NO_MODEL, '--input', 'c.txt', '--hooks', 'hook_embed', '--seq-len', '8', '--out', 'o', '--shard', '3/2'], /--shard expects I\/N .*got '3\/2'/],
      [['extract', '--model', NO_MODEL, '--input', 'c.txt', '--hooks', 'hook_embed', '--seq-len', '8', '--out', 'o', '--max-memory', 'lots'], /--max-memory expects a size .*got 'lots'/],
      [['grad', '--model', NO_MODEL, '--text', 'a', '--metric', 'logit:x', '--hooks', 'hook_embed', '--out', 'g.safetensors'], /'x' is not a token id/],
      [['run', '--model', NO_MODEL, '--text', 'a', '--steer', 'no-equals-sign'], /--steer expects HOOK=FILE.*got 'no-equals-sign'/],
      [['build-cuda', '--arch', 'sm_90'], /--arch takes compute capabilities like 90,80, got 'sm_90'/],
      [['run', '--model', NO_MODEL, '--text', 'a', '--sae', 'sae-dir', '--feature-clamp', 'x=1'], /--feature-clamp expects FEATURE=NUMBER, got 'x=1'/],
      [['generate', '--model', NO_MODEL, '--text', 'a', '--max-new-tokens', '2', '--feature-zero', '3'], /need --sae DIR/],
      [['run', '--model', NO_MODEL, '--text', 'a', '--control-vector', 'v.gguf:1e999'], /--control-vector: scale '1e999' is not a finite number/],
    ];
    for (const [args, message] of cases) expectUsageError(args, message);
  });

  it('a missing required flag, a repeated single flag and a value given to a switch are usage errors', () => {
    expectUsageError(['hooks'], /^neurotap: --model is required$/);
    expectUsageError(['tokenize', '--model', NO_MODEL, '--text', 'a', '--text', 'b'], /^neurotap: --text given more than once$/);
    expectUsageError(['extract', '--quiet=yes'], /^neurotap: --quiet takes no value, got 'yes'$/);
    expectUsageError(['run', '--model'], /^neurotap: --model needs a value$/);
  });
});

describe('the parser', () => {
  const extract = findCommand('extract')!;
  const run = findCommand('run')!;

  it('takes --flag value, --flag=value, multi flags up to the next flag, and values that start with a dash', () => {
    const a = parseArgs(['--model', 'm', '--input', 'a.txt', 'b.txt', '--hooks=h1', 'h2', '--hooks', 'h3', '--seq-len', '8', '--out', 'o', '--quiet'], extract);
    expect(a.flags.get('input')).toEqual(['a.txt', 'b.txt']);
    expect(a.flags.get('hooks')).toEqual(['h1', 'h2', 'h3']);
    expect(a.flags.get('quiet')).toEqual(['true']);
    const b = parseArgs(['--model', 'm', '--text', '-starts with a dash', '--capture', 'x', '--capture', 'y'], run);
    expect(b.flags.get('text')).toEqual(['-starts with a dash']);
    expect(b.flags.get('capture')).toEqual(['x', 'y']);
    const m = parseArgs(['p1', 'p2', '--out', 'd'], findCommand('merge')!);
    expect(m.positional).toEqual(['p1', 'p2']);
  });

  it('throws UsageError naming the command', () => {
    let err: unknown;
    try {
      parseArgs(['--model', 'm', '--seq-len', '0'], extract);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsageError);
    expect((err as UsageError).code).toBe('ERR_USAGE');
    expect((err as UsageError).command).toBe(extract);
  });

  it('suggests by edit distance, counting a swap of neighbours as one edit', () => {
    expect(editDistance('modle', 'model')).toBe(1);
    expect(editDistance('kitten', 'sitting')).toBe(3);
    expect(closest('genrate', COMMANDS.map((c) => c.name))).toBe('generate');
    expect(closest('xyz', COMMANDS.map((c) => c.name))).toBeUndefined();
  });
});
