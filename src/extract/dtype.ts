// float32 to float16 / bfloat16 bits with round-to-nearest-even, as torch's `.to(torch.float16)`
// and `.to(torch.bfloat16)`. Checked bit for bit against numpy in test/extract-output.test.ts.

/** Element types an extraction can write activations in. */
export type OutDtype = 'f32' | 'f16' | 'bf16';

/** The safetensors dtype name for an output dtype. */
export const SAFETENSORS_DTYPE: Readonly<Record<OutDtype, string>> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

/** Bytes per element of an output dtype. */
export const DTYPE_BYTES: Readonly<Record<OutDtype, number>> = { f32: 4, f16: 2, bf16: 2 };

/** Type guard for `--out-dtype` values. */
export function isOutDtype(s: unknown): s is OutDtype {
  return s === 'f32' || s === 'f16' || s === 'bf16';
}

function target(n: number, out: Uint16Array | undefined): Uint16Array {
  if (!out) return new Uint16Array(n);
  if (out.length < n) throw new RangeError(`output buffer holds ${out.length} elements, need ${n}`);
  return out;
}

/**
 * Converts float32 values to IEEE binary16 bits, rounding to nearest, ties to even. Values of
 * magnitude 65520 and above become ±inf, subnormal halves are rounded exactly, and NaN becomes
 * the quiet NaN `sign | 0x7e00` (torch's scalar rule; its payload is not kept). Writes into
 * `out` when given (it must hold `src.length` elements), else into a new array.
 */
export function toF16(src: Float32Array, out?: Uint16Array): Uint16Array {
  const n = src.length;
  const dst = target(n, out);
  // A Uint32Array view reads the float bits without a DataView call per element.
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  for (let i = 0; i < n; i++) {
    const f = bits[i]!;
    const sign = (f >>> 16) & 0x8000;
    const a = f & 0x7fffffff;  // |x| as bits
    let h: number;
    if (a >= 0x47800000) {
      // |x| >= 2^16 (or inf / NaN): every such finite value is past 65520, so inf.
      h = a > 0x7f800000 ? 0x7e00 : 0x7c00;
    } else if (a >= 0x38800000) {
      // Normal half (|x| >= 2^-14): rebias the exponent (127 -> 15) and round the 13 dropped
      // mantissa bits to nearest even; a carry into the exponent is the correct next value,
      // up to 0x7c00 (inf) for [65520, 65536).
      h = (a - 0x38000000 + 0xfff + ((a >>> 13) & 1)) >>> 13;
    } else if (a >= 0x33000000) {
      // Subnormal half: value = q * 2^-24 with q = m * 2^(e - 126), m the 24-bit significand.
      const e = a >>> 23;
      const m = (a & 0x7fffff) | 0x800000;
      const shift = 126 - e;  // 14 (e = 112) ... 24 (e = 102, |x| in [2^-25, 2^-24))
      const half = 1 << (shift - 1);
      const rem = m & ((1 << shift) - 1);
      let q = m >>> shift;
      if (rem > half || (rem === half && (q & 1) !== 0)) q++;
      h = q;  // q = 0x400 rounds up into the smallest normal, which is the right bit pattern
    } else {
      h = 0;  // |x| < 2^-25 rounds to zero (2^-25 itself is a tie, to even 0)
    }
    dst[i] = sign | h;
  }
  return dst;
}

/**
 * Converts float32 values to bfloat16 bits (the top 16 bits of a float32), rounding to nearest,
 * ties to even; values past the largest bfloat16 become ±inf and NaN becomes the quiet NaN
 * 0x7fc0 (torch's scalar rule). Writes into `out` when given, else into a new array.
 */
export function toBf16(src: Float32Array, out?: Uint16Array): Uint16Array {
  const n = src.length;
  const dst = target(n, out);
  const bits = new Uint32Array(src.buffer, src.byteOffset, n);
  for (let i = 0; i < n; i++) {
    const f = bits[i]!;
    // f + 0x7fff + lsb stays below 2^32 for every non-NaN f, so the shift sees no wrap-around.
    dst[i] = (f & 0x7fffffff) > 0x7f800000 ? 0x7fc0 : (f + 0x7fff + ((f >>> 16) & 1)) >>> 16;
  }
  return dst;
}
