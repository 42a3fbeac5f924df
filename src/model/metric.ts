// Metrics of a backward pass as users write them (logit, logitDiff, logProb, loss, custom), their
// translation into the engine's metric terms (native/engine/backward.h) over left-padded rows, and
// their value computed from logits in TypeScript (for the attribution helpers). Semantics: README
// "Gradients"; tests: test/backward-api.test.ts, test/backward.test.ts.
import { InvalidInputError } from '../errors.js';
import type { NativeMetricTerm } from '../bindings/native.js';
import { Tensor } from '../tensor.js';
import { checkTokenId, invalid, isObject } from './validate.js';

/** A token: an id, or a string that tokenizes (without special tokens) to exactly one token. */
export type MetricToken = number | string;
/** One token for every row, or one per batch row. */
export type MetricTokens = MetricToken | readonly MetricToken[];

/**
 * Where a metric reads the logits: `'last'` (each row's last position), real positions of each
 * row (0 = its first token; negative counts from the end), or `'all'` (every real position).
 * Summed over the positions. Defaults to `'last'`.
 */
export type MetricPositions = 'last' | 'all' | number | readonly number[];

/** A JS metric: given the logits `[batch, pos, vocab]`, its value and d value / d logits (same shape). */
export type MetricFunction = (logits: Tensor) => { value: number; grad: Tensor };

/**
 * What a backward pass differentiates, per batch row and summed over rows:
 * - `logit`: the token's logit (final logits, after any final soft-cap);
 * - `logitDiff`: logit[correct] - logit[wrong];
 * - `logProb`: log_softmax(logits)[token];
 * - `'loss'` (or `{ loss: true }`): mean next-token cross-entropy over every real position of
 *   every row (TransformerLens's `return_type="loss"`);
 * - `custom`: d metric / d logits as a `[batch, pos, vocab]` Tensor (the metric is then the
 *   linear function sum(grad * logits)), or a {@link MetricFunction}.
 */
export type Metric =
  | { logit: { token: MetricTokens; position?: MetricPositions } }
  | { logitDiff: { correct: MetricTokens; wrong: MetricTokens; position?: MetricPositions } }
  | { logProb: { token: MetricTokens; position?: MetricPositions } }
  | 'loss'
  | { loss: true }
  | { custom: Tensor | MetricFunction };

/** A metric in the engine's form. */
export type ResolvedMetric =
  | { kind: 'terms'; terms: NativeMetricTerm[]; loss: boolean }
  | { kind: 'dlogits'; dlogits: Tensor }
  | { kind: 'function'; fn: MetricFunction };

/** What building terms needs to know about the batch and the vocabulary. */
export interface MetricContext {
  /** Token rows, left-padded to one length. */
  tokens: readonly (readonly number[])[];
  /** Left padding per row. */
  pad: readonly number[];
  vocab: number;
  /** Turns a string into its one token id (throws when it is not exactly one token). */
  tokenId: (text: string) => number;
}

function bad(message: string): never {
  throw new InvalidInputError('ERR_INVALID_INPUT', `metric: ${message}`);
}

/** The token id of row `b`. */
function tokenFor(spec: MetricTokens, b: number, ctx: MetricContext, what: string): number {
  let t: unknown = spec;
  if (Array.isArray(spec)) {
    if (spec.length !== ctx.tokens.length) bad(`${what} lists ${spec.length} tokens for a batch of ${ctx.tokens.length} rows (give one token, or one per row)`);
    t = spec[b];
  }
  if (typeof t === 'string') return ctx.tokenId(t);
  checkTokenId(t, ctx.vocab, `metric ${what}${Array.isArray(spec) ? `[${b}]` : ''}`);
  return t;
}

/** Padded indices the metric reads in row `b`. */
function positionsOf(position: MetricPositions | undefined, b: number, ctx: MetricContext): number[] {
  const T = ctx.tokens[0]!.length;
  const pad = ctx.pad[b]!;
  const length = T - pad;
  if (position === undefined || position === 'last') return [T - 1];
  if (position === 'all') return Array.from({ length }, (_, p) => pad + p);
  const list = typeof position === 'number' ? [position] : position;
  if (!Array.isArray(list)) bad(`position must be 'last', 'all', a position or a list of positions`);
  if (list.length === 0) bad('position lists no positions');
  return list.map((p) => {
    if (typeof p !== 'number' || !Number.isInteger(p)) bad(`position ${String(p)} is not an integer`);
    const real = p < 0 ? length + p : p;
    if (real < 0 || real >= length) bad(`position ${p} is past the sequence (row ${b} has ${length} tokens)`);
    return pad + real;
  });
}

