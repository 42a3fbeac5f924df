// The public Model: runs instrumented forwards off the JS thread (with edits, JS hooks and
// captures) and generates with a KV cache; loadModel (model/load.ts) makes one. Tests:
// test/model.test.ts, test/interventions.test.ts, test/generate.test.ts.
import { backendDir, native, type NativeConfig, type NativeHookInfo, type NativeKvCache, type NativeModel, type NativeRunOptions, type NativeRunResult, type NativeSampleOptions } from '../bindings/native.js';
import { processCudaLibraryDirs } from '../bindings/cuda-libs.js';
import { DisposedError, InvalidInputError, wrapError } from '../errors.js';
import { editToAction, makeDispatcher, type Edit, type HookFunction, type HookGeometry, type HookSpec, type NativeAction } from '../hooks/edits.js';
import { resolveHooks, SAE_HOOKS, type Family, type CompletedHookRecord, type HookKeyFor, type HookNameFor, type HookPatternFor, type HookRecord, type SaeHookSuffix } from '../hooks/names.js';
import type { Sae } from '../sae/Sae.js';
import { Tensor } from '../tensor.js';
import { Tokenizer } from '../tokenizer.js';
import { extractBatches, type ExtractBatch, type ExtractOptions } from '../extract/extract.js';
import type { Document, SourceSpec } from '../extract/sources.js';
import { abortable, type LoadProgress } from './task.js';
import { checkGenerateOptions, generateSteps, type GenerateOptions, type GenerateResult, type GenerateStep } from '../generate/generate.js';
import { runBackward, type BackwardOptions, type BackwardResult } from './backward.js';
import { ensureForwardFits, ensureGenerateFits } from './memory.js';
import { saeReadouts } from './sae-readouts.js';
import { checkBoolean, checkExtractOptions, checkTokenId, checkInteger, checkObject, checkRunOptions, invalid, isObject, patternList, tokenRow } from './validate.js';

export { loadModel } from './load.js';

/** Options for {@link loadModel}. */
export interface LoadModelOptions<F extends Family = Family> {
  /** Compute device. `'cuda'` needs the CUDA backend library (built by `neurotap build-cuda`; docs/gpu.md) and a GPU; `'auto'` takes the GPU when that works, else the CPU. Defaults to `'cpu'`. */
  device?: 'cpu' | 'cuda' | 'auto';
  /** Weight dtype on the device; activations are float32, and so is the arithmetic unless `compute` says otherwise. On the CPU, `'bf16'` stores the weight matrices (embeddings, linears, LM head) in bfloat16 (rounded to nearest even from an f32 checkpoint) and widens them exactly in the kernels; norms and biases stay f32. `'f16'` is CUDA only. Defaults to `'f32'`. */
  dtype?: 'f32' | 'f16' | 'bf16';
  /** The GEMMs' numeric policy (README "bf16 compute"). `'bf16'` (CPU, with `dtype: 'bf16'`) rounds each GEMM's input activations to bfloat16 (nearest even) and multiplies them with the bf16 weights, products and sums in f32, outputs f32, on the AVX512_BF16 or AMX units where the CPU has them; norms, softmax, attention and residual adds stay f32. `'f32'` keeps exact f32 arithmetic. On CUDA the GEMM rounds activations to the weight dtype, so only that is accepted there. Defaults to `'f32'` on the CPU and the weight dtype on CUDA. */
  compute?: 'f32' | 'bf16';
  /** Worker threads for the forward pass. Defaults to `os.availableParallelism()`. */
  threads?: number;
  /** Expected family: types the model's hook names and is checked against config.json. Defaults to any family. */
  family?: F;
  /** Aborts the load between tensors; it then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called as the weights are read (every 50 ms or so while bytes arrive, and once at the end with `loadedBytes === totalBytes`). Whatever it throws aborts the load and becomes the rejection. */
  onProgress?: (progress: LoadProgress) => void;
}

/** Model input: token ids (`number[][]`, one array per sequence) or text. */
export type ModelInput = readonly (readonly number[])[] | string | readonly string[];

/** Edits and JS functions by hook name; a misspelled name does not compile. */
export type HookMap<F extends Family = Family> = CompletedHookRecord<F, HookSpec>;

