// Model.backward: a forward and a backward pass from a metric on the logits (or from seed
// gradients at hooks), with gradients at any hook, forward edits, gradient hooks (`<hook>_grad`)
// and stop-gradient masks. Everything is checked here before native code runs
// (native/api/backward-wrap.cc). Semantics: README "Gradients"; tests: test/backward-api.test.ts,
// test/backward.test.ts (against torch autograd).
import type { NativeBackwardOptions, NativeBackwardResult } from '../bindings/native.js';
import { InvalidInputError, UnknownHookError, wrapError } from '../errors.js';
import { makeDispatcher, type HookFunction, type HookSpec, type NativeAction } from '../hooks/edits.js';
import { suggestHooks, type Family, type HookPatternFor, type HookRecord } from '../hooks/names.js';
import { Tensor } from '../tensor.js';
import { ensureBackwardFits } from './memory.js';
import { resolveMetric, type Metric, type MetricContext, type ResolvedMetric } from './metric.js';
import { ActivationCache, type HookMap, type Model, type ModelInput } from './Model.js';
import { checkBoolean, checkInteger, checkObject, invalid, isObject, patternList } from './validate.js';

/** What `detach` freezes: attention patterns, norm scales (ln_final's included) and MLP nonlinearities. */
export type DetachKind = 'pattern' | 'normScale' | 'mlpAct';

/** Stop-gradient masks: kinds for every layer, or the layers of each kind (normScale layer nLayers is ln_final). */
export type DetachSpec = readonly DetachKind[] | { pattern?: readonly number[]; normScale?: readonly number[]; mlpAct?: readonly number[] };

/** Forward hooks by name, and gradient hooks by the hook's name with `_grad` appended. */
export type BackwardHookMap<F extends Family = Family> = HookMap<F> & HookRecord<F, HookSpec, '_grad'>;

/** Options for {@link Model.backward}. */
export interface BackwardOptions<F extends Family = Family> {
  /** What to differentiate ({@link Metric}). Exactly one of `metric` and `seeds`. */
  metric?: Metric;
  /**
   * Gradients at hook outputs to start the backward pass from (vector-Jacobian products), by
   * hook name: a Tensor of the hook's shape, or `[S, ...shape]` for S backward passes from one
   * forward (every seed then has the same S, and every gradient comes back as `[S, ...shape]`).
   * Seeds at several hooks add up. Exactly one of `metric` and `seeds`.
   */
  seeds?: HookRecord<F, Tensor>;
  /** Hook names or globs whose gradient d metric / d activation to return in `grads`. Defaults to none. */
  grads?: readonly HookPatternFor<F>[] | HookPatternFor<F>;
  /** Hook names or globs whose (forward) activations to return in `cache`, as in run(). Defaults to none. */
  capture?: readonly HookPatternFor<F>[] | HookPatternFor<F>;
  /**
   * Forward edits and JS functions by hook name (as in run(); a JS function is the identity in
   * the backward pass), and gradient hooks by `<hook>_grad`: edits and JS functions applied to the
   * gradient there before it flows on. Defaults to none.
   */
  hooks?: BackwardHookMap<F>;
  /** Stop-gradient masks ({@link DetachSpec}). Defaults to none. */
  detach?: DetachSpec;
  /** Run blocks `0 .. stopAtLayer - 1` only; needs `seeds` (the logits are not computed) and hooks in those blocks. Defaults to the whole model. */
  stopAtLayer?: number;
  /**
   * Bytes of block activations the forward keeps for the backward pass, so that the top blocks
   * that fit are not recomputed (faster); below them each block is recomputed from its saved
   * input. 0 keeps the top block's only: the least memory. Defaults to 1 GiB.
   */
  keepActivationBytes?: number;
  /** Return the logits `[batch, pos, vocab]`. Defaults to false. */
  returnLogits?: boolean;
  /** Add the tokenizer's special tokens when `input` is text. Defaults to true. */
  addSpecialTokens?: boolean;
  /** The token id that left-pads shorter rows (masked out; it reaches only the gradients at hook_pattern entries of padded keys). Defaults to 0. */
  padId?: number;
}

