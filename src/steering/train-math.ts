// Steering directions from contrastive pairs: mean difference (CAA) and first principal component
// of the differences (llama.cpp cvector-generator / repeng). Reference: numpy SVD in test/fixtures/generate_steering.py.
import { InvalidInputError } from '../errors.js';

/** Options of firstPrincipalComponent. */
export interface PrincipalComponentOptions {
  /**
   * Subtract the mean difference from every row before the PCA (repeng's `pca_diff`, which runs
   * sklearn's PCA, itself centering). Without it the result is the top right-singular vector of
   * the raw difference matrix, as llama.cpp's cvector-generator computes it. Defaults to false.
   */
  center?: boolean;
  /** Most power-iteration steps; the last iterate is returned if they run out. Defaults to 1000. */
  iterations?: number;
  /** Stop once the unit iterate moves less than this (L2) in one step. Defaults to 1e-12. */
  tolerance?: number;
}

const bad = (why: string) => new InvalidInputError('ERR_INVALID_INPUT', why);

/** Checks the rows: at least one, all the same non-zero width, finite. Returns the width. */
function checkDiffs(diffs: readonly Float32Array[], what: string): number {
  if (!Array.isArray(diffs) || diffs.length === 0) throw bad(`${what}: no difference vectors given`);
  const first = diffs[0];
  if (!(first instanceof Float32Array) || first.length === 0) throw bad(`${what}: row 0 must be a non-empty Float32Array`);
  const d = first.length;
  diffs.forEach((row, i) => {
    if (!(row instanceof Float32Array)) throw bad(`${what}: row ${i} is not a Float32Array`);
    if (row.length !== d) throw bad(`${what}: row ${i} has width ${row.length}, row 0 has ${d}`);
    for (let j = 0; j < d; j++) if (!Number.isFinite(row[j]!)) throw bad(`${what}: row ${i} holds a non-finite value (${row[j]}) at index ${j}`);
  });
  return d;
}

function meanRow(diffs: readonly Float32Array[], d: number): Float64Array {
  const mean = new Float64Array(d);
  for (const row of diffs) for (let j = 0; j < d; j++) mean[j]! += row[j]!;
  for (let j = 0; j < d; j++) mean[j]! /= diffs.length;
  return mean;
}

function norm(v: Float64Array): number {
  let s = 0;
  for (const x of v) s += x * x;
  return Math.sqrt(s);
}

/**
 * The mean of the difference rows (activation(positive) − activation(negative) per pair): the
 * contrastive activation addition (CAA) direction of Rimsky et al. Accumulated in float64; not
 * normalized. Throws InvalidInputError ERR_INVALID_INPUT for no rows, ragged widths or
 * non-finite values.
 */
export function meanDifference(diffs: readonly Float32Array[]): Float32Array {
  const d = checkDiffs(diffs, 'meanDifference');
  return Float32Array.from(meanRow(diffs, d));
}

/**
 * The first principal component of the difference rows D [n, d], unit norm: the top eigenvector
 * of DᵀD (uncentered, llama.cpp's cvector-generator) or of the covariance (`center: true`, repeng).
 *
 * Power iteration in float64, each step two matrix-vector products `v ← Dᵀ(D v)` so DᵀD [d, d]
 * is never formed (d = d_model can be large; costs 2·n·d per step). Start vector: the mean row,
 * or the row of largest norm when the mean is ~0 (always the case when centered). The sign is
 * fixed so that the mean projection of the raw diffs onto the result is >= 0 (positive examples
 * project higher, as repeng arranges it; repeng decides by a majority vote over pairs instead),
 * with ties broken by making the largest-magnitude component positive.
 *
 * Throws InvalidInputError ERR_INVALID_INPUT for no rows, ragged widths, non-finite values, or a
 * matrix that is all zero (after centering: e.g. a single row with `center: true`).
 */
export function firstPrincipalComponent(diffs: readonly Float32Array[], options: PrincipalComponentOptions = {}): Float32Array {
  const { center = false, iterations = 1000, tolerance = 1e-12 } = options;
  const d = checkDiffs(diffs, 'firstPrincipalComponent');
  if (!Number.isInteger(iterations) || iterations < 1) throw bad('firstPrincipalComponent: iterations must be a positive integer');
  if (!(tolerance >= 0)) throw bad('firstPrincipalComponent: tolerance must be >= 0');
  const n = diffs.length;
  const mean = meanRow(diffs, d);

  // X [n, d]: the rows in float64, centered if asked.
  const x = new Float64Array(n * d);
  diffs.forEach((row, i) => {
    for (let j = 0; j < d; j++) x[i * d + j] = center ? row[j]! - mean[j]! : row[j]!;
  });

  let maxRowNorm = 0;
  let maxRow = 0;
  for (let i = 0; i < n; i++) {
    const r = norm(x.subarray(i * d, (i + 1) * d));
    if (r > maxRowNorm) [maxRowNorm, maxRow] = [r, i];
  }
  if (maxRowNorm === 0) throw bad(`firstPrincipalComponent: the difference matrix is all zero${center ? ' after centering' : ''}`);

  let v = center || norm(mean) <= 1e-6 * maxRowNorm ? Float64Array.from(x.subarray(maxRow * d, (maxRow + 1) * d)) : Float64Array.from(mean);
  let vn = norm(v);
  for (let j = 0; j < d; j++) v[j]! /= vn;

  const xv = new Float64Array(n);  // [n] = X v
  for (let it = 0; it < iterations; it++) {
    for (let i = 0; i < n; i++) {
      let s = 0;
      const o = i * d;
      for (let j = 0; j < d; j++) s += x[o + j]! * v[j]!;
      xv[i] = s;
    }
    const next = new Float64Array(d);  // [d] = Xᵀ (X v)
    for (let i = 0; i < n; i++) {
      const s = xv[i]!;
      const o = i * d;
      for (let j = 0; j < d; j++) next[j]! += x[o + j]! * s;
    }
    vn = norm(next);
    // X v = 0: v is orthogonal to every row, which the start vector (a row or the mean) is not
    // unless X is degenerate in float64; keep the previous v.
    if (vn === 0) break;
    let delta = 0;
    for (let j = 0; j < d; j++) {
      next[j]! /= vn;
      delta += (next[j]! - v[j]!) ** 2;
    }
    v = next;
    if (Math.sqrt(delta) <= tolerance) break;
  }

  let proj = 0;
  for (let j = 0; j < d; j++) proj += mean[j]! * v[j]!;
  let flip = proj < 0;
  if (proj === 0) {
    let big = 0;
    for (let j = 1; j < d; j++) if (Math.abs(v[j]!) > Math.abs(v[big]!)) big = j;
    flip = v[big]! < 0;
  }
  const out = new Float32Array(d);
  for (let j = 0; j < d; j++) out[j] = flip ? -v[j]! : v[j]!;
  return out;
}