/** Translates a metric into engine terms (or a custom gradient), checking tokens and positions. */
export function resolveMetric(metric: unknown, ctx: MetricContext): ResolvedMetric {
  const B = ctx.tokens.length;
  const T = ctx.tokens[0]!.length;
  if (isObject(metric) && Object.keys(metric).length !== 1)
    bad(`give exactly one of logit, logitDiff, logProb, loss and custom (got ${Object.keys(metric).join(', ') || 'none'})`);
  if (metric === 'loss' || (isObject(metric) && 'loss' in metric)) {
    if (isObject(metric) && metric.loss !== true) bad('loss takes no options: write \'loss\' or { loss: true }');
    const n = ctx.pad.reduce((s, pad) => s + Math.max(0, T - 1 - pad), 0);
    if (n === 0) bad('loss needs a row of at least two tokens (it predicts each next token)');
    const terms: NativeMetricTerm[] = [];
    for (let b = 0; b < B; b++)
      for (let t = ctx.pad[b]!; t < T - 1; t++) terms.push({ kind: 2, row: b, pos: t, a: ctx.tokens[b]![t + 1]!, weight: -1 / n });
    return { kind: 'terms', terms, loss: true };
  }
  if (!isObject(metric)) bad(`expected { logit }, { logitDiff }, { logProb }, 'loss' or { custom }, got ${typeof metric === 'string' ? `'${metric}'` : String(metric)}`);
  const key = Object.keys(metric)[0]!;
  const spec = metric[key];
  if (key === 'custom') {
    if (typeof spec === 'function') return { kind: 'function', fn: spec as MetricFunction };
    const t = spec as Tensor;
    if (!(t instanceof Tensor)) bad('custom must be a Tensor of d metric / d logits or a function (logits) => ({ value, grad })');
    if (t.shape.join() !== [B, T, ctx.vocab].join()) bad(`custom gradient has shape [${t.shape.join(', ')}], the logits [${B}, ${T}, ${ctx.vocab}]`);
    for (const x of t.data) if (!Number.isFinite(x)) bad('custom gradient holds a non-finite value');
    return { kind: 'dlogits', dlogits: t };
  }
  if (key !== 'logit' && key !== 'logitDiff' && key !== 'logProb') bad(`unknown metric '${key}' (logit, logitDiff, logProb, loss, custom)`);
  if (!isObject(spec)) bad(`${key} must be an object`);
  const terms: NativeMetricTerm[] = [];
  for (let b = 0; b < B; b++) {
    const positions = positionsOf(spec.position as MetricPositions | undefined, b, ctx);
    if (key === 'logitDiff') {
      if (spec.correct === undefined || spec.wrong === undefined) bad('logitDiff needs correct and wrong tokens');
      const a = tokenFor(spec.correct as MetricTokens, b, ctx, 'logitDiff.correct');
      const w = tokenFor(spec.wrong as MetricTokens, b, ctx, 'logitDiff.wrong');
      for (const pos of positions) terms.push({ kind: 1, row: b, pos, a, b: w, weight: 1 });
    } else {
      if (spec.token === undefined) bad(`${key} needs a token`);
      const a = tokenFor(spec.token as MetricTokens, b, ctx, `${key}.token`);
      for (const pos of positions) terms.push({ kind: key === 'logit' ? 0 : 2, row: b, pos, a, weight: 1 });
    }
  }
  return { kind: 'terms', terms, loss: false };
}

/** The metric's value per row, computed from logits `[batch, pos, vocab]` in double precision. */
export function metricRows(m: ResolvedMetric, logits: Tensor): { perRow: Float32Array | null; total: number } {
  const [B, T, V] = logits.shape as [number, number, number];
  const x = logits.data;
  if (m.kind === 'function') {
    const { value } = m.fn(new Tensor(logits.shape, x.slice()));
    if (typeof value !== 'number') invalid('a custom metric function must return { value: number, grad: Tensor }');
    return { perRow: null, total: value };
  }
  const rows = new Float64Array(B);
  if (m.kind === 'dlogits') {
    const g = m.dlogits.data;
    for (let b = 0; b < B; b++) {
      let s = 0;
      for (let i = b * T * V; i < (b + 1) * T * V; i++) s += g[i]! * x[i]!;
      rows[b] = s;
    }
  } else {
    const lse = new Map<number, number>();
    const logSumExp = (o: number) => {
      let v = lse.get(o);
      if (v === undefined) {
        let max = -Infinity;
        for (let i = o; i < o + V; i++) max = Math.max(max, x[i]!);
        let z = 0;
        for (let i = o; i < o + V; i++) z += Math.exp(x[i]! - max);
        v = max + Math.log(z);
        lse.set(o, v);
      }
      return v;
    };
    for (const t of m.terms) {
      const o = (t.row * T + t.pos) * V;
      const w = t.weight ?? 1;
      if (t.kind === 0) rows[t.row]! += w * x[o + t.a]!;
      else if (t.kind === 1) rows[t.row]! += w * (x[o + t.a]! - x[o + t.b!]!);
      else rows[t.row]! += w * (x[o + t.a]! - logSumExp(o));
    }
  }
  return { perRow: Float32Array.from(rows), total: rows.reduce((s, v) => s + v, 0) };
}
