// The SAE read-outs a forward asks for (`saeFeatures`: top-k activations and/or firing counts per
// attached SAE), checked against the attached SAEs and laid out as the addon fills them.
import type { NativeRunOptions } from '../bindings/native.js';
import { InvalidInputError } from '../errors.js';
import type { AttachedSae, SparseFeatures } from './Model.js';

export interface SaeReadoutRequest {
  k?: number;
  hooks?: readonly string[];
  counts?: boolean;
  rows?: Uint8Array;
}

/** Output arrays for each requested read-out and the addon's description of them. */
export function saeReadouts(
  req: SaeReadoutRequest | undefined,
  attached: ReadonlyMap<string, AttachedSae>,
  hookIndex: ReadonlyMap<string, number>,
  batch: number,
  pos: number,
): { features: Map<string, SparseFeatures>; featureCounts: Map<string, Uint32Array>; nativeFeatures: NonNullable<NativeRunOptions['saeFeatures']> } {
  const features = new Map<string, SparseFeatures>();
  const featureCounts = new Map<string, Uint32Array>();
  const nativeFeatures: NonNullable<NativeRunOptions['saeFeatures']> = [];
  if (!req) return { features, featureCounts, nativeFeatures };
  const { k, counts, rows } = req;
  const hooks = req.hooks ?? [...attached.keys()];
  if (hooks.length === 0) throw new InvalidInputError('ERR_INVALID_INPUT', 'saeFeatures needs an attached SAE');
  if (rows && rows.length !== batch * pos) throw new InvalidInputError('ERR_INVALID_INPUT', `saeFeatures.rows must hold batch x pos = ${batch * pos} entries`);
  for (const h of hooks) {
    const a = attached.get(h);
    if (!a) throw new InvalidInputError('ERR_INVALID_INPUT', `saeFeatures: no SAE is attached at '${h}'`);
    const n: (typeof nativeFeatures)[number] = { index: hookIndex.get(h)! };
    if (k !== undefined) {
      if (!Number.isInteger(k) || k < 1 || k > a.sae.cfg.dSae) throw new InvalidInputError('ERR_INVALID_INPUT', `saeFeatures.k must be an integer in [1, ${a.sae.cfg.dSae}]`);
      const f: SparseFeatures = { k, shape: [batch, pos, k], indices: new Int32Array(batch * pos * k), values: new Float32Array(batch * pos * k) };
      features.set(h, f);
      Object.assign(n, { k, indices: f.indices, values: f.values });
    }
    if (counts) {
      const c = new Uint32Array(a.sae.cfg.dSae);
      featureCounts.set(h, c);
      Object.assign(n, { counts: c, ...(rows ? { rows } : {}) });
    }
    nativeFeatures.push(n);
  }
  return { features, featureCounts, nativeFeatures };
}
