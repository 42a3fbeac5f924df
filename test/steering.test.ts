// Steering end to end: training from contrastive pairs, steering files applied from the API
// and the CLI (--steer, --control-vector, generate, steer-train), and bad steering input.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  edits,
  firstPrincipalComponent,
  loadControlVector,
  loadModel,
  loadSteeringSafetensors,
  meanDifference,
  readSafetensors,
  saveControlVector,
  steeringHooks,
  trainSteeringVector,
  writeSafetensors,
  type Model,
} from '../src/index.js';
import { fixtureDir, randomFloats, ROOT } from './helpers.js';

const BIN = join(ROOT, 'bin', 'neurotap.js');
const GPT2 = fixtureDir('gpt2');
const tmp = mkdtempSync(join(tmpdir(), 'neurotap-steer-'));

function cli(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const pairs = [
  { positive: 'I love this, it is wonderful', negative: 'I hate this, it is awful' },
  { positive: 'What a happy day', negative: 'What a sad day' },
  { positive: 'The best thing ever', negative: 'The worst thing ever' },
];

describe('steering', () => {
  let model: Model<'gpt2'>;
  beforeAll(async () => {
    model = await loadModel(GPT2, { threads: 2, family: 'gpt2' });
  });
  afterAll(() => {
    model.dispose();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('trains mean-difference and PCA vectors from last-token residuals', async () => {
    const layers = [0, 1];
    const mean = await trainSteeringVector(model, pairs, { layers, method: 'mean' });
    const pca = await trainSteeringVector(model, pairs, { layers, method: 'pca' });
    const d = model.config.dModel;
    for (const l of layers) {
      const hook = `blocks.${l}.hook_resid_post` as const;
      const diffs: Float32Array[] = [];
      for (const p of pairs) {
        const last = async (text: string) => {
          const r = await model.run(text, { capture: [hook] });
          const T = r.tokens[0]!.length;
          return r.cache.get(hook).data.slice((T - 1) * d, T * d);
        };
        const a = await last(p.positive);
        const b = await last(p.negative);
        diffs.push(a.map((x, i) => x - b[i]!));
      }
      expect(Array.from(mean.directions.get(hook)!)).toEqual(Array.from(meanDifference(diffs)));
      expect(Array.from(pca.directions.get(hook)!)).toEqual(Array.from(firstPrincipalComponent(diffs)));
      expect(Math.hypot(...pca.directions.get(hook)!)).toBeCloseTo(1, 5);
    }
    expect(mean.metadata.method).toBe('mean');
  });

  it('run --steer HOOK=FILE:SCALE equals the add edit; --control-vector equals steeringHooks', async () => {
    const d = model.config.dModel;
    const v = randomFloats(d, 99);
    const vfile = join(tmp, 'v.safetensors');
    writeSafetensors(vfile, { anything: { shape: [d], data: v } });
    const out = join(tmp, 'steered.safetensors');
    const r = cli(['run', '--model', GPT2, '--tokens', '[[1,2,3,4]]', '--steer', `blocks.1.hook_resid_pre=${vfile}:2.5`, '--out', out]);
    expect(r.stderr).toBe('');
    const api = await model.run([[1, 2, 3, 4]], { hooks: { 'blocks.1.hook_resid_pre': edits.add(v, { scale: 2.5 }) } });
    expect(Array.from(readSafetensors(out).get('logits')!.data as Float32Array)).toEqual(Array.from(api.logits!.data));

    const sv = { directions: new Map([['blocks.0.hook_resid_post', randomFloats(d, 1)], ['blocks.1.hook_resid_post', randomFloats(d, 2)]]), metadata: {} };
    const gguf = join(tmp, 'cv.gguf');
    saveControlVector(gguf, sv, { modelHint: 'gpt2' });
    const out2 = join(tmp, 'cv-out.safetensors');
    expect(cli(['run', '--model', GPT2, '--tokens', '[[5,6,7]]', '--control-vector', `${gguf}:-1.5`, '--out', out2]).code).toBe(0);
    const api2 = await model.run([[5, 6, 7]], { hooks: steeringHooks(loadControlVector(gguf), -1.5) });
    expect(Array.from(readSafetensors(out2).get('logits')!.data as Float32Array)).toEqual(Array.from(api2.logits!.data));
    const plain = await model.run([[5, 6, 7]]);
    expect(Array.from(plain.logits!.data)).not.toEqual(Array.from(api2.logits!.data));
  });

  it('generate prints {"tokens", "text"}; --stream prints a JSON line per step; steering changes the output', async () => {
    const r = cli(['generate', '--model', GPT2, '--text', 'The cat', '--max-new-tokens', '4']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { tokens: number[][]; text: string[] };
    const api = await model.generate('The cat', { maxNewTokens: 4 });
    expect(out).toEqual({ tokens: api.tokens, text: api.text });

    const s = cli(['generate', '--model', GPT2, '--tokens', '[[1,2,3],[4,5]]', '--max-new-tokens', '3', '--temperature', '0.8', '--seed', '3', '--top-k', '20', '--stream']);
    expect(s.code).toBe(0);
    const lines = s.stdout.trim().split('\n').map((l) => JSON.parse(l) as { step?: number; tokens: number[] | number[][] });
    expect(lines.map((l) => l.step)).toEqual([0, 1, 2, undefined]);
    const final = lines.at(-1)!.tokens as number[][];
    expect(final[0]!.slice(3)).toEqual(lines.slice(0, 3).map((l) => (l.tokens as number[])[0]));
    const again = await model.generate([[1, 2, 3], [4, 5]], { maxNewTokens: 3, temperature: 0.8, seed: 3, topK: 20 });
    expect(final).toEqual(again.tokens);

    const d = model.config.dModel;
    const vfile = join(tmp, 'big.safetensors');
    writeSafetensors(vfile, { v: { shape: [d], data: randomFloats(d, 5, 1) } });
    const steered = JSON.parse(cli(['generate', '--model', GPT2, '--text', 'The cat', '--max-new-tokens', '4', '--steer', `blocks.0.hook_resid_post=${vfile}:8`]).stdout) as { tokens: number[][] };
    expect(steered.tokens).not.toEqual(out.tokens);
  });

  it('steer-train writes .safetensors and .gguf vectors equal to the API', async () => {
    const pairsFile = join(tmp, 'pairs.jsonl');
    writeFileSync(pairsFile, pairs.map((p) => JSON.stringify(p)).join('\n') + '\n');
    const st = join(tmp, 'trained.safetensors');
    const gg = join(tmp, 'trained.gguf');
    expect(cli(['steer-train', '--model', GPT2, '--pairs', pairsFile, '--layers', '0-1', '--method', 'mean', '--out', st]).code).toBe(0);
    const r = cli(['steer-train', '--model', GPT2, '--pairs', pairsFile, '--layers', '1', '--method', 'pca', '--out', gg]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/wrote 1 directions \(pca, 3 pairs\)/);
    const api = await trainSteeringVector(model, pairs, { layers: [0, 1], method: 'mean' });
    const file = loadSteeringSafetensors(st);
    expect([...file.directions.keys()]).toEqual(['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post']);
    expect(Array.from(file.directions.get('blocks.1.hook_resid_post')!)).toEqual(Array.from(api.directions.get('blocks.1.hook_resid_post')!));
    const cv = loadControlVector(gg);
    const pca = await trainSteeringVector(model, pairs, { layers: [1], method: 'pca' });
    expect(Array.from(cv.directions.get('blocks.1.hook_resid_post')!)).toEqual(Array.from(pca.directions.get('blocks.1.hook_resid_post')!));
  });

  it('bad steering input gives coded errors on the CLI', () => {
    const d = model.config.dModel;
    const wide = join(tmp, 'wide.safetensors');
    writeSafetensors(wide, { v: { shape: [d + 1], data: new Float32Array(d + 1) } });
    const matrix = join(tmp, 'matrix.safetensors');
    writeSafetensors(matrix, { m: { shape: [2, d], data: new Float32Array(2 * d) } });
    const junk = join(tmp, 'junk.gguf');
    writeFileSync(junk, 'GGUF-not-really');
    const cases: [string[], number, RegExp][] = [
      [['--steer', `blocks.0.hook_resid_post=${wide}`], 1, /ERR_INVALID_INPUT.*width 64/],
      [['--steer', `blocks.0.hook_resid_post=${matrix}`], 1, /ERR_STEERING_FILE_INVALID/],
      [['--steer', `blocks.0.hook_resid_post=${join(tmp, 'missing.safetensors')}`], 1, /ERR_FILE_NOT_FOUND/],
      [['--steer', `blocks.0.hook_resid_psot=${wide}`], 1, /ERR_UNKNOWN_HOOK.*blocks\.0\.hook_resid_post/],
      [['--steer', 'no-equals-sign'], 2, /HOOK=FILE/],
      [['--control-vector', junk], 1, /ERR_GGUF_INVALID/],
    ];
    for (const [flags, code, message] of cases) {
      const r = cli(['run', '--model', GPT2, '--tokens', '[[1,2]]', ...flags]);
      expect(r.code, flags.join(' ')).toBe(code);
      expect(r.stderr).toMatch(message);
    }
    const conflict = cli(['generate', '--model', GPT2, '--text', 'a', '--tokens', '[[1]]', '--max-new-tokens', '2']);
    expect(conflict.code).toBe(2);
    expect(cli(['generate', '--model', GPT2, '--text', 'a', '--max-new-tokens', '0']).code).toBe(2);
    expect(cli(['generate', '--model', GPT2, '--text', 'a', '--max-new-tokens', '2', '--top-p', '1.5']).stderr).toMatch(/top-p/);
    expect(cli(['steer-train', '--model', GPT2, '--pairs', join(tmp, 'nope.jsonl'), '--layers', '9', '--out', join(tmp, 'x.gguf')]).stderr).toMatch(/layer 9/);
  });
});
