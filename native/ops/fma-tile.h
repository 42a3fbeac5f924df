// The broadcast-FMA tile kernel the backward ops share (fma-tile.cc): an MR x 32 block of
// C = alpha * A · W (+ C), A read with arbitrary row / column strides (so a transposed operand
// costs nothing), W rows of up to 32 contiguous columns. Tests: test/native/test-backward.cc.
#pragma once

#include <cstdint>

namespace nt {

// One tile's operands: c[r * ldc + j] (=|+=) alpha * sum_{t < n} a[r * ars + t * acs] * w[t * ldw + j]
// for r < mr (<= fma_tile_rows()) and j < nr (<= 32). Only those rows of a and columns of w are read.
struct FmaTile {
  const float *a;
  int64_t ars, acs;
  const float *w;
  int64_t ldw;
  int64_t n;
  float *c;
  int64_t ldc;
  int64_t mr, nr;
  float alpha;
  bool accumulate;
};

// Rows per tile for the CPU's ISA (8 with AVX-512, 6 with AVX2, 4 scalar).
int64_t fma_tile_rows();
void fma_tile(const FmaTile &t);

}  // namespace nt
