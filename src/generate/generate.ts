// Generation with a KV cache: left-padded prompts, one native forward per new token, hooks and
// captures at every step, sampling in the engine with the seeded RNG of sampling.ts (only the
// chosen ids come back unless the logits are asked for). Reference: HF `generate`
// (test/generate.test.ts compares greedy outputs with and without steering;
// test/generate-native-sampling.test.ts the engine's draws with sampling.ts's).
import { InvalidInputError } from '../errors.js';
import type { HookPatternFor, Family } from '../hooks/names.js';
import type { ActivationCache, HookMap, Model } from '../model/Model.js';
import type { Tensor } from '../tensor.js';
import { checkBoolean, checkInteger, checkObject, checkSignal, checkTokenId, invalid, isObject, patternList } from '../model/validate.js';
import { Rng, type SamplingOptions } from './sampling.js';

/** Options for {@link Model.generate}. */
export interface GenerateOptions<F extends Family = Family> extends SamplingOptions {
  /** New tokens per sequence, at most. */
  maxNewTokens: number;
  /** Tokens that end a sequence (kept in its output), ids in [0, vocab). Defaults to none. */
  stopTokens?: readonly number[];
  /** Edits and JS hook functions, applied in every forward (prompt and each step). Defaults to none. */
  hooks?: HookMap<F>;
  /** Hooks to capture at every forward (one string is one pattern); step i's captures are those of the forward that produced token i. Defaults to none. */
  capture?: readonly HookPatternFor<F>[] | HookPatternFor<F>;
  /** Aborts between steps; the generation rejects with the signal's reason. Defaults to none. */
  signal?: AbortSignal;
  /** Add the tokenizer's special tokens when the input is text. Defaults to true. */
  addSpecialTokens?: boolean;
  /** Return each step's logits (`GenerateStep.logits`, the last position's, after every hook). Defaults to false: the engine samples, and only the chosen ids reach JS. */
  logits?: boolean;
}

/** One generation step: a new token for every sequence. */
export interface GenerateStep {
  step: number;
  /** The token chosen for each sequence (for a finished sequence, its last token again). */
  tokens: number[];
  /** Whether each sequence has finished (stop token or length) after this step. */
  finished: boolean[];
  /** Captures of the forward that produced these tokens: the prompt forward `[batch, prompt_len, ...]` (left-padded) for step 0, then `[batch, 1, ...]`. */
  captures: ActivationCache;
  /** `[batch, vocab]` logits the tokens were drawn from (before temperature), with `logits: true` only. */
  logits?: Tensor;
}

/** What {@link Model.generate} resolves to. */
export interface GenerateResult {
  /** Each sequence: its prompt followed by its new tokens (no padding). */
  tokens: number[][];
  /** Each sequence's new tokens. */
  newTokens: number[][];
  /** Decoded prompt + new tokens per sequence, when the model has a tokenizer. */
  text?: string[];
  /** Why each sequence ended. */
  stopReasons: ('stop' | 'length')[];
  /** Left padding of each row in the step-0 captures. */
  pad: number[];
  /** Captures per step (empty unless `capture` was given). */
  steps: ActivationCache[];
}

/** Checks generation options (types and ranges; hook names later) against a vocabulary of `vocab` ids. */
export function checkGenerateOptions(opts: unknown, vocab: number): asserts opts is GenerateOptions {
  if (!isObject(opts)) invalid('generate options must be an object with maxNewTokens');
  const maxNew = opts.maxNewTokens;
  if (typeof maxNew !== 'number' || !Number.isSafeInteger(maxNew) || maxNew < 1) invalid(`maxNewTokens must be a positive integer, got ${String(maxNew)}`);
  const temperature = opts.temperature ?? 0;
  if (typeof temperature !== 'number' || !(temperature >= 0) || !Number.isFinite(temperature)) invalid(`temperature must be >= 0, got ${String(temperature)}`);
  checkInteger(opts.topK, 'topK', 0);
  if (opts.topP !== undefined && !(typeof opts.topP === 'number' && opts.topP > 0 && opts.topP <= 1)) invalid(`topP must be in (0, 1], got ${String(opts.topP)}`);
  // Any safe integer; the generator uses it modulo 2^32.
  if (opts.seed !== undefined && !(typeof opts.seed === 'number' && Number.isSafeInteger(opts.seed))) invalid(`seed must be an integer, got ${typeof opts.seed === 'string' ? `'${opts.seed}'` : String(opts.seed)}`);
  if (opts.stopTokens !== undefined) {
    if (!Array.isArray(opts.stopTokens)) invalid('stopTokens must be an array of token ids');
    opts.stopTokens.forEach((t: unknown, i: number) => checkTokenId(t, vocab, `stopTokens[${i}]`));
  }
  checkObject(opts.hooks, 'hooks');
  patternList(opts.capture, 'capture');
  checkSignal(opts.signal, 'signal');
  checkBoolean(opts.addSpecialTokens, 'addSpecialTokens');
  checkBoolean(opts.logits, 'logits');
}