/** Options for {@link Model.run}. */
export interface RunOptions<F extends Family = Family> {
  /** Hook names or globs to capture, e.g. `['blocks.*.hook_resid_post']` (one string is one pattern). Captures see activations after any edits at the same hook. Defaults to none. */
  capture?: readonly HookPatternFor<F>[] | HookPatternFor<F>;
  /** Edits and JS hook functions by hook name, applied in the order given. Defaults to none. */
  hooks?: HookMap<F>;
  /** Preallocated Float32Arrays to capture into, keyed by hook name (each must have the hook's exact size); these hooks are captured even if `capture` omits them. Defaults to fresh arrays. */
  outputs?: HookRecord<F, Float32Array>;
  /** Compute logits: `true` for every position, `'last'` for the last position only (`[batch, vocab]`; the LM head runs on one row per sequence), `false` to skip the LM head. Defaults to true. */
  returnLogits?: boolean | 'last';
  /** Preallocated Float32Array for logits, `batch * pos * vocab` long (`batch * vocab` with `'last'`). Defaults to a fresh array. */
  logitsOutput?: Float32Array;
  /** Add the tokenizer's special tokens when `input` is text. Defaults to true. */
  addSpecialTokens?: boolean;
  /** Run only blocks `0 .. stopAtLayer - 1` (exclusive, as TransformerLens): no logits, no later hooks. Defaults to running the whole model. */
  stopAtLayer?: number;
  /** Sparse SAE features: the `k` largest `hook_sae_acts_post` values per token of each attached SAE (or of the SAEs at `hooks`), in `result.features`. Defaults to none. */
  saeFeatures?: { k: number; hooks?: readonly HookKeyFor<F>[] };
  /** Where rows shorter than the longest are padded: `'left'` (masked out, positions count from each row's first real token, as `generate`) or `'right'` (after the last real token, which causal attention never reads). Defaults to `'left'`. */
  padding?: 'left' | 'right';
  /** The token id that pads shorter rows. Defaults to 0. */
  padId?: number;
  /** Aborts the run between blocks; it then rejects with the signal's reason and the model stays usable. */
  signal?: AbortSignal;
}

/** The k largest SAE feature activations per token, `[batch, pos, k]`, largest first (ties: lower index). */
export interface SparseFeatures {
  k: number;
  shape: [number, number, number];
  indices: Int32Array;
  values: Float32Array;
}

/** Feature density of one SAE over a corpus ({@link Model.featureDensity}). */
export interface FeatureDensity {
  /** Real (unpadded) tokens seen. */
  tokens: number;
  /** Per feature, tokens on which it fired (acts_post > 0). */
  counts: Float64Array;
  /** counts / tokens. */
  density: Float64Array;
}

/** Activations captured by a run, keyed by hook name (typed by the model's family). */
export class ActivationCache<F extends Family = Family> extends Map<string, Tensor> {
  /** The activation captured at `name`; throws if it was not captured. */
  override get(name: HookKeyFor<F>): Tensor {
    const t = super.get(name);
    if (!t) throw new InvalidInputError('ERR_INVALID_INPUT', `'${name}' was not captured in this run (captured: ${[...this.keys()].join(', ') || 'none'})`);
    return t;
  }
}

/** What {@link Model.run} resolves to. */
export interface RunResult<F extends Family = Family> {
  /** `[batch, pos, vocab]` (`[batch, vocab]` with `returnLogits: 'last'`), or null when `returnLogits` was false. */
  logits: Tensor | null;
  /** Captured activations by hook name. */
  cache: ActivationCache<F>;
  /** The token ids that were run, `[batch][pos]`, shorter rows padded with `padId`. */
  tokens: number[][];
  /** Pad tokens in each row: `tokens[b]` holds them first (`padding: 'left'`) or last (`'right'`). Activations and logits at padded positions are those of the pad token and mean nothing. */
  pad: number[];
  /** The side `pad` counts: the `padding` option, `'left'` by default. */
  padding: 'left' | 'right';
  /** Sparse SAE features by SAE hook (with `saeFeatures`); empty otherwise. */
  features: Map<string, SparseFeatures>;
}

/** Shape and name of one hook point. */
export interface HookInfo {
  name: string;
  /** -1 for model-level hooks. */
  layer: number;
  /** Symbolic shape: 'batch', 'pos' (this forward's positions) and 'key_pos' (positions attended to). */
  shape: readonly (number | 'batch' | 'pos' | 'key_pos')[];
}

