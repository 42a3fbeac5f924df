// The public Model: loads a HF model directory, runs instrumented forwards off the JS thread
// (with edits, JS hooks and captures) and generates with a KV cache. Tests:
// test/model.test.ts, test/interventions.test.ts, test/generate.test.ts.
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';

import { addonDir, native, type NativeConfig, type NativeHookInfo, type NativeKvCache, type NativeModel } from '../bindings/native.js';
import { DeviceError, DisposedError, InvalidInputError, UnsupportedModelError, wrapError } from '../errors.js';
import { editToAction, makeDispatcher, type Edit, type HookFunction, type HookGeometry, type HookSpec, type NativeAction } from '../hooks/edits.js';
import { resolveHooks, type Family, type HookNameFor, type HookPattern } from '../hooks/names.js';
import { Tensor } from '../tensor.js';
import { Tokenizer } from '../tokenizer.js';
import { extractBatches, type ExtractBatch, type ExtractOptions } from '../extract/extract.js';
import type { Document, SourceSpec } from '../extract/sources.js';
import { generateSteps, type GenerateOptions, type GenerateResult, type GenerateStep } from '../generate/generate.js';

/** Options for {@link loadModel}. */
export interface LoadModelOptions<F extends Family = Family> {
  /** Compute device. `'cuda'` needs the CUDA backend library (built by `npm run build:cmake` with CUDA) and a GPU; `'auto'` takes the GPU when that works, else the CPU. Defaults to `'cpu'`. */
  device?: 'cpu' | 'cuda' | 'auto';
  /** Weight dtype on the device; activations and arithmetic are float32. On the CPU, `'bf16'` stores the weight matrices (embeddings, linears, LM head) in bfloat16 (rounded to nearest even from an f32 checkpoint) and widens them exactly in the kernels; norms and biases stay f32. `'f16'` is CUDA only. Defaults to `'f32'`. */
  dtype?: 'f32' | 'f16' | 'bf16';
  /** Worker threads for the forward pass. Defaults to `os.availableParallelism()`. */
  threads?: number;
  /** Expected family: types the model's hook names and is checked against config.json. Defaults to any family. */
  family?: F;
}

/** Model input: token ids (`number[][]`, one array per sequence) or text. */
export type ModelInput = readonly (readonly number[])[] | string | readonly string[];

/** Edits and JS functions by hook name; a misspelled name does not compile. */
export type HookMap<F extends Family = Family> = { [K in HookNameFor<F>]?: HookSpec };

/** Options for {@link Model.run}. */
export interface RunOptions<F extends Family = Family> {
  /** Hook names or globs to capture, e.g. `['blocks.*.hook_resid_post']`. Captures see activations after any edits at the same hook. Defaults to none. */
  capture?: readonly HookPattern[];
  /** Edits and JS hook functions by hook name, applied in the order given. Defaults to none. */
  hooks?: HookMap<F>;
  /** Preallocated Float32Arrays to capture into, keyed by hook name (each must have the hook's exact size); these hooks are captured even if `capture` omits them. Defaults to fresh arrays. */
  outputs?: Partial<Record<HookNameFor<F> | (string & {}), Float32Array>>;
  /** Compute logits: `true` for every position, `'last'` for the last position only (`[batch, vocab]`; the LM head runs on one row per sequence), `false` to skip the LM head. Defaults to true. */
  returnLogits?: boolean | 'last';
  /** Preallocated Float32Array for logits, `batch * pos * vocab` long (`batch * vocab` with `'last'`). Defaults to a fresh array. */
  logitsOutput?: Float32Array;
  /** Add the tokenizer's special tokens when `input` is text. Defaults to true. */
  addSpecialTokens?: boolean;
  /** Run only blocks `0 .. stopAtLayer - 1` (exclusive, as TransformerLens): no logits, no later hooks. Defaults to running the whole model. */
  stopAtLayer?: number;
}

/** Activations captured by a run, keyed by hook name. */
export class ActivationCache extends Map<string, Tensor> {
  /** The activation captured at `name`; throws if it was not captured. */
  override get(name: string): Tensor {
    const t = super.get(name);
    if (!t) throw new InvalidInputError('ERR_INVALID_INPUT', `'${name}' was not captured in this run (captured: ${[...this.keys()].join(', ') || 'none'})`);
    return t;
  }
}

