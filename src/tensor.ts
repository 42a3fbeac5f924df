// The Tensor handed to users: a dtype, a shape and a typed array in row-major order.
import { InvalidInputError } from './errors.js';

/** Element types a Tensor can hold. */
export type DType = 'f32';

/** A dense row-major tensor whose data lives in a JS-owned typed array. */
export class Tensor {
  readonly dtype: DType = 'f32';
  constructor(
    readonly shape: readonly number[],
    readonly data: Float32Array,
  ) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (!(data instanceof Float32Array)) throw new InvalidInputError('ERR_INVALID_INPUT', 'a Tensor holds its data in a Float32Array');
    if (n !== data.length) throw new InvalidInputError('ERR_INVALID_INPUT', `a Tensor of shape [${shape.join(', ')}] needs ${n} elements, its data has ${data.length}`);
  }

  /** Number of elements. */
  get size(): number {
    return this.data.length;
  }

  /** The element at a full index, e.g. `t.get(0, 3, 17)`. */
  get(...index: number[]): number {
    if (index.length !== this.shape.length) throw new RangeError(`expected ${this.shape.length} indices, got ${index.length}`);
    let offset = 0;
    for (let i = 0; i < index.length; i++) {
      const k = index[i]!;
      const d = this.shape[i]!;
      if (!Number.isInteger(k) || k < 0 || k >= d) throw new RangeError(`index ${k} out of range for dim ${i} of size ${d}`);
      offset = offset * d + k;
    }
    return this.data[offset]!;
  }
}
