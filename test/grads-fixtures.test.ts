// Self-consistency of the gradient references (test/fixtures/grads/, generate_grads.py): the files
// parse, every tensor has the shape of its hook in the engine's hook table, the seed case is
// shaped and seeded as the spec says, and each recorded metric value equals the metric computed
// from the engine's own forward logits (Model.run), padded rows included.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { edits, loadModel, type Edit, type Model } from '../src/index.js';
import { gradFixtureModels, loadGradFixture, metricPositions, type GradFixture, type GradMetric } from './grads-fixtures.js';
import { toEdit } from './helpers.js';

const models = gradFixtureModels();
if (models.length === 0) console.warn('grads-fixtures: skipped, test/fixtures/grads/ is empty (run test/fixtures/generate_grads.py)');

/** The metric per row from logits [rows, T, vocab] (float64 math on the float32 logits). */
function metricRows(logits: Float32Array, T: number, vocab: number, ids: number[][], pad: number[], m: GradMetric): number[] {
  const at = (r: number, t: number) => logits.subarray((r * T + t) * vocab, (r * T + t + 1) * vocab);
  const logSoftmax = (row: Float32Array, a: number) => {
    let mx = -Infinity;
    for (const v of row) mx = Math.max(mx, v);
    let s = 0;
    for (const v of row) s += Math.exp(v - mx);
    return row[a]! - mx - Math.log(s);
  };
  if (m.kind === 'loss') {
    const n = ids.reduce((acc, _, r) => acc + T - 1 - pad[r]!, 0);
    return ids.map((row, r) => {
      let s = 0;
      for (let t = pad[r]!; t < T - 1; t++) s -= logSoftmax(at(r, t), row[t + 1]!);
      return s / n;
    });
  }
  if (m.kind === 'custom') {
    return ids.map((_, r) => {
      let s = 0;
      for (let i = r * T * vocab; i < (r + 1) * T * vocab; i++) s += m.dlogits.data[i]! * logits[i]!;
      return s;
    });
  }
  return ids.map((_, r) =>
    metricPositions(m.positions, pad[r]!, T).reduce((acc, t) => {
      const row = at(r, t);
      if (m.kind === 'logit') return acc + row[m.a]!;
      if (m.kind === 'logitDiff') return acc + row[m.a]! - row[m.b]!;
      return acc + logSoftmax(row, m.a);
    }, 0),
  );
}

/** |ours - ref| within 1e-4 of the metric's scale (float32 logits of O(10) agree to ~1e-6 relative). */
function expectRows(ours: number[], ref: number[] | undefined, scale: number, what: string): void {
  expect(ref, what).toBeDefined();
  ours.forEach((v, r) => expect(Math.abs(v - ref![r]!), `${what} row ${r}: engine ${v} reference ${ref![r]}`).toBeLessThanOrEqual(1e-4 * scale));
}

function hookEdits(list: { hook: string }[]): Record<string, Edit[]> {
  const hooks: Record<string, Edit[]> = {};
  for (const e of list) (hooks[e.hook] ??= []).push(toEdit(e as Parameters<typeof toEdit>[0]));
  return hooks;
}