/** What {@link Model.run} resolves to. */
export interface RunResult {
  /** `[batch, pos, vocab]` (`[batch, vocab]` with `returnLogits: 'last'`), or null when `returnLogits` was false. */
  logits: Tensor | null;
  /** Captured activations by hook name. */
  cache: ActivationCache;
  /** The token ids that were run, `[batch][pos]`. */
  tokens: number[][];
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
export type ModelConfig = Omit<NativeConfig, 'threads' | 'device' | 'deviceName' | 'dtype'>;

/** Whether a backend can run here, and if not, why (e.g. no CUDA library, driver or GPU). */
export function probeDevice(device: 'cuda'): { available: boolean; reason: string; device: string } {
  return native().probeBackend(device, addonDir());
}

/** @internal One native forward as Model.run and generation issue it. */
export interface ForwardRequest {
  tokens: Int32Array;
  batch: number;
  pos: number;
  pad?: Int32Array;
  cache?: NativeKvCache;
  capture: readonly string[];
  outputs?: Partial<Record<string, Float32Array>>;
  hooks?: Partial<Record<string, HookSpec>>;
  logits: 'all' | 'last' | 'none';
  logitsOutput?: Float32Array;
  /** Positions an edit's selection may name. */
  maxPositions: number;
  /** Run blocks [0, stopAtLayer) only. */
  stopAtLayer?: number;
}

/** A loaded model. Dispose it (or `await using`) to free its weights. */
export class Model<F extends Family = Family> {
  readonly config: ModelConfig;
  /** Every hook name of this model, in forward order. */
  readonly hookNames: readonly HookNameFor<F>[];
  /** Hook names with their symbolic shapes. */
  readonly hooks: readonly HookInfo[];
  /** The model's tokenizer, or null when the directory has no tokenizer.json. */
  readonly tokenizer: Tokenizer | null;
  /** Worker threads used by the forward pass. */
  readonly threads: number;
  /** The backend the model runs on, its device name, and the weight dtype there. */
  readonly device: 'cpu' | 'cuda';
  readonly deviceName: string;
  readonly dtype: 'f32' | 'f16' | 'bf16';
  private handle: NativeModel | null;
  private readonly hookIndex: Map<string, number>;

  /** @internal Use {@link loadModel}. */
  constructor(
    readonly dir: string,
    handle: NativeModel,
    tokenizer: Tokenizer | null,
  ) {
    this.handle = handle;
    const { threads, device, deviceName, dtype, ...config } = handle.config();
    this.config = config;
    this.threads = threads;
    this.device = device;
    this.deviceName = deviceName;
    this.dtype = dtype;
    const hooks: NativeHookInfo[] = handle.hooks();
    this.hooks = hooks;
    this.hookNames = hooks.map((h) => h.name as HookNameFor<F>);
    this.hookIndex = new Map(hooks.map((h, i) => [h.name, i]));
    this.tokenizer = tokenizer;
  }

  /** True once {@link dispose} has been called. */
  get disposed(): boolean {
    return this.handle === null;
  }

  /** Concrete shape of a hook for `batch` sequences of `pos` new tokens attending to `keyPos` positions. */
  hookShape(name: string, batch: number, pos: number, keyPos = pos): number[] {
    const i = this.hookIndex.get(name);
    if (i === undefined) resolveHooks([name], this.hookNames);  // throws with suggestions
    return this.hooks[i!]!.shape.map((d) => (d === 'batch' ? batch : d === 'pos' ? pos : d === 'key_pos' ? keyPos : d));
  }

  /** Tokenizes text (or a batch of texts) into one id array per text. */
  tokenize(text: string | readonly string[], addSpecialTokens = true): number[][] {
    if (!this.tokenizer) throw new InvalidInputError('ERR_NO_TOKENIZER', `no tokenizer.json in ${this.dir}; pass token ids instead of text`);
    const texts = typeof text === 'string' ? [text] : text;
    return texts.map((t) => this.tokenizer!.encode(t, { addSpecialTokens }));
  }