/** Normalized model configuration. */
export type ModelConfig = Omit<NativeConfig, 'threads' | 'device' | 'deviceName' | 'dtype' | 'compute'>;

/** Whether a backend can run here, and if not, why (e.g. no CUDA library, driver or GPU). */
export function probeDevice(device: 'cuda'): { available: boolean; reason: string; device: string } {
  return native().probeBackend(device, backendDir(), processCudaLibraryDirs());
}

/** @internal One native forward as Model.run and generation issue it. */
export interface ForwardRequest {
  tokens: Int32Array;
  batch: number;
  pos: number;
  pad?: Int32Array;
  cache?: NativeKvCache;
  capture: readonly string[] | string;
  outputs?: Partial<Record<string, Float32Array>>;
  hooks?: Partial<Record<string, HookSpec>>;
  logits: 'all' | 'last' | 'none';
  logitsOutput?: Float32Array;
  /** Positions an edit's selection may name. */
  maxPositions: number;
  /** The caller already ran ensureForwardFits on this request (Model.run does, before copying the ids). */
  fitsChecked?: boolean;
  /** Run blocks [0, stopAtLayer) only. */
  stopAtLayer?: number;
  /** Trailing pad tokens per row (right-padded rows, no cache or left padding). */
  rightPad?: Int32Array;
  /** Aborts the forward between blocks (rejecting with the signal's reason). */
  signal?: AbortSignal;
  /** Top-k (k >= 1) and/or firing counts (`counts`, over the rows with `rows[r] != 0`) of attached SAEs. */
  saeFeatures?: { k?: number; hooks?: readonly string[]; counts?: boolean; rows?: Uint8Array };
  /** Sample each row's next token in the engine from the last-position logits (needs logits 'last' or 'none'); the ids come back as `sampled`. */
  sample?: NativeSampleOptions;
  /** Native edit actions already translated by {@link Model.hookActions} for this batch (applied after `hooks`' own). */
  actions?: readonly NativeAction[];
}

/** Options for {@link Model.attachSae}. */
export interface AttachSaeOptions<F extends Family = Family> {
  /** Hook to attach at. Defaults to the SAE's hook_name. */
  hook?: HookKeyFor<F>;
  /** Keep SAELens's error term (x - reconstruction) so only feature edits change the model. Defaults to false. */
  useErrorTerm?: boolean;
}

/** An SAE attached to a model. */
export interface AttachedSae<F extends Family = Family> {
  hook: HookNameFor<F>;
  sae: Sae;
  useErrorTerm: boolean;
  /** Its hook names: `hooks.hook_sae_acts_post` is `<hook>.hook_sae_acts_post`. */
  hooks: Record<SaeHookSuffix, HookNameFor<F>>;
}

/** A loaded model. Dispose it (or `await using`) to free its weights. */
export class Model<F extends Family = Family> {
  readonly config: ModelConfig;
  /** Every hook name of this model, in forward order, then the hooks of attached SAEs. */
  get hookNames(): readonly HookNameFor<F>[] {
    return this.table.names;
  }
  /** Hook names with their symbolic shapes. */
  get hooks(): readonly HookInfo[] {
    return this.table.hooks;
  }
  /** The model's tokenizer, or null when the directory has no tokenizer.json. */
  readonly tokenizer: Tokenizer | null;
  /** Worker threads used by the forward pass. */
  readonly threads: number;
  /** The backend the model runs on, its device name, and the weight dtype there. */
  readonly device: 'cpu' | 'cuda';
  readonly deviceName: string;
  readonly dtype: 'f32' | 'f16' | 'bf16';
  /** What GEMM inputs are rounded to ({@link LoadModelOptions.compute}): `'f32'` is exact f32 arithmetic. */
  readonly compute: 'f32' | 'f16' | 'bf16';
  private handle: NativeModel | null;
  private table: { hooks: readonly HookInfo[]; names: readonly HookNameFor<F>[]; index: Map<string, number> };
  private readonly attached = new Map<string, AttachedSae<F>>();

