// Shared test helpers: fixture paths and comparisons with the tolerance policy of
// test/fixtures/README.md (relative error = max |ours - ref| / max |ref|).
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const FIXTURES = join(ROOT, 'test', 'fixtures', 'models');

export function fixtureDir(name: string): string {
  return join(FIXTURES, name);
}

export function fixtureNames(): string[] {
  return readdirSync(FIXTURES).sort();
}

export interface Comparison {
  relError: number;
  maxAbsError: number;
  worst: number;
  firstMismatches: string[];
}

/**
 * Compares `ours` with `ref`: -inf must match -inf exactly (masked scores), every other value
 * is compared relative to the largest finite |ref|.
 */
export function compare(ours: Float32Array, ref: Float32Array, tol: number): Comparison {
  if (ours.length !== ref.length) throw new Error(`length ${ours.length} vs reference ${ref.length}`);
  let scale = 0;
  for (const v of ref) if (Number.isFinite(v)) scale = Math.max(scale, Math.abs(v));
  scale = Math.max(scale, 1e-30);
  let maxAbs = 0;
  let worst = -1;
  const firstMismatches: string[] = [];
  for (let i = 0; i < ref.length; i++) {
    const a = ours[i]!;
    const b = ref[i]!;
    let err: number;
    if (!Number.isFinite(b) || !Number.isFinite(a)) err = Object.is(a, b) ? 0 : Infinity;
    else err = Math.abs(a - b);
    if (err > maxAbs || Number.isNaN(err)) {
      maxAbs = Number.isNaN(err) ? Infinity : err;
      worst = i;
    }
    if (err / scale > tol && firstMismatches.length < 5) firstMismatches.push(`[${i}] ours ${a} ref ${b}`);
  }
  return { relError: maxAbs / scale, maxAbsError: maxAbs, worst, firstMismatches };
}
