// Model.backward, attributionPatching and integratedGradients against torch autograd (the
// references of test/fixtures/generate_grads.py, loaded by test/grads-fixtures.ts) on every
// fixture family: gradients at every hook kind, each metric, forward edits, stop-gradient masks,
// seeds, left padding; then gradient hooks, a custom metric function and JS forward hooks checked
// against the same references. Tolerance (README "Gradients"): |ours - ref| <= 1e-4 max|ref| + 1e-5.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { attributionPatching, edits, integratedGradients, loadModel, Tensor, type BackwardOptions, type Edit, type Metric, type Model } from '../src/index.js';
import { gradError, gradFixtureModels, loadGradFixture, type BackwardCase, type GradFixture, type GradMetric } from './grads-fixtures.js';
import { toEdit, type RefEdit } from './helpers.js';

const models = gradFixtureModels();
if (models.length === 0) console.warn('backward: skipped, test/fixtures/grads/ is empty (run test/fixtures/generate_grads.py)');

/** The fixture's metric as a Model.backward metric. */
function toMetric(m: GradMetric): Metric {
  switch (m.kind) {
    case 'logit':
      return { logit: { token: m.a, position: m.positions } };
    case 'logitDiff':
      return { logitDiff: { correct: m.a, wrong: m.b, position: m.positions } };
    case 'logProb':
      return { logProb: { token: m.a, position: m.positions } };
    case 'loss':
      return 'loss';
    case 'custom':
      return { custom: m.dlogits };
  }
}

function hookEdits(list: RefEdit[]): Record<string, Edit[]> {
  const hooks: Record<string, Edit[]> = {};
  for (const e of list) (hooks[e.hook] ??= []).push(toEdit(e));
  return hooks;
}

/** The rows without their left padding (Model.backward pads them again, with id 0 as the references do). */
function unpadded(c: BackwardCase): number[][] {
  return c.inputIds.map((row, b) => row.slice(c.pad[b]!));
}

function backwardOptions(c: BackwardCase): BackwardOptions {
  return {
    ...(c.metric ? { metric: toMetric(c.metric) } : {}),
    ...(c.seeds ? { seeds: Object.fromEntries(c.seeds) } : {}),
    grads: [...c.grads.keys()],
    hooks: hookEdits(c.edits) as BackwardOptions['hooks'],
    ...(c.detach.length ? { detach: c.detach } : {}),
  };
}

/** Every tensor of `ours` within the tolerance of `ref`; the message names the worst hooks. */
function expectGrads(ours: Map<string, Tensor>, ref: Map<string, Tensor>, tol: GradFixture['tolerance'], what: string): void {
  const errors: [string, number][] = [];
  for (const [hook, r] of ref) {
    const t = ours.get(hook);
    expect(t, `${what}: no gradient at ${hook}`).toBeDefined();
    expect(t!.shape, `${what}: shape at ${hook}`).toEqual(r.shape);
    errors.push([hook, gradError(t!.data, r, tol)]);
  }
  errors.sort((a, b) => b[1] - a[1]);
  const bad = errors.filter(([, e]) => !(e <= 1));
  expect(bad, `${what}: error / tolerance by hook (worst first): ${errors.slice(0, 5).map(([h, e]) => `${h} ${e.toPrecision(3)}`).join(', ')}`).toEqual([]);
}

