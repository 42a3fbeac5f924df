// Gradient-based attribution over Model.backward: attribution patching (a clean forward, one
// backward on the corrupted input, (clean - corrupted) . grad per hook) and integrated gradients
// (one backward over all interpolation steps, batched). Semantics: README "Gradients"; tests:
// test/backward.test.ts (against the same computation in torch autograd).
import { edits } from './hooks/edits.js';
import type { Family, HookKeyFor, HookPatternFor } from './hooks/names.js';
import { leftPad, metricContext } from './model/backward.js';
import { metricRows, resolveMetric, type Metric } from './model/metric.js';
import { ActivationCache, type Model, type ModelInput } from './model/Model.js';
import { checkBoolean, checkInteger, invalid, isObject, patternList } from './model/validate.js';
import { Tensor } from './tensor.js';

/** Options for {@link attributionPatching}. */
export interface AttributionPatchingOptions<F extends Family = Family> {
  /** What to attribute ({@link Metric}); evaluated on the clean input too. */
  metric: Metric;
  /** Hook names or globs to score. */
  hooks: readonly HookPatternFor<F>[] | HookPatternFor<F>;
  /** Add the tokenizer's special tokens when inputs are text. Defaults to true. */
  addSpecialTokens?: boolean;
}

/** What {@link attributionPatching} resolves to. */
export interface AttributionPatchingResult<F extends Family = Family> {
  /**
   * Per hook, (clean - corrupted) . d metric / d activation at the corrupted input, summed over
   * the last axis: `[batch, pos]` for `[batch, pos, width]` hooks, `[batch, pos, head]` for
   * per-head hooks; elementwise `[batch, head, pos, key_pos]` for hook_attn_scores / hook_pattern.
   */
  scores: ActivationCache<F>;
  /** The metric summed over rows at the clean and at the corrupted input. */
  metricClean: number;
  metricCorrupted: number;
}

/** Options for {@link integratedGradients}. */
export interface IntegratedGradientsOptions<F extends Family = Family> {
  /** The hook whose activation is attributed (an exact name). */
  hook: HookKeyFor<F>;
  /** What to attribute ({@link Metric}). */
  metric: Metric;
  /** The activation to integrate from, the hook's shape. Defaults to zeros. */
  baseline?: Tensor;
  /** Interpolation steps (midpoint rule), all in one batched backward pass. Defaults to 20. */
  steps?: number;
  /** Add the tokenizer's special tokens when the input is text. Defaults to true. */
  addSpecialTokens?: boolean;
}

/** What {@link integratedGradients} resolves to. */
export interface IntegratedGradientsResult {
  /** (x - baseline) * mean over steps of d metric / d activation, the hook's shape; sums to about metric - metricBaseline. */
  attributions: Tensor;
  /** The metric summed over rows at the input (x) and with the hook set to the baseline. */
  metric: number;
  metricBaseline: number;
}

const PER_ELEMENT = /\.hook_(attn_scores|pattern)$/;

/** (a - b) * g; a masked entry (-inf in both) scores 0. */
function diffTimes(a: number, b: number, g: number): number {
  const d = a - b;
  return Number.isNaN(d) || (!Number.isFinite(d) && g === 0) ? 0 : d * g;
}

/** Score of one hook: elementwise for attention scores and patterns, else summed over the last axis. */
function score(name: string, clean: Tensor, corrupted: Tensor, grad: Tensor): Tensor {
  if (PER_ELEMENT.test(name)) {
    const out = new Float32Array(grad.size);
    for (let i = 0; i < out.length; i++) out[i] = diffTimes(clean.data[i]!, corrupted.data[i]!, grad.data[i]!);
    return new Tensor(grad.shape, out);
  }
  const w = grad.shape[grad.shape.length - 1]!;
  const out = new Float32Array(grad.size / w);
  const a = clean.data, b = corrupted.data, g = grad.data;
  for (let u = 0; u < out.length; u++) {
    let s = 0;
    for (let i = u * w; i < (u + 1) * w; i++) {
      const d = a[i]! - b[i]!;
      s += d - d === 0 ? d * g[i]! : diffTimes(a[i]!, b[i]!, g[i]!);  // finite differences inline
    }
    out[u] = s;
  }
  return new Tensor(grad.shape.slice(0, -1), out);
}