  /** @internal Use {@link loadModel}. */
  constructor(
    readonly dir: string,
    handle: NativeModel,
    tokenizer: Tokenizer | null,
  ) {
    this.handle = handle;
    const { threads, device, deviceName, dtype, compute, ...config } = handle.config();
    this.config = config;
    this.threads = threads;
    this.device = device;
    this.deviceName = deviceName;
    this.dtype = dtype;
    this.compute = compute;
    this.table = Model.readTable<F>(handle);
    this.tokenizer = tokenizer;
  }

  /** True once {@link dispose} has been called. */
  get disposed(): boolean {
    return this.handle === null;
  }

  private static readTable<F extends Family>(handle: NativeModel): { hooks: readonly HookInfo[]; names: readonly HookNameFor<F>[]; index: Map<string, number> } {
    const hooks: NativeHookInfo[] = handle.hooks();
    return { hooks, names: hooks.map((h) => h.name as HookNameFor<F>), index: new Map(hooks.map((h, i) => [h.name, i])) };
  }

  /**
   * Attaches an SAE at `hook` (defaults to the SAE's hook_name): from then on every run and
   * generation passes that activation through the SAE, and its hooks
   * `<hook>.hook_sae_input / acts_pre / acts_post / recons / error / output` can be captured and
   * edited. With `useErrorTerm` the downstream computation is unchanged unless a feature is edited
   * (SAELens's error term); without it the activation is replaced by the reconstruction.
   * Throws InvalidInputError ERR_SAE_MISMATCH when d_in is not the hook's width.
   */
  async attachSae(sae: Sae, options: AttachSaeOptions<F> = {}): Promise<AttachedSae<F>> {
    const handle = this.live();
    checkObject(options, 'attachSae options');
    if (options.hook !== undefined && typeof options.hook !== 'string') invalid('attachSae: hook must be a hook name');
    checkBoolean(options.useErrorTerm, 'useErrorTerm');
    const hook = options.hook ?? sae.cfg.hookName;
    if (!hook) throw new InvalidInputError('ERR_INVALID_INPUT', 'this SAE does not name its hook; pass { hook }');
    const index = this.table.index.get(hook);
    if (index === undefined || hook.includes('.hook_sae_')) {
      resolveHooks([hook], this.hookNames);  // throws UnknownHookError with suggestions
      throw new InvalidInputError('ERR_INVALID_INPUT', `SAEs attach to the model's own hooks, not '${hook}'`);
    }
    const rank = this.hookShape(hook, 1, 1, 1).length;
    if (sae.cfg.reshapeActivations === 'hook_z' && rank !== 4)
      throw new InvalidInputError('ERR_SAE_MISMATCH', `the SAE flattens heads (reshape_activations hook_z) but '${hook}' has no head axis`);
    if (sae.cfg.reshapeActivations !== 'hook_z' && rank === 4)
      throw new InvalidInputError('ERR_SAE_MISMATCH', `'${hook}' is per head: attach an SAE with reshape_activations hook_z (heads flattened)`);
    const useErrorTerm = options.useErrorTerm ?? false;
    try {
      await handle.attachSae(index, sae.toNative(), useErrorTerm);
    } catch (err) {
      throw wrapError(err);
    }
    this.table = Model.readTable<F>(handle);
    const names = Object.fromEntries(SAE_HOOKS.map((s) => [s, `${hook}.${s}`])) as Record<SaeHookSuffix, HookNameFor<F>>;
    const a: AttachedSae<F> = { hook: hook as HookNameFor<F>, sae, useErrorTerm, hooks: names };
    this.attached.set(hook, a);
    return a;
  }

  /** Detaches the SAE at `hook` (its hooks disappear). */
  async detachSae(hook: HookKeyFor<F>): Promise<void> {
    const handle = this.live();
    const index = this.table.index.get(hook);
    if (index === undefined || !this.attached.has(hook)) throw new InvalidInputError('ERR_INVALID_INPUT', `no SAE is attached at '${hook}'`);
    try {
      await handle.detachSae(index);
    } catch (err) {
      throw wrapError(err);
    }
    this.attached.delete(hook);
    this.table = Model.readTable<F>(handle);
  }

  /** The attached SAEs by hook. */
  get saes(): ReadonlyMap<string, AttachedSae<F>> {
    return this.attached;
  }

