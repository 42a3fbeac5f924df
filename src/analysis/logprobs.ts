// Next-token log-probabilities, TransformerLens's loss (`return_type="loss"`, `loss_per_token`)
// and the top-k next tokens, computed from a run's logits in double precision. Reference:
// test/fixtures/generate_analysis.py; tests: test/analysis-logprobs.test.ts.
import type { Model } from '../model/Model.js';
import { checkInteger, checkObject, invalid, isObject } from '../model/validate.js';
import { Tensor } from '../tensor.js';

/**
 * Logits with the tokens they were computed on: a `RunResult` or `BackwardResult` (run with
 * logits for every position), or your own.
 */
export interface LogitsAndTokens {
  /** `[batch, pos, vocab]`. */
  logits: Tensor | null;
  /** The token rows, `[batch][pos]`. */
  tokens: readonly (readonly number[])[];
  /** Padding slots per row, excluded from the loss: on the left unless `padding` is `'right'`. */
  pad?: readonly number[];
  /** Side of the padding in `pad`. Defaults to `'left'`. */
  padding?: 'left' | 'right';
}

/** Options for {@link tokenLogProbs}, {@link lossPerToken} and {@link loss}. */
export interface LossOptions {
  /**
   * `[batch][pos]` of 1 (real token) and 0 (padding), as TransformerLens's `attention_mask`: a
   * prediction counts when it is made from a real token for a real token. Defaults to the
   * result's `pad`, else every position.
   */
  attentionMask?: readonly (readonly number[])[];
}

interface Checked {
  x: Float32Array;
  B: number;
  T: number;
  V: number;
  tokens: readonly (readonly number[])[];
  /** 1 where position t may predict t + 1, `[B, T - 1]`. */
  counted: Uint8Array;
}

function checkLogits(r: LogitsAndTokens, options: LossOptions, what: string): Checked {
  if (!isObject(r) || !(r.logits instanceof Tensor)) invalid(`${what} needs a result with logits for every position (run with returnLogits: true)`);
  checkObject(options, `${what} options`);
  const shape = r.logits.shape;
  if (shape.length !== 3) invalid(`${what} needs logits for every position, [batch, pos, vocab]; got [${shape.join(', ')}] (run with returnLogits: true, not 'last')`);
  const [B, T, V] = shape as [number, number, number];
  const tokens = r.tokens;
  if (!Array.isArray(tokens) || tokens.length !== B || tokens.some((row) => !Array.isArray(row) || row.length !== T))
    invalid(`${what}: tokens must be ${B} rows of ${T} ids, as the logits`);
  (tokens as readonly (readonly unknown[])[]).forEach((row, b) =>
    row.forEach((t, p) => {
      if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t >= V) invalid(`${what}: token ${String(t)} at row ${b}, position ${p} is not an id in [0, ${V})`);
    }),
  );
  if (T < 2) invalid(`${what} needs at least two positions (each predicts the next token)`);
  const mask = maskOf(r, options, B, T, what);
  const counted = new Uint8Array(B * (T - 1));
  for (let b = 0; b < B; b++) for (let t = 0; t < T - 1; t++) counted[b * (T - 1) + t] = mask[b * T + t]! & mask[b * T + t + 1]!;
  return { x: r.logits.data, B, T, V, tokens, counted };
}

/** `[B, T]` of 0/1 from the attention mask option, the result's padding, or all ones. */
function maskOf(r: LogitsAndTokens, options: LossOptions, B: number, T: number, what: string): Uint8Array {
  const mask = new Uint8Array(B * T).fill(1);
  if (options.attentionMask !== undefined) {
    const m = options.attentionMask;
    if (!Array.isArray(m) || m.length !== B || m.some((row) => !Array.isArray(row) || row.length !== T)) invalid(`${what}: attentionMask must be ${B} rows of ${T} entries`);
    (m as readonly (readonly unknown[])[]).forEach((row, b) =>
      row.forEach((v, t) => {
        if (v !== 0 && v !== 1) invalid(`${what}: attentionMask holds ${String(v)} at row ${b}, position ${t} (0 or 1)`);
        mask[b * T + t] = v;
      }),
    );
    return mask;
  }
  if (r.pad === undefined) return mask;
  if (!Array.isArray(r.pad) || r.pad.length !== B) invalid(`${what}: pad must list one count per row`);
  if (r.padding !== undefined && r.padding !== 'left' && r.padding !== 'right') invalid(`${what}: padding must be 'left' or 'right'`);
  r.pad.forEach((n, b) => {
    checkInteger(n, `${what}: pad[${b}]`, 0, T);
    const [lo, hi] = r.padding === 'right' ? [T - n, T] : [0, n];
    mask.fill(0, b * T + lo, b * T + hi);
  });
  return mask;
}

/** log_softmax(logits at (b, t))[id] in double precision. */
function logProbAt(c: Checked, b: number, t: number, id: number): number {
  const o = (b * c.T + t) * c.V;
  let max = -Infinity;
  for (let i = o; i < o + c.V; i++) max = Math.max(max, c.x[i]!);
  let z = 0;
  for (let i = o; i < o + c.V; i++) z += Math.exp(c.x[i]! - max);
  return c.x[o + id]! - max - Math.log(z);
}

/**
 * The log-probability the model gave each actual next token, `[batch, pos - 1]`: entry (b, t) is
 * log_softmax(logits[b, t])[tokens[b][t + 1]]. Positions that do not count (padding) are 0, as
 * TransformerLens's masked `lm_cross_entropy_loss`.
 */
