// Sampling: greedy is argmax (first on ties), top-k/top-p keep the right candidates, draws
// follow the softmax distribution, and the seeded RNG reproduces.
import { describe, expect, it } from 'vitest';

import { argmax, Rng, sampleToken } from '../src/index.js';

describe('sampling', () => {
  const logits = Float32Array.from([1.0, 3.0, 2.0, 3.0, -1.0, 0.5]);

  it('greedy picks the first maximum, like torch.argmax', () => {
    expect(argmax(logits)).toBe(1);
    expect(sampleToken(logits, { temperature: 0 }, new Rng(1))).toBe(1);
  });

  it('the RNG is reproducible and roughly uniform', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const xs = Array.from({ length: 20000 }, () => a.next());
    expect(xs.slice(0, 5)).toEqual(Array.from({ length: 5 }, () => b.next()));
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
  });

  it('draws follow softmax(logits / T)', () => {
    const rng = new Rng(7);
    const T = 1.3;
    const counts = new Array<number>(logits.length).fill(0);
    const n = 40000;
    for (let i = 0; i < n; i++) counts[sampleToken(logits, { temperature: T }, rng)]!++;
    const z = Array.from(logits, (l) => Math.exp(l / T));
    const total = z.reduce((s, x) => s + x, 0);
    z.forEach((p, i) => expect(Math.abs(counts[i]! / n - p / total)).toBeLessThan(0.01));
  });

  it('top-k keeps the k most likely tokens', () => {
    const rng = new Rng(3);
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(sampleToken(logits, { temperature: 1, topK: 3 }, rng));
    expect([...seen].sort()).toEqual([1, 2, 3]);
  });

  it('top-p keeps the smallest set reaching p', () => {
    // probabilities at T=1: tokens 1 and 3 each ~0.37, token 2 ~0.14: p = 0.7 needs {1, 3}, p = 0.8 adds 2.
    const rng = new Rng(5);
    const draw = (p: number) => {
      const seen = new Set<number>();
      for (let i = 0; i < 3000; i++) seen.add(sampleToken(logits, { temperature: 1, topP: p }, rng));
      return [...seen].sort();
    };
    expect(draw(0.7)).toEqual([1, 3]);
    expect(draw(0.8)).toEqual([1, 2, 3]);
    expect(draw(0.01)).toEqual([1]);
  });
});
