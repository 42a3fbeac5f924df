// The public Model: loads a HF model directory, runs instrumented forwards off the JS thread,
// and returns logits and captured activations as Tensors. Tests: test/model.test.ts.
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';

import { native, type NativeConfig, type NativeHookInfo, type NativeModel } from '../bindings/native.js';
import { DeviceError, DisposedError, InvalidInputError, wrapError } from '../errors.js';
import { resolveHooks, type HookName, type HookPattern } from '../hooks/names.js';
import { Tensor } from '../tensor.js';
import { Tokenizer } from '../tokenizer.js';

/** Options for {@link loadModel}. */
export interface LoadModelOptions {
  /** Compute device. `'auto'` picks the best available (only the CPU in this build). Defaults to `'cpu'`. */
  device?: 'cpu' | 'cuda' | 'auto';
  /** Compute dtype. Weights in f16/bf16 files are upcast. Defaults to `'f32'`. */
  dtype?: 'f32';
  /** Worker threads for the forward pass. Defaults to `os.availableParallelism()`. */
  threads?: number;
}

/** Model input: token ids (`number[][]`, one array per sequence, all the same length) or text. */
export type ModelInput = readonly (readonly number[])[] | string | readonly string[];

/** Options for {@link Model.run}. */
export interface RunOptions {
  /** Hook names or globs to capture, e.g. `['blocks.*.hook_resid_post']`. Defaults to none. */
  capture?: readonly HookPattern[];
  /** Preallocated Float32Arrays to capture into, keyed by hook name (each must have the hook's exact size); these hooks are captured even if `capture` omits them. Defaults to fresh arrays. */
  outputs?: Partial<Record<HookName | string, Float32Array>>;
  /** Compute logits. `false` skips the LM head. Defaults to true. */
  returnLogits?: boolean;
  /** Preallocated Float32Array for logits, `batch * pos * vocab` long. Defaults to a fresh array. */
  logitsOutput?: Float32Array;
  /** Add the tokenizer's special tokens when `input` is text. Defaults to true. */
  addSpecialTokens?: boolean;
}

/** Activations captured by a run, keyed by hook name. */
export class ActivationCache extends Map<string, Tensor> {
  /** The activation captured at `name`; throws if it was not captured. */
  override get(name: HookName | string): Tensor {
    const t = super.get(name);
    if (!t) throw new InvalidInputError('ERR_INVALID_INPUT', `'${name}' was not captured in this run (captured: ${[...this.keys()].join(', ') || 'none'})`);
    return t;
  }
}

/** What {@link Model.run} resolves to. */
export interface RunResult {
  /** `[batch, pos, vocab]`, or null when `returnLogits` was false. */
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
  /** Symbolic shape: 'batch' and 'pos' stand for the run's dimensions. */
  shape: readonly (number | 'batch' | 'pos')[];
}

/** Normalized model configuration. */
export type ModelConfig = Omit<NativeConfig, 'threads'>;

/** A loaded model. Dispose it (or `await using`) to free its weights. */
export class Model {
  readonly config: ModelConfig;
  /** Every hook name of this model, in forward order. */
  readonly hookNames: readonly string[];
  /** Hook names with their symbolic shapes. */
  readonly hooks: readonly HookInfo[];
  /** The model's tokenizer, or null when the directory has no tokenizer.json. */
  readonly tokenizer: Tokenizer | null;
  /** Worker threads used by the forward pass. */
  readonly threads: number;
  private handle: NativeModel | null;
  private readonly hookIndex: Map<string, number>;

  /** @internal Use {@link loadModel}. */
  constructor(
    readonly dir: string,
    handle: NativeModel,
    tokenizer: Tokenizer | null,
  ) {
    this.handle = handle;
    const { threads, ...config } = handle.config();
    this.config = config;
    this.threads = threads;
    const hooks: NativeHookInfo[] = handle.hooks();
    this.hooks = hooks;
    this.hookNames = hooks.map((h) => h.name);
    this.hookIndex = new Map(hooks.map((h, i) => [h.name, i]));
    this.tokenizer = tokenizer;
  }

  /** True once {@link dispose} has been called. */
  get disposed(): boolean {
    return this.handle === null;
  }

  /** Concrete shape of a hook for a batch of `batch` sequences of `pos` tokens. */
  hookShape(name: HookName | string, batch: number, pos: number): number[] {
    const i = this.hookIndex.get(name);
    if (i === undefined) resolveHooks([name], this.hookNames);  // throws with suggestions
    return this.hooks[i!]!.shape.map((d) => (d === 'batch' ? batch : d === 'pos' ? pos : d));
  }

  /** Tokenizes text (or a batch of texts, which must tokenize to equal lengths). */
  tokenize(text: string | readonly string[], addSpecialTokens = true): number[][] {
    if (!this.tokenizer) throw new InvalidInputError('ERR_NO_TOKENIZER', `no tokenizer.json in ${this.dir}; pass token ids instead of text`);
    const texts = typeof text === 'string' ? [text] : text;
    return texts.map((t) => this.tokenizer!.encode(t, { addSpecialTokens }));
  }