export function tokenLogProbs(result: LogitsAndTokens, options: LossOptions = {}): Tensor {
  const c = checkLogits(result, options, 'tokenLogProbs');
  const out = new Float32Array(c.B * (c.T - 1));
  for (let b = 0; b < c.B; b++)
    for (let t = 0; t < c.T - 1; t++) if (c.counted[b * (c.T - 1) + t]) out[b * (c.T - 1) + t] = logProbAt(c, b, t, c.tokens[b]![t + 1]!);
  return new Tensor([c.B, c.T - 1], out);
}

/** Next-token cross-entropy per position, `[batch, pos - 1]` (TransformerLens's `loss_per_token=True`); 0 where a position does not count. */
export function lossPerToken(result: LogitsAndTokens, options: LossOptions = {}): Tensor {
  const lp = tokenLogProbs(result, options);
  return new Tensor(lp.shape, lp.data.map((v) => (v === 0 ? 0 : -v)));
}

/**
 * Mean next-token cross-entropy over every counted position of every row, TransformerLens's
 * `return_type="loss"`; the value `model.backward`'s `'loss'` metric differentiates.
 */
export function loss(result: LogitsAndTokens, options: LossOptions = {}): number {
  const c = checkLogits(result, options, 'loss');
  let sum = 0;
  let n = 0;
  for (let b = 0; b < c.B; b++)
    for (let t = 0; t < c.T - 1; t++) {
      if (!c.counted[b * (c.T - 1) + t]) continue;
      sum -= logProbAt(c, b, t, c.tokens[b]![t + 1]!);
      n++;
    }
  if (n === 0) invalid('loss: no position counts (every prediction involves padding)');
  return sum / n;
}

/** Options for {@link topKTokens}. */
export interface TopKOptions {
  /** How many tokens. Defaults to 10. */
  k?: number;
  /** Position to read (negative: from the end). Defaults to -1, the last. Logits of the last position only (`returnLogits: 'last'`) take -1 alone. */
  position?: number;
}

/** The k most likely next tokens of one batch row, most likely first. */
export interface TopKTokens {
  /** The position read (index into the run's positions). */
  position: number;
  ids: number[];
  /** Each token decoded alone (as {@link toStrTokens}); null when the model has no tokenizer. */
  tokens: string[] | null;
  logits: number[];
  /** softmax over the whole vocabulary. */
  probs: number[];
  logProbs: number[];
}

/**
 * The top-k next tokens at one position of every batch row, from a run's logits (`[batch, pos,
 * vocab]`, or `[batch, vocab]` with `returnLogits: 'last'`). Ordered by logit, largest first;
 * equal logits by lower id.
 */
export function topKTokens(model: Model, logits: Tensor | { logits: Tensor | null }, options: TopKOptions = {}): TopKTokens[] {
  checkObject(options, 'topKTokens options');
  const t = logits instanceof Tensor ? logits : isObject(logits) && logits.logits instanceof Tensor ? logits.logits : null;
  if (!t) invalid('topKTokens needs logits: a Tensor or a result with logits');
  const V = t.shape[t.shape.length - 1]!;
  if (t.shape.length !== 2 && t.shape.length !== 3) invalid(`topKTokens needs logits [batch, pos, vocab] or [batch, vocab], got [${t.shape.join(', ')}]`);
  const B = t.shape[0]!;
  const T = t.shape.length === 3 ? t.shape[1]! : 1;
  const k = options.k ?? 10;
  checkInteger(k, 'topKTokens: k', 1, V);
  const position = options.position ?? -1;
  checkInteger(position, 'topKTokens: position', -T, T - 1);
  if (t.shape.length === 2 && position !== -1) invalid("topKTokens: logits of the last position only ('last') take position -1");
  const p = position < 0 ? T + position : position;
  const out: TopKTokens[] = [];
  for (let b = 0; b < B; b++) {
    const o = (b * T + p) * V;
    const row = t.data.subarray(o, o + V);
    const ids = topIndices(row, k);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let z = 0;
    for (const v of row) z += Math.exp(v - max);
    const lse = max + Math.log(z);
    const logProbs = ids.map((i) => row[i]! - lse);
    const tok = model.tokenizer;
    out.push({
      position: p,
      ids,
      tokens: tok ? ids.map((i) => tok.decode([i], { cleanUpTokenizationSpaces: false })) : null,
      logits: ids.map((i) => row[i]!),
      probs: logProbs.map(Math.exp),
      logProbs,
    });
  }
  return out;
}

/** Indices of the k largest values, largest first, ties by lower index (NaN never selected first). */
function topIndices(row: Float32Array, k: number): number[] {
  const ids: number[] = [];
  const before = (i: number, j: number) => row[i]! > row[j]! || (row[i] === row[j] && i < j) || (Number.isNaN(row[j]!) && !Number.isNaN(row[i]!));
  for (let i = 0; i < row.length; i++) {
    if (ids.length === k && !before(i, ids[k - 1]!)) continue;
    let at = ids.length === k ? k - 1 : ids.length;
    ids[at] = i;
    while (at > 0 && before(ids[at]!, ids[at - 1]!)) {
      [ids[at], ids[at - 1]] = [ids[at - 1]!, ids[at]!];
      at--;
    }
  }
  return ids;
}
