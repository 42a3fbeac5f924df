// Loader for the gradient references of test/fixtures/generate_grads.py (test/fixtures/grads/):
// each model's JSON case list joined with its safetensors tensors, typed per case kind.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { readSafetensors } from '../src/io/safetensors.js';
import { Tensor } from '../src/tensor.js';
import { ROOT, type RefEdit } from './helpers.js';

export const GRADS_DIR = join(ROOT, 'test', 'fixtures', 'grads');

/** `'last'` (T - 1), `'all'` (every real position) or real positions (negative: from the end). */
export type GradPositions = 'last' | 'all' | number[];

export type GradMetric =
  | { kind: 'logit'; positions: GradPositions; a: number }
  | { kind: 'logitDiff'; positions: GradPositions; a: number; b: number }
  | { kind: 'logProb'; positions: GradPositions; a: number }
  | { kind: 'loss' }
  /** d metric / d logits, [batch, pos, vocab]; the recorded value per row is sum(dlogits * logits). */
  | { kind: 'custom'; dlogits: Tensor };

export type DetachKind = 'pattern' | 'normScale' | 'mlpAct';

/** A backward pass: a metric (or seeds) on `inputIds`, with forward edits and stop-gradient masks. */
export interface BackwardCase {
  kind: 'backward';
  name: string;
  inputIds: number[][];
  /** Left padding per row (the ids hold PAD_ID 0 in those slots). */
  pad: number[];
  edits: RefEdit[];
  /** Applied at every layer (ln_final included for normScale). */
  detach: DetachKind[];
  /** Exactly one of metric and seeds. */
  metric?: GradMetric;
  /** Seed gradient per hook, [replicas, ...hook shape]. */
  seeds?: Map<string, Tensor>;
  replicas: number;
  /** d metric / d hook output, the hook's shape ([replicas, ...] with seeds), in forward order. */
  grads: Map<string, Tensor>;
  /** The metric per row (float32 values); absent for seeds. */
  metricRows?: number[];
  f64MaxRelDev: number;
}

/** Per hook: sum over the last axis of (clean - corrupted) * grad at the corrupted input. */
export interface AttributionCase {
  kind: 'attributionPatching';
  name: string;
  cleanIds: number[][];
  corruptedIds: number[][];
  metric: GradMetric;
  hooks: string[];
  scores: Map<string, Tensor>;
  /** The gradients at the corrupted input the scores use. */
  grads: Map<string, Tensor>;
  metricCleanRows: number[];
  metricCorruptedRows: number[];
  f64MaxRelDev: number;
}

/** Integrated gradients at one hook (midpoint rule over `steps`, baseline zeros). */
export interface IntegratedGradientsCase {
  kind: 'integratedGradients';
  name: string;
  inputIds: number[][];
  hook: string;
  baseline: 'zeros';
  steps: number;
  metric: GradMetric;
  attribution: Tensor;
  metricXRows: number[];
  metricBaselineRows: number[];
  /** sum(attribution) - (m(x) - m(baseline)) per row. */
  completenessGapRows: number[];
  f64MaxRelDev: number;
}

export type GradCase = BackwardCase | AttributionCase | IntegratedGradientsCase;

export interface GradFixture {
  model: string;
  /** Absolute path of the model directory. */
  modelDir: string;
  dims: { n_layers: number; d_model: number; d_mlp: number; n_heads: number; n_kv_heads: number; d_head: number; vocab: number };
  /** |ours - ref| <= rel * max|ref| + abs, per tensor. */
  tolerance: { rel: number; abs: number };
  cases: GradCase[];
  /** Every tensor of the safetensors file, by name (inputs and references). */
  tensors: Map<string, Tensor>;
}

/** The models that have gradient references. */
export function gradFixtureModels(): string[] {
  if (!existsSync(GRADS_DIR)) return [];
  return readdirSync(GRADS_DIR)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -5))
    .sort();
}

type Json = Record<string, unknown>;

