// `neurotap grad` and `neurotap attribute` run as subprocesses (README "CLI"); their output files
// are read back with Python's `safetensors` (skipped, with a message, without it) and compared
// with the torch-autograd references of test/fixtures/grads/gpt2 (generate_grads.py).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { Tensor } from '../src/index.js';
import { gradError, loadGradFixture, type AttributionCase, type BackwardCase } from './grads-fixtures.js';
import { fixtureDir, ROOT } from './helpers.js';

const BIN = join(ROOT, 'bin', 'neurotap.js');
const tmp = mkdtempSync(join(tmpdir(), 'neurotap-cli-grad-'));
const fx = loadGradFixture('gpt2');
const hasPython = spawnSync('python3', ['-c', 'import safetensors, numpy']).status === 0;

function cli(args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Every tensor of a safetensors file as read by Python: name -> Tensor (float32 checked). */
function readWithPython(file: string): Map<string, Tensor> {
  const script = `
import json, sys
from safetensors.numpy import load_file
t = load_file(sys.argv[1])
print(json.dumps({k: [list(v.shape), str(v.dtype), v.astype('float64').ravel().tolist()] for k, v in t.items()}))`;
  const out = JSON.parse(execFileSync('python3', ['-c', script, file], { encoding: 'utf8', maxBuffer: 1 << 28 })) as Record<string, [number[], string, number[]]>;
  const m = new Map<string, Tensor>();
  for (const [k, [shape, dtype, data]] of Object.entries(out)) {
    expect(dtype, k).toBe('float32');
    m.set(k, new Tensor(shape, Float32Array.from(data)));
  }
  return m;
}

function backwardCase(name: string): BackwardCase {
  return fx.cases.find((c): c is BackwardCase => c.kind === 'backward' && c.name === name)!;
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

function expectClose(file: Map<string, Tensor>, ref: Map<string, Tensor>): void {
  for (const [hook, r] of ref) {
    const t = file.get(hook);
    expect(t?.shape, hook).toEqual(r.shape);
    expect(gradError(t!.data, r, fx.tolerance), hook).toBeLessThanOrEqual(1);
  }
}

function expectScalar(t: Tensor | undefined, ref: number, scale: number, what: string): void {
  expect(t?.shape, what).toEqual([1]);
  expect(Math.abs(t!.data[0]! - ref), `${what}: ${t!.data[0]} vs ${ref}`).toBeLessThanOrEqual(1e-4 * Math.max(1, scale));
}

describe('neurotap grad / attribute', () => {
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('grad --metric logit-diff:A,B writes d metric / d activation per hook and the metric', (ctx) => {
    if (!hasPython) {
      console.warn('skipping: python3 with safetensors and numpy is not available');
      return ctx.skip();
    }
    const c = backwardCase('logitDiff_last_all_hooks');
    if (c.metric?.kind !== 'logitDiff' || c.metric.positions !== 'last') throw new Error('the reference case changed');
    const out = join(tmp, 'grad.safetensors');
    const r = cli(['grad', '--model', fixtureDir('gpt2'), '--tokens', JSON.stringify(c.inputIds), '--metric', `logit-diff:${c.metric.a},${c.metric.b}`, '--hooks', 'blocks.*.hook_resid_pre', 'blocks.0.attn.hook_pattern', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const file = readWithPython(out);
    const hooks = ['blocks.0.hook_resid_pre', 'blocks.1.hook_resid_pre', 'blocks.0.attn.hook_pattern'];
    expect([...file.keys()].sort()).toEqual([...hooks, 'metric'].sort());
    expectClose(file, new Map(hooks.map((h) => [h, c.grads.get(h)!])));
    expectScalar(file.get('metric'), sum(c.metricRows!), Math.max(...c.metricRows!.map(Math.abs)), 'metric');
  });

  it('grad --metric loss: the mean next-token cross-entropy over all rows and positions', (ctx) => {
    if (!hasPython) {
      console.warn('skipping: python3 with safetensors and numpy is not available');
      return ctx.skip();
    }
    const c = backwardCase('loss');
    const out = join(tmp, 'loss.safetensors');
    const r = cli(['grad', '--model', fixtureDir('gpt2'), '--tokens', JSON.stringify(c.inputIds), '--metric', 'loss', '--hooks', 'blocks.*.attn.hook_z', '--out', out]);
    expect(r.stderr).toBe('');
    const file = readWithPython(out);
    expectClose(file, new Map([...c.grads].filter(([h]) => h.endsWith('attn.hook_z'))));
    expectScalar(file.get('metric'), sum(c.metricRows!), Math.max(...c.metricRows!.map(Math.abs)), 'loss');
  });

  it('attribute writes the attribution-patching scores and both metrics', (ctx) => {
    if (!hasPython) {
      console.warn('skipping: python3 with safetensors and numpy is not available');
      return ctx.skip();
    }
    const c = fx.cases.find((x): x is AttributionCase => x.kind === 'attributionPatching')!;
    if (c.metric.kind !== 'logitDiff' || c.metric.positions !== 'last') throw new Error('the reference case changed');
    const out = join(tmp, 'attr.safetensors');
    const r = cli([
      'attribute', '--model', fixtureDir('gpt2'),
      '--clean-tokens', JSON.stringify(c.cleanIds), '--corrupted-tokens', JSON.stringify(c.corruptedIds),
      '--metric', `logit-diff:${c.metric.a},${c.metric.b}`, '--hooks', ...c.hooks, '--out', out,
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const file = readWithPython(out);
    expect([...file.keys()].sort()).toEqual([...c.hooks, 'metric_clean', 'metric_corrupted'].sort());
    expectClose(file, c.scores);
    const scale = Math.max(...[...c.metricCleanRows, ...c.metricCorruptedRows].map(Math.abs));
    expectScalar(file.get('metric_clean'), sum(c.metricCleanRows), scale, 'metric_clean');
    expectScalar(file.get('metric_corrupted'), sum(c.metricCorruptedRows), scale, 'metric_corrupted');
  });
});
