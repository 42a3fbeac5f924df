// The memory a forward or a generation needs, estimated from the config before anything is
// allocated, and the refusal (ERR_OUT_OF_MEMORY) when it cannot fit: a single array past what a
// JS typed array holds, or a total past this machine's memory. The activation terms follow the
// engine's workspace buffers (native/engine/model.cc, forward_locked). Tests:
// test/robustness.test.ts.
import { constants } from 'node:buffer';
import { totalmem } from 'node:os';

import { OutOfMemoryError } from '../errors.js';
import type { GenerateOptions } from '../generate/generate.js';
import type { ForwardRequest, Model, ModelConfig } from './Model.js';
import { patternList } from './validate.js';

/** One named amount of memory. */
export interface MemoryPart {
  label: string;
  bytes: number;
}

/** Largest element count of one JS typed array (2^32 on Node 20). */
export const MAX_TYPED_ARRAY_LENGTH = constants.MAX_LENGTH;

/**
 * Bytes of the engine's activation workspace for `batch` x `pos` new tokens attending to
 * `keyPos` positions: one row per token of the residual stream, normalized input, norm scale,
 * q, k, v, z, block output and MLP buffers, plus the [batch, head, pos, key_pos] attention
 * pattern when scores are hooked or soft-capped.
 */
export function workspaceBytes(c: ModelConfig, batch: number, pos: number, keyPos: number, scores: boolean): number {
  const rows = batch * pos;
  const dq = c.nHeads * c.dHead;
  const dkv = c.nKvHeads * c.dHead;
  const heads = Math.max(c.nHeads, c.nKvHeads);
  const rotaryDim = c.rope?.rotaryDim ?? c.dHead;
  let perRow = 3 * c.dModel + 1 + 2 * dq + 2 * dkv + c.dMlp * (c.gatedMlp ? 2 : 1);
  if (c.parallelResidual) perRow += c.dModel;
  if (c.qkNorm) perRow += heads;
  if (rotaryDim < c.dHead) perRow += heads * rotaryDim;
  let floats = rows * perRow + 2 * rows;  // + the tokens, twice (JS and native copies)
  if (scores || c.attnSoftcap > 0) floats += batch * c.nHeads * pos * keyPos;
  return 4 * floats;
}

/**
 * Bytes of the temporaries the forward allocates for TransformerLens's flag-gated hooks while
 * they are hooked (native/engine/model.cc): per-head input copies and their per-head
 * projections, per-head results, the mlp_in copy, every position's logits for unembed.hook_out.
 */
export function optionalHookBytes(c: ModelConfig, rows: number, hooked: readonly string[]): number {
  const has = (re: RegExp) => hooked.some((n) => re.test(n));
  const dq = c.nHeads * c.dHead;
  let floats = 0;
  if (has(/\.hook_(attn_in|[qkv]_input)$/)) floats += rows * (4 * c.nHeads * c.dModel + c.dModel + dq);
  if (has(/\.attn\.hook_result$/)) floats += rows * (c.nHeads * c.dModel + 2 * dq + c.dModel);
  if (has(/\.hook_mlp_in$/)) floats += rows * c.dModel;
  if (has(/^unembed\.hook_out$/)) floats += rows * c.dVocab;
  return 4 * floats;
}

/** Bytes of a KV cache for `batch` sequences of `capacity` positions. */
export function kvCacheBytes(c: ModelConfig, batch: number, capacity: number): number {
  return 4 * 2 * c.nLayers * batch * capacity * c.nKvHeads * c.dHead;
}

let limitCache: { bytes: number; what: string; at: number } | undefined;

/**
 * What this process may use in all: the machine's memory, or a smaller container limit. Read at
 * most once a second (reading the cgroup limit costs ~30 µs, a tiny forward ~250 µs).
 */
export function memoryLimit(): { bytes: number; what: string } {
  const now = performance.now();
  if (limitCache && now - limitCache.at < 1000) return limitCache;
  const constrained = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.() ?? 0;
  const total = totalmem();
  const limit = constrained > 0 && constrained < total ? { bytes: constrained, what: "this process's memory limit" } : { bytes: total, what: "this machine's memory" };
  limitCache = { ...limit, at: now };
  return limit;
}

/** "12.3 GiB". */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function refuse(message: string): never {
  throw new OutOfMemoryError('ERR_OUT_OF_MEMORY', message);
}

/**
 * Throws ERR_OUT_OF_MEMORY when one of `arrays` (element counts of the JS typed arrays the
 * call returns) is past the typed-array limit, or when `parts` plus what this process already
 * holds exceed {@link memoryLimit}. `hint` says what to change.
 */