export function loadGradFixture(model: string): GradFixture {
  const doc = JSON.parse(readFileSync(join(GRADS_DIR, `${model}.json`), 'utf8')) as Json;
  const tensors = new Map<string, Tensor>();
  for (const [name, e] of readSafetensors(join(GRADS_DIR, `${model}.safetensors`))) {
    if (!(e.data instanceof Float32Array)) throw new Error(`${model}: ${name} is not float32`);
    tensors.set(name, new Tensor(e.shape, e.data));
  }
  const get = (name: string): Tensor => {
    const t = tensors.get(name);
    if (!t) throw new Error(`${model}: tensor ${name} is missing`);
    return t;
  };
  const byHook = (prefix: string, hooks: string[]) => new Map(hooks.map((h) => [h, get(`${prefix}.${h}`)]));
  const metric = (m: Json): GradMetric => (m.kind === 'custom' ? { kind: 'custom', dlogits: get(m.dlogits as string) } : (m as GradMetric));

  const cases = (doc.cases as Json[]).map((c): GradCase => {
    const name = c.name as string;
    const dev = c.f64_max_rel_dev as number;
    if (c.kind === 'attributionPatching') {
      const hooks = c.hooks as string[];
      return {
        kind: 'attributionPatching', name, cleanIds: c.clean_ids as number[][], corruptedIds: c.corrupted_ids as number[][],
        metric: metric(c.metric as Json), hooks, scores: byHook(`${name}.score`, hooks), grads: byHook(`${name}.grad`, hooks),
        metricCleanRows: c.metric_clean_rows as number[], metricCorruptedRows: c.metric_corrupted_rows as number[], f64MaxRelDev: dev,
      };
    }
    if (c.kind === 'integratedGradients') {
      return {
        kind: 'integratedGradients', name, inputIds: c.input_ids as number[][], hook: c.hook as string, baseline: 'zeros',
        steps: c.steps as number, metric: metric(c.metric as Json), attribution: get(`${name}.attribution`),
        metricXRows: c.metric_x_rows as number[], metricBaselineRows: c.metric_baseline_rows as number[],
        completenessGapRows: c.completeness_gap_rows as number[], f64MaxRelDev: dev,
      };
    }
    if (c.kind !== 'backward') throw new Error(`${model}: unknown case kind ${String(c.kind)}`);
    const seeds = c.seeds ? new Map(Object.entries(c.seeds as Record<string, string>).map(([h, t]) => [h, get(t)])) : undefined;
    return {
      kind: 'backward', name, inputIds: c.input_ids as number[][], pad: c.pad as number[], edits: c.edits as RefEdit[],
      detach: c.detach as DetachKind[], ...(c.metric ? { metric: metric(c.metric as Json) } : {}), ...(seeds ? { seeds } : {}),
      replicas: (c.replicas as number | undefined) ?? 1, grads: byHook(`${name}.grad`, c.grads as string[]),
      ...(c.metric_rows ? { metricRows: c.metric_rows as number[] } : {}), f64MaxRelDev: dev,
    };
  });
  return {
    model, modelDir: join(ROOT, doc.model_dir as string), dims: doc.dims as GradFixture['dims'],
    tolerance: doc.tolerance as GradFixture['tolerance'], cases, tensors,
  };
}

/** max |ours - ref| / (rel * max|ref| + abs): at most 1 when `ours` meets the tolerance. */
export function gradError(ours: Float32Array, ref: Tensor, tol: { rel: number; abs: number }): number {
  if (ours.length !== ref.data.length) throw new Error(`length ${ours.length} vs reference ${ref.data.length}`);
  let big = 0;
  let err = 0;
  for (let i = 0; i < ours.length; i++) {
    big = Math.max(big, Math.abs(ref.data[i]!));
    const e = Math.abs(ours[i]! - ref.data[i]!);
    err = Number.isNaN(e) ? Infinity : Math.max(err, e);
  }
  return err / (tol.rel * big + tol.abs);
}

/** Padded indices a metric reads in a row of length T with left padding `pad`. */
export function metricPositions(positions: GradPositions, pad: number, T: number): number[] {
  if (positions === 'last') return [T - 1];
  if (positions === 'all') return Array.from({ length: T - pad }, (_, i) => pad + i);
  return positions.map((p) => (p >= 0 ? pad + p : T + p));
}