  /**
   * Runs a forward pass off the JS thread. Resolves to logits and the captured activations.
   * Throws InvalidInputError for an empty or ragged batch or a bad token id, UnknownHookError
   * for a hook name that does not exist, DisposedError after dispose().
   */
  async run(input: ModelInput, options: RunOptions = {}): Promise<RunResult> {
    const handle = this.live();
    const tokens = this.toTokens(input, options.addSpecialTokens ?? true);
    const batch = tokens.length;
    const pos = tokens[0]!.length;
    const flat = new Int32Array(batch * pos);
    tokens.forEach((row, b) => {
      row.forEach((t, p) => {
        if (!Number.isInteger(t)) throw new InvalidInputError('ERR_INVALID_INPUT', `token at batch ${b}, position ${p} is not an integer: ${t}`);
        flat[b * pos + p] = t;
      });
    });

    const names = resolveHooks([...(options.capture ?? []), ...Object.keys(options.outputs ?? {})], this.hookNames);
    const buffers = names.map((name) => {
      const size = this.hookShape(name, batch, pos).reduce((a, b) => a * b, 1);
      const given = options.outputs?.[name];
      return given ?? new Float32Array(size);
    });
    const wantLogits = options.returnLogits ?? true;
    const logits = wantLogits ? (options.logitsOutput ?? new Float32Array(batch * pos * this.config.dVocab)) : null;
    try {
      await handle.run(flat, batch, pos, Int32Array.from(names, (n) => this.hookIndex.get(n)!), buffers, logits);
    } catch (err) {
      throw wrapError(err);
    }
    const cache = new ActivationCache();
    names.forEach((name, i) => cache.set(name, new Tensor(this.hookShape(name, batch, pos), buffers[i]!)));
    return {
      logits: logits ? new Tensor([batch, pos, this.config.dVocab], logits) : null,
      cache,
      tokens,
    };
  }

  /** Frees the model's native memory. Runs already started finish first; later calls throw DisposedError. */
  dispose(): void {
    this.handle?.dispose();
    this.handle = null;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }

  private live(): NativeModel {
    if (!this.handle) throw new DisposedError('ERR_DISPOSED', 'the model has been disposed');
    return this.handle;
  }

  private toTokens(input: ModelInput, addSpecialTokens: boolean): number[][] {
    let rows: number[][];
    if (typeof input === 'string' || (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === 'string'))) {
      rows = this.tokenize(input as string | string[], addSpecialTokens);
    } else if (Array.isArray(input) && input.every((x) => Array.isArray(x) || ArrayBuffer.isView(x))) {
      rows = (input as readonly (readonly number[])[]).map((r) => Array.from(r));
    } else {
      throw new InvalidInputError('ERR_INVALID_INPUT', 'input must be token ids (number[][]), a string, or an array of strings');
    }
    if (rows.length === 0) throw new InvalidInputError('ERR_INVALID_INPUT', 'the batch is empty');
    const pos = rows[0]!.length;
    if (pos === 0) throw new InvalidInputError('ERR_INVALID_INPUT', 'sequences must hold at least one token');
    const ragged = rows.findIndex((r) => r.length !== pos);
    if (ragged >= 0)
      throw new InvalidInputError(
        'ERR_INVALID_INPUT',
        `ragged batch: sequence 0 has ${pos} tokens but sequence ${ragged} has ${rows[ragged]!.length}; all sequences must have the same length`,
      );
    return rows;
  }
}

/**
 * Loads a Hugging Face model directory (config.json, safetensors weights, optional
 * tokenizer.json). Loading runs off the JS thread.
 */
export async function loadModel(dir: string, options: LoadModelOptions = {}): Promise<Model> {
  const device = options.device ?? 'cpu';
  if (device === 'cuda') throw new DeviceError('ERR_UNSUPPORTED_DEVICE', "device 'cuda' is not available: this build has no CUDA backend");
  if (device !== 'cpu' && device !== 'auto') throw new DeviceError('ERR_UNSUPPORTED_DEVICE', `unknown device '${String(device)}' (cpu, cuda, auto)`);
  const dtype = options.dtype ?? 'f32';
  if (dtype !== 'f32') throw new DeviceError('ERR_UNSUPPORTED_DTYPE', `dtype '${String(dtype)}' is not supported on the CPU; use 'f32'`);
  const threads = options.threads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1) throw new InvalidInputError('ERR_INVALID_INPUT', `threads must be a positive integer, got ${threads}`);
  const abs = resolve(dir);
  const tokenizer = Tokenizer.fromDir(abs);
  let handle: NativeModel;
  try {
    handle = await native().loadModel(abs, threads);
  } catch (err) {
    throw wrapError(err);
  }
  return new Model(abs, handle, tokenizer);
}
