// `steer-train` -> `run --steer` round trip through the CLI (README "CLI"): a file of several
// vectors applied whole (`--steer FILE`), one picked (`HOOK=FILE#TENSOR`, `FILE#TENSOR`), and the
// errors that name both ways. The reference is the library run with the add edit.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { edits, loadModel, loadSteeringSafetensors, readSafetensors, writeSafetensors, type Model } from '../src/index.js';
import { fixtureDir, randomFloats, ROOT } from './helpers.js';

const BIN = join(ROOT, 'bin', 'neurotap.js');
const GPT2 = fixtureDir('gpt2');
const tmp = mkdtempSync(join(tmpdir(), 'neurotap-cli-steer-'));
const TOKENS = [[5, 17, 9, 40, 2]];
const HOOKS = ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post'];

function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `run --steer ...` capturing both steered hooks; the file's tensors by name. */
function steeredRun(name: string, steer: string[]): Map<string, Float32Array> {
  const out = join(tmp, `${name}.safetensors`);
  const r = cli(['run', '--model', GPT2, '--tokens', JSON.stringify(TOKENS), ...steer.flatMap((s) => ['--steer', s]), '--capture', 'blocks.*.hook_resid_post', '--out', out]);
  expect(r.stderr, steer.join(' ')).toBe('');
  expect(r.code).toBe(0);
  return new Map([...readSafetensors(out)].map(([k, t]) => [k, t.data as Float32Array]));
}

describe('neurotap steer-train -> run --steer', () => {
  let model: Model;
  const sv = join(tmp, 'sv.safetensors');
  let vectors: Map<string, Float32Array>;
  /** The library's run with `scale` x each of `hooks`' vectors added at its own hook. */
  const reference = async (hooks: string[], scale: number) => {
    const r = await model.run(TOKENS, { capture: ['blocks.*.hook_resid_post'], hooks: Object.fromEntries(hooks.map((h) => [h, edits.add(vectors.get(h)!, { scale })])) });
    return new Map<string, Float32Array>([['logits', r.logits!.data], ...HOOKS.map((h) => [h, r.cache.get(h).data] as [string, Float32Array])]);
  };
  const expectSame = (got: Map<string, Float32Array>, want: Map<string, Float32Array>) => {
    for (const [k, v] of want) expect(Array.from(got.get(k)!), k).toEqual(Array.from(v));
  };

  beforeAll(async () => {
    model = await loadModel(GPT2, { threads: 2 });
    const pairs = join(tmp, 'pairs.jsonl');
    writeFileSync(pairs, ['{"positive": "What a happy day", "negative": "What a sad day"}', '{"positive": "I love it", "negative": "I hate it"}'].join('\n') + '\n');
    const r = cli(['steer-train', '--model', GPT2, '--pairs', pairs, '--layers', '0,1', '--out', sv]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    vectors = loadSteeringSafetensors(sv).directions;
  });
  afterAll(() => {
    model.dispose();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('steer-train names each tensor by its hook', () => {
    expect([...vectors.keys()]).toEqual(HOOKS);
  });

  it('--steer FILE[:SCALE] adds every tensor at the hook of its name', async () => {
    expectSame(steeredRun('whole', [sv]), await reference(HOOKS, 1));
    expectSame(steeredRun('whole-scaled', [`${sv}:-2.5`]), await reference(HOOKS, -2.5));
  });

  it('--steer FILE#TENSOR and HOOK=FILE#TENSOR pick one tensor', async () => {
    expectSame(steeredRun('one', [`${sv}#${HOOKS[1]}:3`]), await reference([HOOKS[1]!], 3));
    // The layer-0 vector added at layer 0 through HOOK=FILE#TENSOR, plus layer 1's by name: the whole file.
    expectSame(steeredRun('both', [`${HOOKS[0]}=${sv}#${HOOKS[0]}`, `${sv}#${HOOKS[1]}`]), await reference(HOOKS, 1));
    // A tensor at another hook than its name.
    const moved = steeredRun('moved', [`${HOOKS[1]}=${sv}#${HOOKS[0]}:2`]);
    const r = await model.run(TOKENS, { capture: ['blocks.*.hook_resid_post'], hooks: { [HOOKS[1]!]: edits.add(vectors.get(HOOKS[0]!)!, { scale: 2 }) } });
    expect(Array.from(moved.get('logits')!)).toEqual(Array.from(r.logits!.data));
  });

  it('HOOK=FILE with several tensors, a missing #TENSOR and a tensor named for no hook say what to write instead', () => {
    const several = cli(['run', '--model', GPT2, '--tokens', '[[1, 2]]', '--steer', `${HOOKS[0]}=${sv}`]);
    expect(several.code).toBe(1);
    expect(several.stderr).toMatch(/^neurotap: error \[ERR_STEERING_FILE_INVALID\]: .*holds 2 tensors \(blocks\.0\.hook_resid_post, blocks\.1\.hook_resid_post\)/);
    expect(several.stderr).toContain('--steer HOOK=FILE#TENSOR');
    expect(several.stderr).toContain('--steer FILE (no HOOK=)');
    const missing = cli(['run', '--model', GPT2, '--tokens', '[[1, 2]]', '--steer', `${sv}#blocks.7.hook_resid_post`]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/\[ERR_INVALID_INPUT\]: steering file .* holds no tensor 'blocks\.7\.hook_resid_post' \(it holds blocks\.0\.hook_resid_post, blocks\.1\.hook_resid_post\)/);
    const plain = join(tmp, 'plain.safetensors');
    writeSafetensors(plain, { v: { shape: [model.config.dModel], data: randomFloats(model.config.dModel, 3) } });
    const unnamed = cli(['run', '--model', GPT2, '--tokens', '[[1, 2]]', '--steer', plain]);
    expect(unnamed.code).toBe(1);
    expect(unnamed.stderr).toMatch(/\[ERR_UNKNOWN_HOOK\]: steering file .*plain\.safetensors: tensor 'v' is not a hook of this model .*--steer HOOK=.*plain\.safetensors#v/);
    const empty = cli(['run', '--model', GPT2, '--tokens', '[[1, 2]]', '--steer', `${sv}#`]);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/nothing after '#'/);
  });
});
