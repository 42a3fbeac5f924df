// Next-token choice: greedy, or temperature -> top-k -> top-p -> a draw from a seeded RNG
// (HF's LogitsProcessor order). Tests: test/sampling.test.ts.

/** Sampling settings. */
export interface SamplingOptions {
  /** 0 picks the most likely token (greedy). Defaults to 0. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 = all). Defaults to 0. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1 = all). Defaults to 1. */
  topP?: number;
  /** Seed for reproducible sampling. Defaults to a random seed. */
  seed?: number;
}

/** A small, fast, seedable PRNG (xoshiro128**) giving floats in [0, 1). */
export class Rng {
  /** @internal The 128-bit state; generation hands it to the engine, which draws the same stream (native/engine/sampling.cc) and advances it in place. */
  readonly state: Uint32Array;
  constructor(seed: number) {
    // SplitMix32 expands the seed into the 128-bit state.
    let x = seed >>> 0;
    this.state = new Uint32Array(4);
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.state[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }

  next(): number {
    const s = this.state;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result / 4294967296;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Index of the largest logit (the first one on ties, as torch.argmax). */
export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

/** Chooses the next token from one row of logits. */
export function sampleToken(logits: Float32Array, opts: SamplingOptions, rng: Rng): number {
  const temperature = opts.temperature ?? 0;
  if (temperature === 0) return argmax(logits);
  const n = logits.length;
  let order = Array.from({ length: n }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
  const k = opts.topK ?? 0;
  if (k > 0 && k < n) order = order.slice(0, k);
  const max = logits[order[0]!]! / temperature;
  let probs = order.map((i) => Math.exp(logits[i]! / temperature - max));
  let total = probs.reduce((a, b) => a + b, 0);
  const p = opts.topP ?? 1;
  if (p < 1) {
    let cum = 0;
    let keep = 0;
    while (keep < probs.length) {
      cum += probs[keep]! / total;
      keep++;
      if (cum >= p) break;
    }
    order = order.slice(0, keep);
    probs = probs.slice(0, keep);
    total = probs.reduce((a, b) => a + b, 0);
  }
  let r = rng.next() * total;
  for (let i = 0; i < order.length; i++) {
    r -= probs[i]!;
    if (r < 0) return order[i]!;
  }
  return order[order.length - 1]!;
}