  /** Concrete shape of a hook for `batch` sequences of `pos` new tokens attending to `keyPos` positions. */
  hookShape(name: string, batch: number, pos: number, keyPos = pos): number[] {
    checkInteger(batch, 'batch', 0);
    checkInteger(pos, 'pos', 0);
    checkInteger(keyPos, 'keyPos', 0);
    const i = this.table.index.get(name);
    if (i === undefined) resolveHooks([name], this.hookNames);  // throws with suggestions
    return this.hooks[i!]!.shape.map((d) => (d === 'batch' ? batch : d === 'pos' ? pos : d === 'key_pos' ? keyPos : d));
  }

  /** Tokenizes text (or a batch of texts) into one id array per text. */
  tokenize(text: string | readonly string[], addSpecialTokens = true): number[][] {
    if (!this.tokenizer) throw new InvalidInputError('ERR_NO_TOKENIZER', `no tokenizer.json in ${this.dir}; pass token ids instead of text`);
    if (typeof text !== 'string' && !(Array.isArray(text) && text.every((t) => typeof t === 'string'))) invalid('tokenize takes a string or an array of strings');
    checkBoolean(addSpecialTokens, 'addSpecialTokens');
    const texts = typeof text === 'string' ? [text] : text;
    return texts.map((t) => this.tokenizer!.encode(t, { addSpecialTokens }));
  }

  /**
   * Runs a forward pass off the JS thread, applying `hooks` (edits and JS functions) and
   * capturing `capture`. Rows of different lengths are padded (`padding`, `padId`); each row's
   * real positions come out as if it ran alone. Throws InvalidInputError for an empty batch, a bad token id,
   * option or edit, UnknownHookError for a hook name that does not exist, OutOfMemoryError for a
   * batch that cannot fit (before allocating), DisposedError after dispose(); a JS hook that
   * throws rejects the run with what it threw.
   */
  async run(input: ModelInput, options: RunOptions<F> = {}): Promise<RunResult<F>> {
    checkRunOptions(options, this.config.nLayers);
    const want = options.returnLogits ?? (options.stopAtLayer === undefined || options.stopAtLayer >= this.config.nLayers);
    const request: Omit<ForwardRequest, 'tokens' | 'batch' | 'pos' | 'maxPositions'> = {
      capture: patternList(options.capture, 'capture'),
      ...(options.outputs ? { outputs: options.outputs as Record<string, Float32Array> } : {}),
      ...(options.hooks ? { hooks: options.hooks as Record<string, HookSpec> } : {}),
      logits: want === 'last' ? 'last' : want ? 'all' : 'none',
      ...(options.stopAtLayer !== undefined ? { stopAtLayer: options.stopAtLayer } : {}),
      ...(options.logitsOutput ? { logitsOutput: options.logitsOutput } : {}),
      ...(options.saeFeatures ? { saeFeatures: options.saeFeatures } : {}),
    };
    // Shapes and memory are checked before the ids are copied or flattened.
    const rows = this.tokenRows(input, options.addSpecialTokens ?? true, (rows) => {
      ensureForwardFits(this, 'this run', { ...request, batch: rows.length, pos: rows.reduce((m, r) => Math.max(m, r.length), 0) });
    });
    const padId = options.padId ?? 0;
    checkInteger(options.padId, 'padId', 0, this.config.dVocab - 1);
    const right = options.padding === 'right';
    const batch = rows.length;
    const pos = rows.reduce((m, r) => Math.max(m, r.length), 0);
    const pad = rows.map((r) => pos - r.length);
    const padded = pad.some((p) => p > 0);
    if (padded && right) refuseLastEdits(options.hooks);
    const fill = (n: number) => Array<number>(n).fill(padId);
    const tokens = rows.map((r, b) => (right ? [...r, ...fill(pad[b]!)] : [...fill(pad[b]!), ...r]));
    const side = padded ? (right ? { rightPad: Int32Array.from(pad) } : { pad: Int32Array.from(pad) }) : {};
    const { logits, cache, features } = await this.forward({
      ...request,
      ...side,
      ...(options.signal ? { signal: options.signal } : {}),
      tokens: Int32Array.from(tokens.flat()),
      batch,
      pos,
      maxPositions: pos,
      fitsChecked: true,
    });
    return { logits, cache, tokens, pad, padding: right ? 'right' : 'left', features };
  }