export function ensureFits(what: string, parts: readonly MemoryPart[], arrays: readonly { label: string; length: number }[], hint: string): void {
  for (const a of arrays)
    if (a.length > MAX_TYPED_ARRAY_LENGTH)
      refuse(`${what}: ${a.label} would hold ${a.length.toLocaleString('en-US')} floats, more than the ${MAX_TYPED_ARRAY_LENGTH.toLocaleString('en-US')} a JS typed array can hold; ${hint}`);
  const need = parts.reduce((s, p) => s + p.bytes, 0);
  const limit = memoryLimit();
  if (need < limit.bytes / 16) return;  // far below the limit: skip reading the process's RSS
  const held = process.memoryUsage.rss();
  if (need + held > limit.bytes) {
    const list = parts.filter((p) => p.bytes > 0).map((p) => `${p.label} ${formatBytes(p.bytes)}`).join(', ');
    refuse(`${what} needs about ${formatBytes(need)} (${list}) on top of the ${formatBytes(held)} this process holds: more than ${limit.what}, ${formatBytes(limit.bytes)}; ${hint}`);
  }
}

const HINT_RUN = "run smaller batches or shorter sequences, capture less, or pass returnLogits 'last' or false";
const SCORES = /\.hook_(attn_scores|pattern)$/;

function numel(model: Model, name: string, batch: number, pos: number, keyPos = pos): number {
  return model.hookShape(name, batch, pos, keyPos).reduce((a, b) => a * b, 1);
}

/** The JS arrays handed to hook functions: each is a copy of its whole activation. */
function functionHookArrays(model: Model, hooks: Readonly<Record<string, unknown>> | undefined, batch: number, pos: number, keyPos: number): { label: string; length: number }[] {
  const out: { label: string; length: number }[] = [];
  for (const [name, spec] of Object.entries(hooks ?? {})) {
    const list = Array.isArray(spec) ? spec : [spec];
    if (list.some((x) => typeof x === 'function') && (model.hookNames as readonly string[]).includes(name))
      out.push({ label: `the activation a JS function at '${name}' receives`, length: numel(model, name, batch, pos, keyPos) });
  }
  return out;
}

/** Refuses (ERR_OUT_OF_MEMORY) a forward whose logits, captures and activations cannot fit. */
export function ensureForwardFits(
  model: Model,
  what: string,
  req: Pick<ForwardRequest, 'batch' | 'pos' | 'capture' | 'outputs' | 'hooks' | 'logits' | 'saeFeatures'> & { keyPos?: number },
  names = model.resolveHooks([...patternList(req.capture, 'capture'), ...Object.keys(req.outputs ?? {})]),
): void {
  const { batch, pos } = req;
  const keyPos = req.keyPos ?? pos;
  const parts: MemoryPart[] = [];
  const arrays: { label: string; length: number }[] = [];
  if (req.logits !== 'none') {
    const length = (req.logits === 'last' ? batch : batch * pos) * model.config.dVocab;
    parts.push({ label: 'logits', bytes: 4 * length });
    arrays.push({ label: 'the logits', length });
  }
  let captured = 0;
  for (const name of names) {
    const length = numel(model, name, batch, pos, keyPos);
    captured += 4 * length;
    arrays.push({ label: `the capture of '${name}'`, length });
  }
  arrays.push(...functionHookArrays(model, req.hooks, batch, pos, keyPos));
  const k = req.saeFeatures?.k ?? 0;
  captured += 8 * batch * pos * k * (req.saeFeatures?.hooks?.length ?? model.saes.size);
  parts.push({ label: 'captures', bytes: captured });
  if (model.device === 'cpu') {
    const hooked = [...names, ...Object.keys(req.hooks ?? {})];
    const scores = hooked.some((n) => SCORES.test(n));
    parts.push({ label: 'activations', bytes: workspaceBytes(model.config, batch, pos, keyPos, scores) + optionalHookBytes(model.config, batch * pos, hooked) });
  }
  ensureFits(what, parts, arrays, HINT_RUN);
}