for (const name of models) {
  describe(`gradient references: ${name}`, () => {
    let fx: GradFixture;
    let model: Model;
    beforeAll(async () => {
      fx = loadGradFixture(name);
      model = await loadModel(fx.modelDir, { threads: 2 });
    });
    afterAll(() => model?.dispose());

    const run = async (ids: number[][], hooks?: Record<string, Edit[]>) => {
      const r = await model.run(ids, hooks ? { hooks } : {});
      return r.logits!.data;
    };
    const scaleOf = (rows: number[]) => Math.max(1, ...rows.map(Math.abs));

    it('tensors: every one referenced, finite, and shaped like its hook in the engine', () => {
      const info = new Map(model.hooks.map((h) => [h.name, h.shape]));
      const shapeOf = (hook: string, b: number, T: number) => {
        const s = info.get(hook);
        expect(s, `${hook} is not an engine hook`).toBeDefined();
        return s!.map((d) => (d === 'batch' ? b : d === 'pos' || d === 'key_pos' ? T : d));
      };
      const used = new Set<string>();
      const use = (t: { shape: readonly number[]; data: Float32Array }, shape: number[], what: string) => {
        expect([...t.shape], what).toEqual(shape);
        expect(t.data.every(Number.isFinite), `${what} has non-finite entries`).toBe(true);
        for (const [k, v] of fx.tensors) if (v === t) used.add(k);
      };
      for (const c of fx.cases) {
        if (c.kind === 'backward') {
          const [b, T] = [c.inputIds.length, c.inputIds[0]!.length];
          const lead = c.seeds ? [c.replicas] : [];
          expect(c.seeds === undefined, `${c.name}: exactly one of metric and seeds`).toBe(c.metric !== undefined);
          for (const [h, g] of c.grads) use(g, [...lead, ...shapeOf(h, b, T)], `${c.name} grad ${h}`);
          for (const [h, s] of c.seeds ?? []) use(s, [c.replicas, ...shapeOf(h, b, T)], `${c.name} seed ${h}`);
          if (c.metric?.kind === 'custom') use(c.metric.dlogits, [b, T, fx.dims.vocab], `${c.name} dlogits`);
        } else if (c.kind === 'attributionPatching') {
          const [b, T] = [c.cleanIds.length, c.cleanIds[0]!.length];
          for (const h of c.hooks) {
            const shape = shapeOf(h, b, T);
            use(c.grads.get(h)!, shape, `${c.name} grad ${h}`);
            use(c.scores.get(h)!, shape.length === 4 ? shape.slice(0, 3) : shape.slice(0, 2), `${c.name} score ${h}`);
          }
        } else {
          use(c.attribution, shapeOf(c.hook, c.inputIds.length, c.inputIds[0]!.length), `${c.name} attribution`);
        }
        expect(c.f64MaxRelDev, `${c.name}: float32 vs float64`).toBeLessThan(0.1 * fx.tolerance.rel + fx.tolerance.abs);
      }
      expect([...fx.tensors.keys()].filter((k) => !used.has(k))).toEqual([]);
    });

    it('seed case: S rows, the seed hook returns its seed, hooks downstream of it get 0', () => {
      const c = fx.cases.find((x) => x.name === 'seeds');
      expect(c?.kind).toBe('backward');
      if (c?.kind !== 'backward') return;
      expect(c.replicas).toBeGreaterThanOrEqual(2); // 3, or 2 for the fixtures with few cases
      expect(c.metric).toBeUndefined();
      const seeds = [...c.seeds!];
      expect(seeds.length).toBe(1);
      const [hook, seed] = seeds[0]!;
      expect([...c.grads.get(hook)!.data]).toEqual([...seed.data]);
      expect(c.grads.get('blocks.1.hook_mlp_out')!.data.every((v) => v === 0)).toBe(true);
      // Rows differ: S genuinely different backward passes.
      const g = c.grads.get('blocks.0.hook_resid_pre')!;
      const n = g.size / c.replicas;
      expect(g.data.subarray(0, n).some((v, i) => v !== g.data[n + i])).toBe(true);
    });

    it("metric values equal the metric of the engine's run() logits", async () => {
      const V = fx.dims.vocab;
      for (const c of fx.cases) {
        if (c.kind === 'backward' && c.metric && c.pad.every((p) => p === 0)) {
          const T = c.inputIds[0]!.length;
          const logits = await run(c.inputIds, c.edits.length ? hookEdits(c.edits) : undefined);
          const ours = metricRows(logits, T, V, c.inputIds, c.pad, c.metric);
          const scale = c.metric.kind === 'custom' ? c.metric.dlogits.data.reduce((a, v) => a + Math.abs(v), 0) : scaleOf(c.metricRows ?? []);
          expectRows(ours, c.metricRows, scale, c.name);
        } else if (c.kind === 'attributionPatching') {
          const T = c.cleanIds[0]!.length;
          const pad = c.cleanIds.map(() => 0);
          expectRows(metricRows(await run(c.cleanIds), T, V, c.cleanIds, pad, c.metric), c.metricCleanRows, scaleOf(c.metricCleanRows), `${c.name} clean`);
          expectRows(metricRows(await run(c.corruptedIds), T, V, c.corruptedIds, pad, c.metric), c.metricCorruptedRows, scaleOf(c.metricCorruptedRows), `${c.name} corrupted`);
        } else if (c.kind === 'integratedGradients') {
          const T = c.inputIds[0]!.length;
          const pad = c.inputIds.map(() => 0);
          expectRows(metricRows(await run(c.inputIds), T, V, c.inputIds, pad, c.metric), c.metricXRows, scaleOf(c.metricXRows), `${c.name} m(x)`);
          const base = await run(c.inputIds, { [c.hook]: [edits.zero()] });
          expectRows(metricRows(base, T, V, c.inputIds, pad, c.metric), c.metricBaselineRows, scaleOf(c.metricBaselineRows), `${c.name} m(baseline)`);
          let sum = 0;
          c.inputIds.forEach((_, r) => {
            const n = c.attribution.size / c.inputIds.length;
            let s = 0;
            for (let i = r * n; i < (r + 1) * n; i++) s += c.attribution.data[i]!;
            sum = Math.max(sum, Math.abs(s - (c.metricXRows[r]! - c.metricBaselineRows[r]!) - c.completenessGapRows[r]!));
          });
          expect(sum).toBeLessThanOrEqual(1e-4 * scaleOf(c.metricXRows));
        }
      }
    });

    it('padded cases: each row equals its real tokens run alone', async () => {
      const V = fx.dims.vocab;
      for (const c of fx.cases) {
        if (c.kind !== 'backward' || !c.metric || c.pad.every((p) => p === 0)) continue;
        const T = c.inputIds[0]!.length;
        const n = c.inputIds.reduce((acc, _, r) => acc + T - 1 - c.pad[r]!, 0);
        for (let r = 0; r < c.inputIds.length; r++) {
          const real = [c.inputIds[r]!.slice(c.pad[r]!)];
          const Tr = real[0]!.length;
          // Real positions are the same alone; the loss row is its share of one mean over all rows.
          const alone = metricRows(await run(real), Tr, V, real, [0], c.metric)[0]!;
          const v = c.metric.kind === 'loss' ? (alone * (Tr - 1)) / n : alone;
          expectRows([v], [c.metricRows![r]!], scaleOf(c.metricRows!), `${c.name} row ${r}`);
        }
      }
    });
  });
}