  /**
   * A forward and a backward pass: gradients of `metric` (or of `seeds` at hooks) with respect to
   * the activations at `grads`, with forward edits, gradient hooks (`<hook>_grad`) and
   * stop-gradient masks (README "Gradients"). Rows of different lengths are left-padded. Throws
   * InvalidInputError (bad metric token or position, seed shape, hook past stopAtLayer),
   * UnknownHookError, OutOfMemoryError (before allocating); the model stays usable.
   */
  async backward(input: ModelInput, options: BackwardOptions<F>): Promise<BackwardResult<F>> {
    return runBackward(this, input, options);
  }

  /**
   * Generates up to `maxNewTokens` per sequence with a KV cache (prompts of different lengths
   * are left-padded), applying hooks and captures at every step. Resolves to the prompts with
   * their new tokens.
   */
  async generate(input: ModelInput, options: GenerateOptions<F>): Promise<GenerateResult> {
    const it = this.generateStream(input, options);
    for (;;) {
      const next = await it.next();
      if (next.done) return next.value;
    }
  }

  /** Like {@link generate}, streaming one step (a token per sequence) at a time. */
  generateStream(input: ModelInput, options: GenerateOptions<F>): AsyncGenerator<GenerateStep, GenerateResult> {
    checkGenerateOptions(options, this.config.dVocab);
    const prompts = this.tokenRows(input, options.addSpecialTokens ?? true, (rows) => ensureGenerateFits(this, rows, options));
    return generateSteps(this, prompts, options);
  }

  /**
   * Streams activations over a corpus: documents are read, tokenized and packed into
   * `seqLen` windows ahead of the forward (bounded), batched, run, and yielded with their
   * tokens. Iterating slowly applies backpressure; breaking out stops the pipeline.
   */
  async *extract(source: SourceSpec | AsyncIterable<Document>, options: ExtractOptions<F>): AsyncGenerator<ExtractBatch<F>> {
    checkExtractOptions(options, this.config.nLayers);
    const hooks = patternList(options.hooks, 'hooks');
    if (isObject(source) && Symbol.asyncIterator in source) source = checkedDocuments(source as AsyncIterable<Document>, this.config.dVocab);
    yield* extractBatches(this, source, { ...options, hooks });
  }

  /**
   * Feature density of the attached SAEs over a corpus (through {@link extract}): per SAE hook,
   * the fraction of real tokens on which each feature fires (acts_post > 0), as SAELens's
   * feature sparsity. Features are counted natively; nothing dense leaves the engine.
   */
  async featureDensity(
    source: SourceSpec | AsyncIterable<Document>,
    options: Omit<ExtractOptions<F>, 'hooks' | 'featureCounts'> & { hooks?: readonly HookKeyFor<F>[] },
  ): Promise<Map<string, FeatureDensity>> {
    const { hooks, ...rest } = options;
    const out = new Map<string, FeatureDensity>();
    for await (const b of this.extract(source, { ...rest, hooks: [], featureCounts: hooks ? { hooks } : true })) {
      const tokens = b.lengths.reduce((s, n) => s + n, 0);
      for (const [h, c] of b.featureCounts!) {
        let d = out.get(h);
        if (!d) out.set(h, (d = { tokens: 0, counts: new Float64Array(c.length), density: new Float64Array(c.length) }));
        d.tokens += tokens;
        for (let j = 0; j < c.length; j++) d.counts[j]! += c[j]!;
      }
    }
    for (const d of out.values()) for (let j = 0; j < d.counts.length; j++) d.density[j] = d.tokens ? d.counts[j]! / d.tokens : 0;
    return out;
  }

  /** Frees the model's native memory. Runs already started finish first; later calls throw DisposedError. */
  dispose(): void {
    this.handle?.dispose();
    this.handle = null;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }

  /** @internal A KV cache for `batch` sequences of up to `capacity` positions. */
  createCache(batch: number, capacity: number): NativeKvCache {
    try {
      return this.live().createCache(batch, capacity);
    } catch (err) {
      throw wrapError(err);
    }
  }