  /**
   * Runs a forward pass off the JS thread, applying `hooks` (edits and JS functions) and
   * capturing `capture`. Throws InvalidInputError for an empty or ragged batch, a bad token id
   * or a bad edit, UnknownHookError for a hook name that does not exist, DisposedError after
   * dispose(); an error thrown by a JS hook rejects the run with that error.
   */
  async run(input: ModelInput, options: RunOptions<F> = {}): Promise<RunResult> {
    const tokens = this.toTokens(input, options.addSpecialTokens ?? true);
    const ragged = tokens.findIndex((r) => r.length !== tokens[0]!.length);
    if (ragged >= 0)
      throw new InvalidInputError(
        'ERR_INVALID_INPUT',
        `ragged batch: sequence 0 has ${tokens[0]!.length} tokens but sequence ${ragged} has ${tokens[ragged]!.length}; all sequences must have the same length`,
      );
    const batch = tokens.length;
    const pos = tokens[0]!.length;
    const { logits, cache } = await this.forward({
      tokens: Int32Array.from(tokens.flat()),
      batch,
      pos,
      capture: options.capture ?? [],
      ...(options.outputs ? { outputs: options.outputs as Record<string, Float32Array> } : {}),
      ...(options.hooks ? { hooks: options.hooks as Record<string, HookSpec> } : {}),
      logits: (() => {
        const want = options.returnLogits ?? (options.stopAtLayer === undefined || options.stopAtLayer >= this.config.nLayers);
        return want === 'last' ? 'last' : want ? 'all' : 'none';
      })(),
      ...(options.stopAtLayer !== undefined ? { stopAtLayer: options.stopAtLayer } : {}),
      ...(options.logitsOutput ? { logitsOutput: options.logitsOutput } : {}),
      maxPositions: pos,
    });
    return { logits, cache, tokens };
  }

  /**
   * Generates up to `maxNewTokens` per sequence with a KV cache (prompts of different lengths
   * are left-padded), applying hooks and captures at every step. Resolves to the prompts with
   * their new tokens.
   */
  async generate(input: ModelInput, options: GenerateOptions<F>): Promise<GenerateResult> {
    const it = generateSteps(this, this.toTokens(input, options.addSpecialTokens ?? true), options);
    for (;;) {
      const next = await it.next();
      if (next.done) return next.value;
    }
  }

  /** Like {@link generate}, streaming one step (a token per sequence) at a time. */
  generateStream(input: ModelInput, options: GenerateOptions<F>): AsyncGenerator<GenerateStep, GenerateResult> {
    return generateSteps(this, this.toTokens(input, options.addSpecialTokens ?? true), options);
  }