/**
 * Attribution patching: a forward on `clean` capturing `hooks`, one backward pass on `corrupted`
 * (the metric, activations and gradients at `hooks`), and per hook (clean - corrupted) . grad, the
 * first-order estimate of what patching the clean activation in would change. `clean` and
 * `corrupted` need the same number of rows and row lengths.
 */
export async function attributionPatching<F extends Family>(
  model: Model<F>,
  clean: ModelInput,
  corrupted: ModelInput,
  options: AttributionPatchingOptions<NoInfer<F>>,
): Promise<AttributionPatchingResult<F>> {
  if (!isObject(options)) invalid('attributionPatching options must be an object');
  checkBoolean(options.addSpecialTokens, 'addSpecialTokens');
  const special = options.addSpecialTokens ?? true;
  const names = model.resolveHooks(patternList(options.hooks, 'hooks'));
  if (names.length === 0) invalid('attributionPatching: hooks names no hook');
  const cleanRows = model.tokenRows(clean, special);
  const corruptedRows = model.tokenRows(corrupted, special);
  if (cleanRows.length !== corruptedRows.length) invalid(`attributionPatching: clean has ${cleanRows.length} rows, corrupted ${corruptedRows.length}`);
  cleanRows.forEach((r, b) => {
    if (r.length !== corruptedRows[b]!.length) invalid(`attributionPatching: row ${b} has ${r.length} clean tokens but ${corruptedRows[b]!.length} corrupted ones`);
  });
  const { tokens, pad } = leftPad(cleanRows);
  const metric = resolveMetric(options.metric, metricContext(model, tokens, pad));
  const B = tokens.length;
  const T = tokens[0]!.length;
  // A metric that reads the last position only needs the LM head there (a fraction of the forward).
  const lastOnly = metric.kind === 'terms' && metric.terms.every((t) => t.pos === T - 1);
  const cleanRun = await model.forward({
    tokens: Int32Array.from(tokens.flat()),
    batch: B,
    pos: T,
    ...(pad.some((p) => p > 0) ? { pad: Int32Array.from(pad) } : {}),
    capture: names,
    logits: lastOnly ? 'last' : 'all',
    maxPositions: T,
  });
  const metricClean =
    metric.kind === 'terms' && lastOnly
      ? metricRows({ ...metric, terms: metric.terms.map((t) => ({ ...t, pos: 0 })) }, new Tensor([B, 1, model.config.dVocab], cleanRun.logits!.data)).total
      : metricRows(metric, cleanRun.logits!).total;
  const back = await model.backward(corruptedRows, { metric: options.metric, grads: names, capture: names, addSpecialTokens: special });
  const scores = new ActivationCache<F>();
  for (const n of names) scores.set(n, score(n, cleanRun.cache.get(n), back.cache.get(n), back.grads.get(n)));
  return { scores, metricClean, metricCorrupted: back.metric! };
}

/** `metric` for `steps` copies of each of `batch` rows (row b's copies adjacent). */
function replicateMetric(metric: Metric, batch: number, steps: number): Metric {
  const expand = <T>(v: T): T => (Array.isArray(v) ? (v.flatMap((t) => Array<unknown>(steps).fill(t)) as T) : v);
  if (!isObject(metric)) return metric;
  const [key, spec] = Object.entries(metric)[0] ?? [];
  if (key === 'custom' && spec instanceof Tensor) {
    const n = spec.size / batch;
    const out = new Float32Array(spec.size * steps);
    for (let b = 0; b < batch; b++) for (let k = 0; k < steps; k++) out.set(spec.data.subarray(b * n, (b + 1) * n), (b * steps + k) * n);
    return { custom: new Tensor([batch * steps, ...spec.shape.slice(1)], out) };
  }
  if ((key === 'logit' || key === 'logProb') && isObject(spec)) return { [key]: { ...spec, token: expand(spec.token) } } as Metric;
  if (key === 'logitDiff' && isObject(spec)) return { logitDiff: { ...spec, correct: expand(spec.correct), wrong: expand(spec.wrong) } } as Metric;
  return metric;
}