/** The generation loop; yields each step, returns the result. */
export async function* generateSteps<F extends Family>(model: Model<F>, prompts: number[][], opts: GenerateOptions<F>): AsyncGenerator<GenerateStep, GenerateResult> {
  checkGenerateOptions(opts, model.config.dVocab);
  const maxNew = opts.maxNewTokens;
  opts.signal?.throwIfAborted();
  const rng = new Rng(opts.seed ?? Math.floor(Math.random() * 2 ** 32));
  const stop = new Set(opts.stopTokens ?? []);
  const B = prompts.length;
  const P = prompts.reduce((m, p) => Math.max(m, p.length), 0);
  const pad = prompts.map((p) => P - p.length);
  // Padding slots hold a valid id (the row's first token); attention never sees them.
  const padded = Int32Array.from(prompts.flatMap((p, b) => [...Array<number>(pad[b]!).fill(p[0]!), ...p]));
  if (model.config.positionalEmbedding === 'standard' && P + maxNew - 1 > model.config.nCtx)
    throw new InvalidInputError('ERR_INVALID_INPUT', `a ${P}-token prompt plus ${maxNew} new tokens exceeds the model's ${model.config.nCtx} learned positions`);
  const cache = model.createCache(B, P + maxNew);
  const common = {
    capture: patternList(opts.capture, 'capture'),
    ...(opts.hooks ? { hooks: opts.hooks as Record<string, never> } : {}),
    maxPositions: P + maxNew,
    logits: opts.logits ? ('last' as const) : ('none' as const),
    cache,
  };
  // The engine draws from the same xoshiro128** stream as sampleToken, row by row, skipping
  // finished rows, so a seed gives the tokens the TypeScript sampler would.
  const rows = new Uint8Array(B).fill(1);
  const sample = { temperature: opts.temperature ?? 0, topK: opts.topK ?? 0, topP: opts.topP ?? 1, rng: rng.state, rows };

  const newTokens: number[][] = prompts.map(() => []);
  const finished = prompts.map(() => false);
  const stopReasons: ('stop' | 'length')[] = prompts.map(() => 'length');
  const steps: ActivationCache[] = [];
  let out = await model.forward({ ...common, tokens: padded, batch: B, pos: P, pad: Int32Array.from(pad), sample });
  for (let step = 0; step < maxNew; step++) {
    opts.signal?.throwIfAborted();
    const sampled = out.sampled!;
    const chosen = prompts.map((p, b) => {
      if (finished[b]) return newTokens[b]!.at(-1) ?? p.at(-1)!;
      const t = sampled[b]!;
      newTokens[b]!.push(t);
      if (stop.has(t)) {
        finished[b] = true;
        stopReasons[b] = 'stop';
      } else if (newTokens[b]!.length >= maxNew) {
        finished[b] = true;
      }
      return t;
    });
    if (common.capture.length) steps.push(out.cache);
    yield { step, tokens: chosen, finished: [...finished], captures: out.cache, ...(out.logits ? { logits: out.logits } : {}) };
    if (finished.every(Boolean)) break;
    finished.forEach((f, b) => (rows[b] = f ? 0 : 1));
    out = await model.forward({ ...common, tokens: Int32Array.from(chosen), batch: B, pos: 1, sample });
  }
  const tokens = prompts.map((p, b) => [...p, ...newTokens[b]!]);
  const result: GenerateResult = { tokens, newTokens, stopReasons, pad, steps };
  if (model.tokenizer) result.text = tokens.map((t) => model.tokenizer!.decode(t));
  return result;
}