  /**
   * Resolves hook names and globs (`*`, `**`, `?`) to this model's hook names, in forward order.
   * Globs select only hooks that exist in the current configuration: not the `hook_sae_error` of
   * an SAE attached without its error term (naming it explicitly is a coded error at run time).
   * Throws UnknownHookError (ERR_UNKNOWN_HOOK) for an unknown name or a glob matching nothing.
   */
  resolveHooks(patterns: readonly HookPatternFor<F>[]): HookNameFor<F>[] {
    const absent = new Set([...this.attached.values()].filter((a) => !a.useErrorTerm).map((a) => a.hooks.hook_sae_error));
    const globNames = absent.size === 0 ? this.hookNames : this.hookNames.filter((h) => !absent.has(h));
    return resolveHooks(patterns, this.hookNames, globNames) as HookNameFor<F>[];
  }

  /** @internal One native forward with hooks and captures. */
  async forward(req: ForwardRequest): Promise<{ logits: Tensor | null; sampled: Int32Array | null; cache: ActivationCache; features: Map<string, SparseFeatures>; featureCounts: Map<string, Uint32Array> }> {
    const handle = this.live();
    const { batch, pos } = req;
    const keyPos = (req.cache?.length ?? 0) + pos;
    checkInteger(req.stopAtLayer, 'stopAtLayer', 0, this.config.nLayers);
    const names = this.resolveHooks([...patternList(req.capture, 'capture'), ...Object.keys(req.outputs ?? {})]);
    if (!req.fitsChecked) ensureForwardFits(this, 'this forward', { ...req, keyPos }, names);
    const { actions, fns } = this.hookActions(req.hooks ?? {}, batch, pos, keyPos, req.maxPositions);
    if (req.actions) actions.push(...req.actions);
    const { features, featureCounts, nativeFeatures } = saeReadouts(req.saeFeatures, this.attached, this.table.index, batch, pos);
    const V = this.config.dVocab;
    let result: NativeRunResult;
    const task = abortable(req.signal);
    try {
      result = await handle.run({
        tokens: req.tokens,
        batch,
        pos,
        ...(req.pad ? { pad: req.pad } : {}),
        ...(req.rightPad ? { rightPad: req.rightPad } : {}),
        ...(task.control ? { control: task.control } : {}),
        ...(req.cache ? { cache: req.cache } : {}),
        captures: names.map((n) => ({ index: this.table.index.get(n)!, ...(req.outputs?.[n] ? { buffer: req.outputs[n] } : {}) })),
        logits: req.logits === 'none' ? null : (req.logitsOutput ?? true),
        logitsLastOnly: req.logits === 'last' || (req.sample !== undefined && req.logits === 'none'),
        ...(req.sample ? { sample: req.sample } : {}),
        ...(req.stopAtLayer !== undefined ? { stopAtLayer: req.stopAtLayer } : {}),
        actions,
        ...(nativeFeatures.length ? { saeFeatures: nativeFeatures } : {}),
        ...(fns.length ? { dispatcher: makeDispatcher(fns) } : {}),
      });
    } catch (err) {
      throw task.error(err);
    } finally {
      task.done();
    }
    const cache = new ActivationCache();
    names.forEach((name, i) => cache.set(name, new Tensor(this.hookShape(name, batch, pos, keyPos), result.captures[i]!)));
    const shape = req.logits === 'last' ? [batch, V] : [batch, pos, V];
    return { logits: result.logits ? new Tensor(shape, result.logits) : null, sampled: result.sampled ?? null, cache, features, featureCounts };
  }