  /**
   * Streams activations over a corpus: documents are read, tokenized and packed into
   * `seqLen` windows ahead of the forward (bounded), batched, run, and yielded with their
   * tokens. Iterating slowly applies backpressure; breaking out stops the pipeline.
   */
  extract(source: SourceSpec | AsyncIterable<Document>, options: ExtractOptions): AsyncGenerator<ExtractBatch> {
    return extractBatches(this, source, options);
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

  /** @internal One native forward with hooks and captures. */
  async forward(req: ForwardRequest): Promise<{ logits: Tensor | null; cache: ActivationCache }> {
    const handle = this.live();
    const { batch, pos } = req;
    const keyPos = (req.cache?.length ?? 0) + pos;
    const names = resolveHooks([...req.capture, ...Object.keys(req.outputs ?? {})], this.hookNames);
    const buffers = names.map((name) => {
      const size = this.hookShape(name, batch, pos, keyPos).reduce((a, b) => a * b, 1);
      return req.outputs?.[name] ?? new Float32Array(size);
    });
    const { actions, fns } = this.actions(req.hooks ?? {}, batch, pos, keyPos, req.maxPositions);
    const V = this.config.dVocab;
    const logits =
      req.logits === 'none' ? null : (req.logitsOutput ?? new Float32Array((req.logits === 'last' ? batch : batch * pos) * V));
    try {
      await handle.run({
        tokens: req.tokens,
        batch,
        pos,
        ...(req.pad ? { pad: req.pad } : {}),
        ...(req.cache ? { cache: req.cache } : {}),
        captures: names.map((n, i) => ({ index: this.hookIndex.get(n)!, buffer: buffers[i]! })),
        logits,
        logitsLastOnly: req.logits === 'last',
        ...(req.stopAtLayer !== undefined ? { stopAtLayer: req.stopAtLayer } : {}),
        actions,
        ...(fns.length ? { dispatcher: makeDispatcher(fns) } : {}),
      });
    } catch (err) {
      throw wrapError(err);
    }
    const cache = new ActivationCache();
    names.forEach((name, i) => cache.set(name, new Tensor(this.hookShape(name, batch, pos, keyPos), buffers[i]!)));
    const shape = req.logits === 'last' ? [batch, V] : [batch, pos, V];
    return { logits: logits ? new Tensor(shape, logits) : null, cache };
  }

  /** Translates the hooks option into native actions, validating each edit up front. */
  private actions(hooks: Partial<Record<string, HookSpec>>, batch: number, pos: number, keyPos: number, maxPositions: number): { actions: NativeAction[]; fns: { fn: HookFunction; hook: string }[] } {
    const actions: NativeAction[] = [];
    const fns: { fn: HookFunction; hook: string }[] = [];
    for (const [name, spec] of Object.entries(hooks)) {
      if (spec === undefined) continue;
      const [resolved] = resolveHooks([name], this.hookNames);  // exact names only; throws with suggestions
      if (resolved !== name || /[*?]/.test(name)) throw new InvalidInputError('ERR_INVALID_INPUT', `hooks takes exact hook names, not patterns: '${name}'`);
      const index = this.hookIndex.get(name)!;
      const shape = this.hookShape(name, batch, pos, keyPos);
      const kind = name.slice(name.lastIndexOf('.') + 1);
      const headMajor = kind === 'hook_pattern' || kind === 'hook_attn_scores';
      const perHead = headMajor || ['hook_q', 'hook_k', 'hook_v', 'hook_z', 'hook_rot_q', 'hook_rot_k'].includes(kind);
      const geometry: HookGeometry = {
        name,
        index,
        shape,
        width: shape[shape.length - 1]!,
        heads: perHead ? shape[headMajor ? 1 : 2]! : 1,
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

  /** Input as token rows (not yet checked for equal lengths). */
  private toTokens(input: ModelInput, addSpecialTokens: boolean): number[][] {
    this.live();
    let rows: number[][];
    if (typeof input === 'string' || (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === 'string'))) {
      rows = this.tokenize(input as string | string[], addSpecialTokens);
    } else if (Array.isArray(input) && input.every((x) => Array.isArray(x) || ArrayBuffer.isView(x))) {
      rows = (input as readonly (readonly number[])[]).map((r) => Array.from(r));
    } else {
      throw new InvalidInputError('ERR_INVALID_INPUT', 'input must be token ids (number[][]), a string, or an array of strings');
    }
    if (rows.length === 0) throw new InvalidInputError('ERR_INVALID_INPUT', 'the batch is empty');
    rows.forEach((row, b) => {
      if (row.length === 0) throw new InvalidInputError('ERR_INVALID_INPUT', `sequence ${b} is empty: sequences must hold at least one token`);
      row.forEach((t, p) => {
        if (!Number.isInteger(t)) throw new InvalidInputError('ERR_INVALID_INPUT', `token at batch ${b}, position ${p} is not an integer: ${t}`);
      });
    });
    return rows;
  }
}

/**
 * Loads a Hugging Face model directory (config.json, safetensors weights, optional
 * tokenizer.json). Loading runs off the JS thread. Pass `family` to type hook names.
 */
export async function loadModel<F extends Family = Family>(dir: string, options: LoadModelOptions<F> = {}): Promise<Model<F>> {
  const requested = options.device ?? 'cpu';
  if (requested !== 'cpu' && requested !== 'cuda' && requested !== 'auto')
    throw new DeviceError('ERR_UNSUPPORTED_DEVICE', `unknown device '${String(requested)}' (cpu, cuda, auto)`);
  const dtype = options.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16' && dtype !== 'bf16') throw new DeviceError('ERR_UNSUPPORTED_DTYPE', `unknown dtype '${String(dtype)}' (f32, f16, bf16)`);
  const device: 'cpu' | 'cuda' = requested === 'auto' ? (probeDevice('cuda').available ? 'cuda' : 'cpu') : requested;
  if (device === 'cpu' && dtype === 'f16') throw new DeviceError('ERR_UNSUPPORTED_DTYPE', "dtype 'f16' is not supported on the CPU; use 'f32' or 'bf16'");
  const threads = options.threads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1) throw new InvalidInputError('ERR_INVALID_INPUT', `threads must be a positive integer, got ${threads}`);
  const abs = resolve(dir);
  const tokenizer = Tokenizer.fromDir(abs);
  let handle: NativeModel;
  try {
    handle = await native().loadModel(abs, { threads, device, dtype, backendDir: addonDir() });
  } catch (err) {
    throw wrapError(err);
  }
  const model = new Model<F>(abs, handle, tokenizer);
  if (options.family && model.config.family !== options.family) {
    model.dispose();
    throw new UnsupportedModelError('ERR_FAMILY_MISMATCH', `${abs} is a ${model.config.family} model, not ${options.family}`);
  }
  return model;
}