function expectValue(ours: number | null, ref: number, scale: number, what: string): void {
  expect(ours, what).not.toBeNull();
  expect(Math.abs(ours! - ref), `${what}: ours ${ours}, reference ${ref}`).toBeLessThanOrEqual(1e-4 * Math.max(1, scale));
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

for (const name of models) {
  describe(`backward vs torch autograd: ${name}`, () => {
    const fx: GradFixture = loadGradFixture(name);
    let model: Model;
    beforeAll(async () => {
      model = await loadModel(fx.modelDir, { threads: 2 });
    });
    afterAll(() => model?.dispose());

    for (const c of fx.cases) {
      it(`${c.kind} ${c.name}`, async () => {
        if (c.kind === 'backward') {
          const r = await model.backward(unpadded(c), backwardOptions(c));
          expect(r.pad).toEqual(c.pad);
          expectGrads(r.grads, c.grads, fx.tolerance, c.name);
          // The same with every block but the top one recomputed from its saved input.
          const recomputed = await model.backward(unpadded(c), { ...backwardOptions(c), keepActivationBytes: 0 });
          expectGrads(recomputed.grads, c.grads, fx.tolerance, `${c.name} (blocks recomputed)`);
          if (c.metricRows) {
            const scale = Math.max(...c.metricRows.map(Math.abs));
            c.metricRows.forEach((v, b) => expectValue(r.metricPerRow![b]!, v, scale, `${c.name}: metric of row ${b}`));
            expectValue(r.metric, sum(c.metricRows), scale, `${c.name}: metric`);
          } else {
            expect(r.metric).toBeNull();
          }
        } else if (c.kind === 'attributionPatching') {
          const r = await attributionPatching(model, c.cleanIds, c.corruptedIds, { metric: toMetric(c.metric), hooks: c.hooks });
          expectGrads(r.scores, c.scores, fx.tolerance, c.name);
          const scale = Math.max(...[...c.metricCleanRows, ...c.metricCorruptedRows].map(Math.abs));
          expectValue(r.metricClean, sum(c.metricCleanRows), scale, `${c.name}: clean metric`);
          expectValue(r.metricCorrupted, sum(c.metricCorruptedRows), scale, `${c.name}: corrupted metric`);
        } else {
          const r = await integratedGradients(model, c.inputIds, { hook: c.hook, metric: toMetric(c.metric), steps: c.steps });
          expectGrads(new Map([[c.hook, r.attributions]]), new Map([[c.hook, c.attribution]]), fx.tolerance, c.name);
          const scale = Math.max(...[...c.metricXRows, ...c.metricBaselineRows].map(Math.abs));
          expectValue(r.metric, sum(c.metricXRows), scale, `${c.name}: metric at x`);
          expectValue(r.metricBaseline, sum(c.metricBaselineRows), scale, `${c.name}: metric at the baseline`);
          // Completeness, as far as the midpoint rule of the reference reaches it.
          const gap = sum(Array.from(r.attributions.data)) - (r.metric! - r.metricBaseline);
          expect(Math.abs(gap - sum(c.completenessGapRows))).toBeLessThanOrEqual(1e-3 * Math.max(1, scale));
        }
        await model.run([[1, 2, 3]]);  // the model stays usable
      });
    }

    /** The first plain backward case with a metric (no edits, detach or padding). */
    const plain = () => fx.cases.find((c): c is BackwardCase => c.kind === 'backward' && !!c.metric && c.metric.kind !== 'custom' && c.edits.length === 0 && c.detach.length === 0 && c.pad.every((p) => p === 0))!;

    it('a gradient hook sees the gradient the grads option returns; zeroing it cuts everything upstream', async () => {
      const c = plain();
      const hooks = [...c.grads.keys()].filter((h) => /^blocks\.\d+\.hook_resid_pre$/.test(h));
      const last = hooks[hooks.length - 1]!;
      const seen = new Map<string, Tensor>();
      const r = await model.backward(unpadded(c), {
        metric: toMetric(c.metric!),
        grads: hooks,
        hooks: Object.fromEntries(hooks.map((h) => [`${h}_grad`, (g: Tensor) => void seen.set(h, new Tensor(g.shape, g.data.slice()))])) as BackwardOptions['hooks'],
      });
      for (const h of hooks) expect(Array.from(seen.get(h)!.data), h).toEqual(Array.from(r.grads.get(h).data));
      expectGrads(r.grads, new Map(hooks.map((h) => [h, c.grads.get(h)!])), fx.tolerance, 'observed gradients');
      // Every path from earlier layers to the logits passes through the last block's input.
      const cut = await model.backward(unpadded(c), { metric: toMetric(c.metric!), grads: hooks, hooks: { [`${last}_grad`]: edits.zero() } as BackwardOptions['hooks'] });
      for (const h of hooks.slice(0, -1)) expect(cut.grads.get(h).data.every((x) => x === 0), `${h} after zeroing ${last}_grad`).toBe(true);
      expect(Array.from(cut.grads.get(last).data)).toEqual(Array.from(new Float32Array(cut.grads.get(last).size)));
    });

    it('a custom metric function gives the gradients of the custom-gradient case', async () => {
      const c = fx.cases.find((x): x is BackwardCase => x.kind === 'backward' && x.metric?.kind === 'custom');
      if (!c || c.metric?.kind !== 'custom') return void console.warn(`${name}: no custom case`);
      const dlogits = c.metric.dlogits;
      let calls = 0;
      const r = await model.backward(unpadded(c), {
        metric: {
          custom: (logits) => {
            calls++;
            let value = 0;
            for (let i = 0; i < logits.size; i++) value += dlogits.data[i]! * logits.data[i]!;
            return { value, grad: dlogits };
          },
        },
        grads: [...c.grads.keys()],
      });
      expect(calls).toBe(1);
      expectGrads(r.grads, c.grads, fx.tolerance, 'custom function');
      expectValue(r.metric, sum(c.metricRows!), Math.max(...c.metricRows!.map(Math.abs)), 'custom function value');
    });

    it('a JS forward hook is the identity in the backward pass', async () => {
      const c = plain();
      const hook = [...c.grads.keys()].find((h) => h.endsWith('.hook_resid_pre'))!;
      const r = await model.backward(unpadded(c), { metric: toMetric(c.metric!), grads: [...c.grads.keys()], hooks: { [hook]: () => {} } as BackwardOptions['hooks'] });
      expectGrads(r.grads, c.grads, fx.tolerance, 'with a JS forward hook');
    });

    it('a seed without a leading axis is one backward pass (the first row of the seeded case)', async () => {
      const c = fx.cases.find((x): x is BackwardCase => x.kind === 'backward' && !!x.seeds);
      if (!c) return void console.warn(`${name}: no seed case`);
      const first = (t: Tensor) => new Tensor(t.shape.slice(1), t.data.slice(0, t.size / t.shape[0]!));
      const r = await model.backward(unpadded(c), { seeds: Object.fromEntries([...c.seeds!].map(([h, t]) => [h, first(t)])), grads: [...c.grads.keys()] });
      expectGrads(r.grads, new Map([...c.grads].map(([h, t]) => [h, first(t)])), fx.tolerance, 'one seed row');
    });
  });
}