  /** @internal Translates the hooks option into native actions, validating each edit up front. */
  hookActions(hooks: Partial<Record<string, HookSpec>>, batch: number, pos: number, keyPos: number, maxPositions: number): { actions: NativeAction[]; fns: { fn: HookFunction; hook: string }[] } {
    const actions: NativeAction[] = [];
    const fns: { fn: HookFunction; hook: string }[] = [];
    for (const [name, spec] of Object.entries(hooks)) {
      if (spec === undefined) continue;
      const [resolved] = resolveHooks([name], this.hookNames);  // exact names only; throws with suggestions
      if (resolved !== name || /[*?]/.test(name)) throw new InvalidInputError('ERR_INVALID_INPUT', `hooks takes exact hook names, not patterns: '${name}'`);
      const index = this.table.index.get(name)!;
      const shape = this.hookShape(name, batch, pos, keyPos);
      const kind = name.slice(name.lastIndexOf('.') + 1);
      const headMajor = kind === 'hook_pattern' || kind === 'hook_attn_scores';
      const perHead = headMajor || shape.length === 4;  // [batch, pos, head, width] (q/k/v/z, result, split inputs, QK-norm)
      const features = kind === 'hook_sae_acts_pre' || kind === 'hook_sae_acts_post';
      const flat = kind === 'hook_sae_error' || kind === 'hook_sae_output';  // [.., d_in], heads flattened
      const geometry: HookGeometry = {
        name,
        index,
        shape,
        width: features ? 1 : flat ? shape.slice(2).reduce((a, b) => a * b, 1) : shape[shape.length - 1]!,
        heads: features ? shape[2]! : perHead && !flat ? shape[headMajor ? 1 : 2]! : 1,
        unit: features ? 'feature' : 'head',
        batch,
        maxPositions,
      };
      const list = (Array.isArray(spec) ? spec : [spec]) as (Edit | HookFunction)[];
      for (const item of list) {
        if (typeof item === 'function') {
          actions.push({ kind: 'callback', index, id: fns.length });
          fns.push({ fn: item, hook: name });
        } else if (item && typeof item === 'object') {
          actions.push(editToAction(item, geometry));
        } else {
          throw new InvalidInputError('ERR_INVALID_INPUT', `hooks['${name}'] must be an edit, a function or a list of them`);
        }
      }
    }
    return { actions, fns };
  }

  private live(): NativeModel {
    if (!this.handle) throw new DisposedError('ERR_DISPOSED', 'the model has been disposed');
    return this.handle;
  }

  /** @internal The native model (DisposedError after dispose()). */
  nativeHandle(): NativeModel {
    return this.live();
  }

  /** @internal Index of hook `name` in the current hook table, or undefined. */
  hookIndex(name: string): number | undefined {
    return this.table.index.get(name);
  }

  /**
   * @internal Input as token rows, each id checked against the vocabulary (not yet checked for equal
   * lengths). `shape` sees the rows before they are copied, to refuse a batch up front.
   */
  tokenRows(input: ModelInput, addSpecialTokens: boolean, shape?: (rows: readonly ArrayLike<unknown>[]) => void): number[][] {
    this.live();
    checkBoolean(addSpecialTokens, 'addSpecialTokens');
    let rows: readonly ArrayLike<unknown>[];
    if (typeof input === 'string' || (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === 'string'))) {
      rows = this.tokenize(input as string | string[], addSpecialTokens);
    } else if (Array.isArray(input) && input.every((x) => Array.isArray(x) || (ArrayBuffer.isView(x) && !(x instanceof DataView)))) {
      rows = input as readonly ArrayLike<unknown>[];
    } else {
      invalid('input must be token ids (number[][]), a string, or an array of strings');
    }
    if (rows.length === 0) invalid('the batch is empty');
    rows.forEach((row, b) => {
      if (row.length === 0) invalid(`sequence ${b} is empty: sequences must hold at least one token`);
    });
    shape?.(rows);
    const V = this.config.dVocab;
    return rows.map((row, b) => tokenRow(row, V, (p) => `batch ${b}, position ${p}`));
  }
}

/** Right padding moves each row's last real token off the last position, which `positions: 'last'` edits name. */
function refuseLastEdits(hooks: Partial<Record<string, HookSpec>> | undefined): void {
  for (const [name, spec] of Object.entries(hooks ?? {}))
    for (const item of Array.isArray(spec) ? spec : [spec])
      if (item && typeof item === 'object' && (item as Edit).positions === 'last')
        invalid(`hooks['${name}']: positions 'last' names the last padded position, not each row's last token, with padding 'right'; use padding 'left' or list the positions`);
}

/** `docs` with every pre-tokenized document's ids checked against the vocabulary. */
async function* checkedDocuments(docs: AsyncIterable<Document>, vocab: number): AsyncGenerator<Document> {
  for await (const d of docs) {
    if (d.tokens !== undefined) {
      if (!Array.isArray(d.tokens)) invalid(`${d.file}:${d.line}: tokens must be an array of ids`);
      d.tokens.forEach((t, i) => checkTokenId(t, vocab, `${d.file}:${d.line}, token ${i}`));
    }
    yield d;
  }
}