/**
 * Integrated gradients at one hook: the activation x (one forward), then one backward pass over
 * `steps` copies of each row with the hook patched to baseline + alpha_k (x - baseline),
 * alpha_k = (k + 0.5) / steps; attribution = (x - baseline) * the mean gradient. Also returns the
 * metric at x and at the baseline (completeness: the attributions sum to about their difference).
 */
export async function integratedGradients<F extends Family>(model: Model<F>, input: ModelInput, options: IntegratedGradientsOptions<NoInfer<F>>): Promise<IntegratedGradientsResult> {
  if (!isObject(options)) invalid('integratedGradients options must be an object');
  checkInteger(options.steps, 'steps', 1);
  checkBoolean(options.addSpecialTokens, 'addSpecialTokens');
  const steps = options.steps ?? 20;
  const special = options.addSpecialTokens ?? true;
  const hook = options.hook;
  if (typeof hook !== 'string' || /[*?]/.test(hook)) invalid('integratedGradients: hook must be one exact hook name');
  model.resolveHooks([hook]);  // throws ERR_UNKNOWN_HOOK with suggestions
  const rows = model.tokenRows(input, special);
  const { tokens, pad } = leftPad(rows);
  const B = tokens.length;
  const T = tokens[0]!.length;
  const shape = model.hookShape(hook, B, T);
  const baseline = options.baseline ?? new Tensor(shape, new Float32Array(shape.reduce((a, b) => a * b, 1)));
  if (!(baseline instanceof Tensor) || baseline.shape.join() !== shape.join())
    invalid(`integratedGradients: the baseline must be a Tensor of the hook's shape [${shape.join(', ')}]`);
  const metric = resolveMetric(options.metric, metricContext(model, tokens, pad));
  const common = {
    tokens: Int32Array.from(tokens.flat()),
    batch: B,
    pos: T,
    ...(pad.some((p) => p > 0) ? { pad: Int32Array.from(pad) } : {}),
    logits: 'all' as const,
    maxPositions: T,
  };
  const atX = await model.forward({ ...common, capture: [hook] });
  const x = atX.cache.get(hook);
  const atBaseline = await model.forward({ ...common, capture: [], hooks: { [hook]: edits.patch(baseline) } });

  // Row b * steps + k holds baseline + alpha_k (x - baseline) of row b.
  const n = x.size / B;
  const path = new Float32Array(x.size * steps);
  for (let b = 0; b < B; b++)
    for (let k = 0; k < steps; k++) {
      const alpha = (k + 0.5) / steps;
      const o = (b * steps + k) * n;
      for (let i = 0; i < n; i++) {
        const base = baseline.data[b * n + i]!;
        const d = x.data[b * n + i]! - base;
        path[o + i] = Number.isFinite(d) ? base + alpha * d : x.data[b * n + i]!;
      }
    }
  const replicated = rows.flatMap((r) => Array.from({ length: steps }, () => r));
  const back = await model.backward(replicated, {
    metric: replicateMetric(options.metric, B, steps),
    grads: [hook],
    hooks: { [hook]: edits.patch(new Tensor([B * steps, ...shape.slice(1)], path)) } as never,
    addSpecialTokens: special,
  });
  const grad = back.grads.get(hook).data;
  // A mean over every row (loss) is spread over steps x as many rows: its gradients are 1/steps.
  const scale = metric.kind === 'terms' && metric.loss ? 1 : 1 / steps;
  const attr = new Float32Array(x.size);
  for (let b = 0; b < B; b++)
    for (let i = 0; i < n; i++) {
      let g = 0;
      for (let k = 0; k < steps; k++) g += grad[(b * steps + k) * n + i]!;
      attr[b * n + i] = diffTimes(x.data[b * n + i]!, baseline.data[b * n + i]!, g * scale);
    }
  return {
    attributions: new Tensor(shape, attr),
    metric: metricRows(metric, atX.logits!).total,
    metricBaseline: metricRows(metric, atBaseline.logits!).total,
  };
}