/** Refuses (ERR_OUT_OF_MEMORY) a generation whose KV cache, prompt forward and captures cannot fit. */
export function ensureGenerateFits(model: Model, rows: readonly ArrayLike<unknown>[], options: GenerateOptions): void {
  const batch = rows.length;
  const prompt = rows.reduce((m, r) => Math.max(m, r.length), 0);
  const capacity = prompt + options.maxNewTokens;
  const names = model.resolveHooks(patternList(options.capture, 'capture'));
  const parts: MemoryPart[] = [{ label: 'logits', bytes: 4 * batch * model.config.dVocab }];
  const arrays = names.map((name) => ({ label: `the capture of '${name}'`, length: numel(model, name, batch, prompt) }));
  arrays.push(...functionHookArrays(model, options.hooks, batch, prompt, prompt));
  // Every step's captures are kept: the prompt's, then one position per new token attending
  // to prompt + 1 ... prompt + maxNewTokens - 1 keys (sizes are affine in the key count).
  let captured = 0;
  const steps = options.maxNewTokens - 1;
  for (const name of names)
    captured += 4 * (numel(model, name, batch, prompt) + (steps * (numel(model, name, batch, 1, prompt + 1) + numel(model, name, batch, 1, prompt + steps))) / 2);
  parts.push({ label: 'captures', bytes: captured });
  if (model.device === 'cpu') {
    const hooked = [...names, ...Object.keys(options.hooks ?? {})];
    const scores = hooked.some((n) => SCORES.test(n));
    parts.push({ label: 'activations', bytes: workspaceBytes(model.config, batch, prompt, prompt, scores) + optionalHookBytes(model.config, batch * prompt, hooked) });
    parts.push({ label: 'KV cache', bytes: kvCacheBytes(model.config, batch, capacity) });
  }
  ensureFits('this generation', parts, arrays, 'generate for fewer or shorter prompts, fewer new tokens, or capture less');
}

/** What a backward pass holds, for {@link backwardBytes} and {@link ensureBackwardFits}. */
export interface BackwardShape {
  batch: number;
  pos: number;
  /** The seeds' leading axis S (1 for a metric). */
  replicas: number;
  /** A metric on the logits (else seeds). */
  metric: boolean;
  /** The logits come back to JS. */
  returnLogits: boolean;
  captures: readonly string[];
  grads: readonly string[];
  /** Hooks with edits or JS functions (forward or gradient). */
  hooks: readonly string[];
  /** Bytes of block internals kept from the forward (keepActivationBytes); at most every block's. */
  keepBytes: number;
}

/**
 * Bytes of the engine's memory for a backward pass (README "Gradients"): the residual stream
 * saved at every layer's input, (layers + 1) x batch x pos x d_model; one layer's recomputed
 * internals with the [batch, head, pos, pos] pattern ({@link workspaceBytes}), once, and their
 * gradients, replicas times; with a metric, the logits and their gradient, 2 x batch x pos x vocab.
 */
export function backwardBytes(c: ModelConfig, s: Pick<BackwardShape, 'batch' | 'pos' | 'replicas' | 'metric'>): { saved: number; layer: number; gradients: number; logits: number } {
  const rows = s.batch * s.pos;
  const layer = workspaceBytes(c, s.batch, s.pos, s.pos, true);
  return {
    saved: 4 * (c.nLayers + 1) * rows * c.dModel,
    layer,
    gradients: s.replicas * layer,
    logits: s.metric ? 4 * 2 * rows * c.dVocab : 0,
  };
}

/** Refuses (ERR_OUT_OF_MEMORY) a backward pass whose saved activations, gradients, logits and outputs cannot fit. */
export function ensureBackwardFits(model: Model, s: BackwardShape): void {
  const { batch, pos, replicas } = s;
  const parts: MemoryPart[] = [];
  const arrays: { label: string; length: number }[] = [];
  if (s.returnLogits) {
    parts.push({ label: 'returned logits', bytes: 4 * batch * pos * model.config.dVocab });
    arrays.push({ label: 'the logits', length: batch * pos * model.config.dVocab });
  }
  let outputs = 0;
  for (const name of s.captures) {
    const length = numel(model, name, batch, pos);
    outputs += 4 * length;
    arrays.push({ label: `the capture of '${name}'`, length });
  }
  for (const name of s.grads) {
    const length = replicas * numel(model, name, batch, pos);
    outputs += 4 * length;
    arrays.push({ label: `the gradient at '${name}'`, length });
  }
  parts.push({ label: 'captures and gradients', bytes: outputs });
  const b = backwardBytes(model.config, s);
  parts.push({ label: 'saved residual stream', bytes: b.saved });
  parts.push({ label: 'one layer recomputed', bytes: b.layer + optionalHookBytes(model.config, batch * pos, [...s.captures, ...s.grads, ...s.hooks]) });
  parts.push({ label: 'its gradients', bytes: b.gradients });
  parts.push({ label: 'blocks kept from the forward', bytes: Math.min(s.keepBytes, model.config.nLayers * replicas * b.layer) });
  parts.push({ label: 'logits and their gradient', bytes: b.logits });
  ensureFits('this backward pass', parts, arrays, 'run smaller batches, shorter sequences or fewer seed rows, or ask for fewer gradients');
}
