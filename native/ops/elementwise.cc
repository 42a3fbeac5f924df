// CPU norms, activations, residual adds and rotary embedding. References: torch.nn.LayerNorm,
// HF LlamaRMSNorm, NewGELUActivation, apply_rotary_pos_emb; checked by the whole-model tests.
#include <cmath>
#include <limits>
#include <vector>

#include "engine/config.h"
#include "ops/cpu-features.h"
#include "ops/ops.h"

namespace nt {

namespace {

// Splits n elements into chunks big enough to amortize a pool dispatch (~64 KB of floats).
constexpr int64_t kChunk = 16384;

template <class F>
void for_chunks(ThreadPool &pool, int64_t n, F fn) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  pool.parallel_for(chunks, [&](int64_t c) {
    const int64_t i0 = c * kChunk, i1 = std::min(n, i0 + kChunk);
    fn(i0, i1);
  });
}

// Rows per item so that an item is at least ~kChunk floats.
template <class F>
void for_rows(ThreadPool &pool, int64_t rows, int64_t d, F fn) {
  const int64_t per = std::max<int64_t>(1, kChunk / std::max<int64_t>(1, d));
  const int64_t items = (rows + per - 1) / per;
  pool.parallel_for(items, [&](int64_t it) {
    const int64_t r0 = it * per, r1 = std::min(rows, r0 + per);
    for (int64_t r = r0; r < r1; ++r) fn(r);
  });
}

inline float gelu_tanh(float x) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * x * (1.0f + std::tanh(k * (x + 0.044715f * x * x * x)));
}
inline float gelu_erf(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f)); }
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
inline float relu(float x) { return x > 0.0f ? x : 0.0f; }

}  // namespace

// Vector GELU-tanh / SiLU (elementwise-simd.cc).
bool activation_simd(int isa, int activation, const float *gate, const float *up, float *out, int64_t i0, int64_t i1);

void layer_norm_f32(ThreadPool &pool, const float *x, int64_t M, int64_t d, const float *w, const float *b, float eps, float *out,
                    float *scale_out) {
  for_rows(pool, M, d, [&](int64_t r) {
    const float *xr = x + r * d;
    float *o = out + r * d;
    // Double accumulation: keeps the statistics exact to float rounding, whatever d is.
    double mean = 0;
    for (int64_t i = 0; i < d; ++i) mean += xr[i];
    mean /= static_cast<double>(d);
    double var = 0;
    for (int64_t i = 0; i < d; ++i) {
      double c = xr[i] - mean;
      var += c * c;
    }
    var /= static_cast<double>(d);
    const double scale = std::sqrt(var + static_cast<double>(eps));
    if (scale_out) scale_out[r] = static_cast<float>(scale);
    const double inv = 1.0 / scale;
    for (int64_t i = 0; i < d; ++i) {
      float v = static_cast<float>((xr[i] - mean) * inv);
      o[i] = v * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
    }
  });
}

void rms_norm_f32(ThreadPool &pool, const float *x, int64_t M, int64_t d, const float *w, float eps, float *out, float *scale_out) {
  for_rows(pool, M, d, [&](int64_t r) {
    const float *xr = x + r * d;
    float *o = out + r * d;
    double ms = 0;
    for (int64_t i = 0; i < d; ++i) ms += static_cast<double>(xr[i]) * xr[i];
    ms /= static_cast<double>(d);
    const double scale = std::sqrt(ms + static_cast<double>(eps));
    if (scale_out) scale_out[r] = static_cast<float>(scale);
    const double inv = 1.0 / scale;
    for (int64_t i = 0; i < d; ++i) {
      float v = static_cast<float>(xr[i] * inv);
      o[i] = w ? v * w[i] : v;
    }
  });
}

void mul_rows_f32(ThreadPool &pool, const float *x, int64_t M, int64_t d, const float *w, float *out) {
  for_rows(pool, M, d, [&](int64_t r) {
    for (int64_t i = 0; i < d; ++i) out[r * d + i] = x[r * d + i] * w[i];
  });
}

void add_f32(ThreadPool &pool, const float *a, const float *b, int64_t n, float *out) {
  for_chunks(pool, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out[i] = a[i] + b[i];
  });
}

void gelu_tanh_f32(ThreadPool &pool, float *x, int64_t n) {
  const int isa = static_cast<int>(cpu_isa());
  for_chunks(pool, n, [&](int64_t i0, int64_t i1) {
    if (activation_simd(isa, static_cast<int>(Activation::GeluTanh), x, nullptr, x, i0, i1)) return;
    for (int64_t i = i0; i < i1; ++i) x[i] = gelu_tanh(x[i]);
  });
}

void gelu_erf_f32(ThreadPool &pool, float *x, int64_t n) {
  for_chunks(pool, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) x[i] = gelu_erf(x[i]);
  });
}

void softcap_f32(ThreadPool &pool, float *x, int64_t n, float cap) {
  // HF: (x / cap).tanh() * cap in float32; tanh(-inf) * cap would be -cap, so -inf is kept.
  for_chunks(pool, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      if (x[i] != -std::numeric_limits<float>::infinity()) x[i] = std::tanh(x[i] / cap) * cap;
  });
}

void relu_f32(ThreadPool &pool, float *x, int64_t n) {
  for_chunks(pool, n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) x[i] = relu(x[i]);
  });
}

void silu_f32(ThreadPool &pool, float *x, int64_t n) {
  const int isa = static_cast<int>(cpu_isa());
  for_chunks(pool, n, [&](int64_t i0, int64_t i1) {
    if (activation_simd(isa, static_cast<int>(Activation::Silu), x, nullptr, x, i0, i1)) return;
    for (int64_t i = i0; i < i1; ++i) x[i] = silu(x[i]);
  });
}

void gated_act_f32(ThreadPool &pool, int activation, const float *gate, const float *up, int64_t n, float *out) {
  const Activation act = static_cast<Activation>(activation);
  const int isa = static_cast<int>(cpu_isa());
  for_chunks(pool, n, [&](int64_t i0, int64_t i1) {
    if (activation_simd(isa, activation, gate, up, out, i0, i1)) return;
    for (int64_t i = i0; i < i1; ++i) {
      float g = gate[i];
      switch (act) {
        case Activation::Silu: g = silu(g); break;
        case Activation::GeluTanh: g = gelu_tanh(g); break;
        case Activation::GeluErf: g = gelu_erf(g); break;
        case Activation::Relu: g = relu(g); break;
      }
      out[i] = g * up[i];
    }
  });
}

void rope_f32(ThreadPool &pool, float *x, int64_t B, int64_t T, int64_t heads, int64_t D, const float *inv_freq, int64_t pos0,
              const int32_t *pad) {
  const int64_t half = D / 2;
  pool.parallel_for(B * T, [&](int64_t item) {
    const int64_t b = item / T, t = item % T;
    const float position = static_cast<float>(pos0 + t - (pad ? pad[b] : 0));
    // HF forms the angle in float32 (inv_freq @ position_ids); round the same way.
    std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) {
      const float angle = inv_freq[i] * position;
      c[static_cast<size_t>(i)] = static_cast<float>(std::cos(static_cast<double>(angle)));
      s[static_cast<size_t>(i)] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
    for (int64_t h = 0; h < heads; ++h) {
      float *v = x + ((b * T + t) * heads + h) * D;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = v[i], x2 = v[i + half];
        v[i] = x1 * c[static_cast<size_t>(i)] - x2 * s[static_cast<size_t>(i)];
        v[i + half] = x2 * c[static_cast<size_t>(i)] + x1 * s[static_cast<size_t>(i)];
      }
    }
  });
}

}  // namespace nt