/** What {@link Model.backward} resolves to. */
export interface BackwardResult<F extends Family = Family> {
  /** The metric summed over rows; null with seeds. */
  metric: number | null;
  /** The metric per batch row; null with seeds and with a custom metric function. */
  metricPerRow: Float32Array | null;
  /** d metric / d activation by hook name, the activation's shape (`[S, ...shape]` with S-row seeds). */
  grads: ActivationCache<F>;
  /** Forward activations captured by `capture`. */
  cache: ActivationCache<F>;
  /** `[batch, pos, vocab]` with `returnLogits`, else null. */
  logits: Tensor | null;
  /** The token rows, left-padded to one length. */
  tokens: number[][];
  /** Left padding of each row. */
  pad: number[];
}

const DETACH_KINDS: readonly DetachKind[] = ['pattern', 'normScale', 'mlpAct'];
const OPTION_KEYS = new Set(['metric', 'seeds', 'grads', 'capture', 'hooks', 'detach', 'stopAtLayer', 'returnLogits', 'addSpecialTokens', 'padId', 'keepActivationBytes']);

/** Default of `keepActivationBytes`. */
export const DEFAULT_KEEP_ACTIVATION_BYTES = 2 ** 30;

const SPLIT_INPUT = /^blocks\.(\d+)\.hook_(attn_in|[qkv]_input)$/;
const LN1 = /^blocks\.(\d+)\.ln1\.hook_(scale|normalized)$/;

/**
 * Gradients at a block's per-head inputs (hook_attn_in, hook_q/k/v_input) give ln1 a head axis, so
 * they cannot be taken with ln1's in the same block. A glob that matches both (`'**'`,
 * `'blocks.*.*'`) keeps ln1's and leaves the per-head inputs out; named explicitly they stay (and
 * the engine refuses the pair).
 */
function withoutGlobbedSplitInputs(names: string[], patterns: readonly string[]): string[] {
  const explicit = new Set(patterns.filter((p) => !/[*?[{]/.test(p)));
  const ln1Blocks = new Set(names.map((n) => LN1.exec(n)?.[1]).filter((b) => b !== undefined));
  return names.filter((n) => {
    const block = SPLIT_INPUT.exec(n)?.[1];
    return block === undefined || explicit.has(n) || !ln1Blocks.has(block);
  });
}

/** Whether hook `name` runs when stopping before block `stop` (TransformerLens's exclusive stop). */
function reached(model: Model, name: string, stop: number | undefined): boolean {
  if (stop === undefined || stop >= model.config.nLayers) return true;
  if (name.startsWith('ln_final.') || name.startsWith('unembed.')) return false;
  const layer = model.hooks[model.hookIndex(name)!]!.layer;
  return layer < stop;
}

/** Per-layer masks for the engine, and whether ln_final's scale is detached. */
export function detachMasks(spec: unknown, nLayers: number): { detach: NonNullable<NativeBackwardOptions['detach']>; final: boolean } | undefined {
  if (spec === undefined) return undefined;
  const layers = Array.from({ length: nLayers }, () => ({ pattern: false, normScale: false, mlpAct: false }));
  let final = false;
  if (Array.isArray(spec)) {
    for (const k of spec) {
      if (!DETACH_KINDS.includes(k as DetachKind)) invalid(`detach: unknown kind ${JSON.stringify(k)} (pattern, normScale, mlpAct)`);
      for (const l of layers) l[k as DetachKind] = true;
      if (k === 'normScale') final = true;
    }
  } else if (isObject(spec)) {
    for (const [k, list] of Object.entries(spec)) {
      if (!DETACH_KINDS.includes(k as DetachKind)) invalid(`detach: unknown kind '${k}' (pattern, normScale, mlpAct)`);
      if (list === undefined) continue;
      if (!Array.isArray(list)) invalid(`detach.${k} must be a list of layers`);
      const max = k === 'normScale' ? nLayers : nLayers - 1;
      for (const l of list) {
        checkInteger(l, `detach.${k} layer`, 0, max);
        if (l === nLayers) final = true;
        else layers[l as number]![k as DetachKind] = true;
      }
    }
  } else {
    invalid("detach must be a list of 'pattern' | 'normScale' | 'mlpAct', or { pattern?, normScale?, mlpAct? } with layer lists");
  }
  return { detach: layers, final };
}

/** Throws UnknownHookError for gradient hook `name` (`<hook>_grad`), suggesting close `_grad` names. */
function unknownGradHook(model: Model, name: string): never {
  const close = suggestHooks(name.slice(0, -'_grad'.length), model.hookNames).map((h) => `${h}_grad`);
  throw new UnknownHookError('ERR_UNKNOWN_HOOK', `unknown gradient hook '${name}'; did you mean ${close.map((c) => `'${c}'`).join(', ')}?`, close);
}

/** @internal Rows left-padded with `padId` to the longest. */
export function leftPad(rows: readonly number[][], padId = 0): { tokens: number[][]; pad: number[] } {
  const T = rows.reduce((m, r) => Math.max(m, r.length), 0);
  const pad = rows.map((r) => T - r.length);
  return { tokens: rows.map((r, b) => [...Array<number>(pad[b]!).fill(padId), ...r]), pad };
}

/** @internal What resolveMetric needs: the rows, their padding, and strings turned into one token each. */
export function metricContext(model: Model, tokens: number[][], pad: number[]): MetricContext {
  return {
    tokens,
    pad,
    vocab: model.config.dVocab,
    tokenId: (text) => {
      const ids = model.tokenize(text, false)[0]!;
      if (ids.length !== 1)
        throw new InvalidInputError('ERR_INVALID_INPUT', `metric: ${JSON.stringify(text)} is ${ids.length} tokens (${JSON.stringify(ids)}), not one; pass a token id`);
      return ids[0]!;
    },
  };
}

/** @internal Model.backward's implementation. */
export async function runBackward<F extends Family>(model: Model<F>, input: ModelInput, opts: BackwardOptions<F>): Promise<BackwardResult<F>> {
  if (!isObject(opts)) invalid('backward options must be an object');
  const options = opts as BackwardOptions<F>;
  for (const k of Object.keys(options)) if (!OPTION_KEYS.has(k)) invalid(`backward: unknown option '${k}' (${[...OPTION_KEYS].join(', ')})`);
  const { nLayers, dVocab } = model.config;
  checkObject(options.hooks, 'hooks');
  checkObject(options.seeds, 'seeds');
  checkInteger(options.stopAtLayer, 'stopAtLayer', 0, nLayers);
  checkBoolean(options.returnLogits, 'returnLogits');
  checkBoolean(options.addSpecialTokens, 'addSpecialTokens');
  checkInteger(options.padId, 'padId', 0, dVocab - 1);
  const seedEntries = Object.entries(options.seeds ?? {}).filter(([, t]) => t !== undefined) as [string, Tensor][];
  if ((options.metric === undefined) === (seedEntries.length === 0)) invalid('backward: give exactly one of metric and seeds');
  const stop = options.stopAtLayer;
  const stopping = stop !== undefined && stop < nLayers;
  if (stopping && options.metric !== undefined) invalid(`backward: a metric reads the logits, which are not computed when stopping at layer ${stop}; give seeds instead`);
  if (stopping && options.returnLogits) invalid(`backward: logits are not computed when stopping at layer ${stop}`);
  const masks = detachMasks(options.detach, nLayers);

  const beyond = (what: string, name: string, hook = name) => {
    if (!reached(model, hook, stop)) invalid(`backward: ${what} '${name}' is not reached when stopping at layer ${stop}`);
  };

  // Hooks: gradients, captures, seeds, forward and gradient hooks.
  const gradPatterns = patternList(options.grads, 'grads').map((p) => p.replace(/_grad$/, ''));
  const gradNames = withoutGlobbedSplitInputs(model.resolveHooks(gradPatterns), gradPatterns);
  const captureNames = model.resolveHooks(patternList(options.capture, 'capture'));
  gradNames.forEach((n) => beyond('the gradient at', n));
  captureNames.forEach((n) => beyond('the capture of', n));
  const forwardHooks: Record<string, HookSpec> = {};
  const gradHooks: Record<string, HookSpec> = {};
  for (const [name, spec] of Object.entries(options.hooks ?? {})) {
    if (spec === undefined) continue;
    if (name.endsWith('_grad')) {
      const base = name.slice(0, -'_grad'.length);
      if (model.hookIndex(base) === undefined) unknownGradHook(model, name);
      beyond('the gradient hook', name, base);
      gradHooks[base] = spec as HookSpec;
    } else {
      if (model.hookIndex(name) !== undefined) beyond('the hook', name);
      forwardHooks[name] = spec as HookSpec;
    }
  }

  const keepBytes = options.keepActivationBytes ?? DEFAULT_KEEP_ACTIVATION_BYTES;
  if (!Number.isSafeInteger(keepBytes) || keepBytes < 0) invalid(`backward: keepActivationBytes must be a non-negative integer (got ${String(keepBytes)})`);
  // Memory is checked on the rows' shape, before the ids are copied and padded.
  const seedRows = seedEntries.map(([name, t]) => (t instanceof Tensor && model.hookIndex(name) !== undefined && t.shape.length === model.hookShape(name, 1, 1).length + 1 ? t.shape[0]! : 1));
  const rows = model.tokenRows(input, options.addSpecialTokens ?? true, (r) =>
    ensureBackwardFits(model, {
      batch: r.length,
      pos: r.reduce((m, x) => Math.max(m, x.length), 0),
      replicas: Math.max(1, ...seedRows),
      metric: options.metric !== undefined,
      returnLogits: options.returnLogits === true || (options.metric as { custom?: unknown } | undefined)?.custom instanceof Tensor,
      captures: captureNames,
      grads: gradNames,
      hooks: [...Object.keys(forwardHooks), ...Object.keys(gradHooks)],
      keepBytes,
    }),
  );
  const { tokens, pad } = leftPad(rows, options.padId);
  const B = tokens.length;
  const T = tokens[0]!.length;
  const padded = pad.some((p) => p > 0);

  let replicas = 1;
  let leading = false;
  const seeds: { index: number; data: Float32Array }[] = [];
  for (const [name, t] of seedEntries) {
    if (model.hookIndex(name) === undefined || /[*?]/.test(name)) {
      model.resolveHooks([name]);
      invalid(`seeds takes exact hook names, not patterns: '${name}'`);
    }
    beyond('the seed at', name);
    if (!(t instanceof Tensor)) invalid(`seeds['${name}'] must be a Tensor`);
    const shape = model.hookShape(name, B, T);
    const s = t.shape.length === shape.length + 1 ? t.shape[0]! : 1;
    const rest = t.shape.length === shape.length + 1 ? t.shape.slice(1) : t.shape;
    if (rest.join() !== shape.join() || s < 1)
      invalid(`the seed at '${name}' has shape [${t.shape.join(', ')}]; the activation is [${shape.join(', ')}] (or [S, ${shape.join(', ')}] for S backward passes)`);
    const withAxis = t.shape.length === shape.length + 1;
    if (seeds.length > 0 && (s !== replicas || withAxis !== leading))
      invalid(`every seed needs the same leading axis: the seed at '${name}' has shape [${t.shape.join(', ')}]`);
    replicas = s;
    leading = withAxis;
    for (const x of t.data) if (!Number.isFinite(x)) invalid(`the seed at '${name}' holds a non-finite value`);
    seeds.push({ index: model.hookIndex(name)!, data: t.data });
  }

  // The metric, in engine terms.
  let metric: ResolvedMetric | undefined;
  if (options.metric !== undefined) {
    metric = resolveMetric(options.metric, metricContext(model, tokens, pad));
  }

  const forward = model.hookActions(forwardHooks, B, T, T, T);
  const backward = model.hookActions(gradHooks, B, T, T, T);
  const offset = forward.fns.length;
  const gradActions: NativeAction[] = backward.actions.map((a) => (a.kind === 'callback' ? { ...a, id: a.id + offset } : a));
  const fns: { fn: HookFunction; hook: string }[] = [...forward.fns, ...backward.fns.map((f) => ({ ...f, hook: `${f.hook}_grad` }))];
  let fnValue: number | undefined;
  let metricCallbackId: number | undefined;
  if (metric?.kind === 'function') {
    const user = metric.fn;
    metricCallbackId = fns.length;
    fns.push({
      hook: 'logits',
      fn: (logits) => {
        const r = user(logits) as { value?: unknown; grad?: unknown } | undefined;
        if (!r || typeof r.value !== 'number' || !(r.grad instanceof Tensor))
          throw new InvalidInputError('ERR_HOOK_RETURN', 'a custom metric function must return { value: number, grad: Tensor }');
        if (r.grad.shape.join() !== logits.shape.join())
          throw new InvalidInputError('ERR_HOOK_RETURN', `the custom metric's grad has shape [${r.grad.shape.join(', ')}], the logits [${logits.shape.join(', ')}]`);
        // As a custom Tensor: a non-finite value or grad would make every gradient NaN.
        if (!Number.isFinite(r.value) || !r.grad.data.every(Number.isFinite))
          throw new InvalidInputError('ERR_HOOK_RETURN', `the custom metric function returned a non-finite ${Number.isFinite(r.value) ? 'grad' : 'value'}`);
        logits.data.set(r.grad.data);
        fnValue = r.value;
      },
    });
  }

  const wantLogits = options.returnLogits === true || metric?.kind === 'dlogits';
  const request: NativeBackwardOptions = {
    tokens: Int32Array.from(tokens.flat()),
    batch: B,
    pos: T,
    ...(padded ? { pad: Int32Array.from(pad) } : {}),
    captures: captureNames.map((n) => ({ index: model.hookIndex(n)! })),
    logits: wantLogits ? true : null,
    ...(stop !== undefined ? { stopAtLayer: stop } : {}),
    actions: forward.actions,
    ...(metric?.kind === 'terms' ? { terms: metric.terms } : {}),
    ...(metric?.kind === 'dlogits' ? { dlogits: metric.dlogits.data } : {}),
    ...(metricCallbackId !== undefined ? { metricCallbackId } : {}),
    ...(seeds.length ? { seeds, replicas } : {}),
    keepBytes,
    ...(masks ? { detach: masks.detach, finalNormScaleDetached: masks.final } : {}),
    gradCaptures: gradNames.map((n) => ({ index: model.hookIndex(n)! })),
    gradActions,
    ...(fns.length ? { dispatcher: makeDispatcher(fns) } : {}),
  };
  let result: NativeBackwardResult;
  try {
    result = await model.nativeHandle().backward(request);
  } catch (err) {
    throw wrapError(err);
  }

  const cache = new ActivationCache<F>();
  captureNames.forEach((n, i) => cache.set(n, new Tensor(model.hookShape(n, B, T), result.captures[i]!)));
  const grads = new ActivationCache<F>();
  gradNames.forEach((n, i) => {
    const shape = model.hookShape(n, B, T);
    grads.set(n, new Tensor(leading ? [replicas, ...shape] : shape, result.grads[i]!));
  });
  const logits = result.logits ? new Tensor([B, T, dVocab], result.logits) : null;
  let value: number | null = null;
  let perRow: Float32Array | null = null;
  if (metric?.kind === 'terms' && result.metricRows) {
    perRow = result.metricRows;
    value = perRow.reduce((s, v) => s + v, 0);
  } else if (metric?.kind === 'dlogits' && logits) {
    // The metric whose gradient is the given tensor: sum(dlogits * logits), per row.
    perRow = new Float32Array(B);
    const g = metric.dlogits.data;
    const n = T * dVocab;
    for (let b = 0; b < B; b++) {
      let s = 0;
      for (let i = b * n; i < (b + 1) * n; i++) s += g[i]! * logits.data[i]!;
      perRow[b] = s;
    }
    value = perRow.reduce((s, v) => s + v, 0);
  } else if (metric?.kind === 'function') {
    value = fnValue ?? null;
  }
  return { metric: value, metricPerRow: perRow, grads, cache, logits: options.returnLogits ? logits : null, tokens, pad };
}
