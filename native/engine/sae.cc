// SAE forward at a hook, SAELens semantics (docs/SAE-MATH.md): normalize, subtract b_dec
// (apply_b_dec_to_input), encode with the backend GEMM, activate (ReLU / JumpReLU / TopK, its
// rescale_acts_by_decoder_norm / Gated), decode sparsely, de-normalize, add the error term
// computed from a hook-free pass.
// Reference: test/fixtures/generate_sae.py; tests: test/sae.test.ts.
#include "engine/sae.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>

#include "engine/error.h"
#include "ops/thread-pool.h"

namespace nt {

namespace {

const char *const kSuffix[kSaeHookCount] = {"hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post",
                                            "hook_sae_recons", "hook_sae_error",    "hook_sae_output"};

// layer_norm normalization divides by (std + eps), std unbiased, as SAELens; de-normalization
// multiplies by std alone (run_time_activation_ln_out).
constexpr float kLayerNormEps = 1e-5f;

void check_len(const std::vector<float> &v, int64_t n, const char *name) {
  if (static_cast<int64_t>(v.size()) != n)
    fail(code::kInvalidInput, std::string("SAE tensor ") + name + " has " + std::to_string(v.size()) + " values, expected " + std::to_string(n));
}

// The k largest of a[0..S) (ties: lower index first; NaN counts as -inf), as indices into
// `out` in index order. A lower bound t0 on the k-th largest, the smallest of k block maxima,
// leaves few candidates (a[j] > t0, or >= t0 when that is too few); the k-th largest value
// among them is found with nth_element and one pass over the candidates picks them out.
// Scratch: vals and cand, S each.
void top_k(const float *a, int64_t S, int64_t k, float *vals, int32_t *cand, int32_t *out) {
  const float ninf = -std::numeric_limits<float>::infinity();
  auto value = [&](int64_t j) { return std::isnan(a[j]) ? ninf : a[j]; };
  float t0 = ninf;
  if (S / k >= 2) {
    const int64_t block = S / k;
    t0 = std::numeric_limits<float>::infinity();
    for (int64_t b = 0; b < k; ++b) {
      float m = ninf;
      for (int64_t j = b * block; j < (b + 1) * block; ++j) m = a[j] > m ? a[j] : m;
      t0 = std::min(t0, m);
    }
  }
  int64_t n = 0;
  for (int64_t j = 0; j < S; ++j)
    if (a[j] > t0) cand[n++] = static_cast<int32_t>(j);
  if (n < k) {
    n = 0;
    for (int64_t j = 0; j < S; ++j)
      if (!(value(j) < t0)) cand[n++] = static_cast<int32_t>(j);
  }
  for (int64_t i = 0; i < n; ++i) vals[i] = value(cand[i]);
  std::nth_element(vals, vals + (k - 1), vals + n, std::greater<float>());
  const float t = vals[k - 1];
  int64_t above = 0;
  for (int64_t i = 0; i < n; ++i) above += value(cand[i]) > t;
  int64_t ties = k - above, m = 0;  // equal to t: the first `ties` of them by index
  for (int64_t i = 0; i < n && m < k; ++i) {
    const float v = value(cand[i]);
    if (v > t || (v == t && ties-- > 0)) out[m++] = cand[i];
  }
}

}  // namespace

const char *sae_hook_suffix(int which) { return kSuffix[which]; }

void AttachedSae::for_rows(int64_t M, const std::function<void(int64_t r0, int64_t r1)> &fn) const {
  ThreadPool *pool = be_->host_pool();
  if (!pool || pool->size() == 1 || M < 2) {
    fn(0, M);
    return;
  }
  const int64_t items = std::min<int64_t>(M, 4 * pool->size()), per = (M + items - 1) / items;
  pool->parallel_for((M + per - 1) / per, [&](int64_t it) { fn(it * per, std::min(M, (it + 1) * per)); });
}

AttachedSae::AttachedSae(std::shared_ptr<Backend> be, int base, SaeParams p, bool use_error_term)
    : be_(std::move(be)), base_(base), p_(std::move(p)), use_error_term_(use_error_term), scratch_(17) {
  const int64_t d = p_.d_in, S = p_.d_sae;
  if (d < 1 || S < 1) fail(code::kInvalidInput, "SAE d_in and d_sae must be positive");
  check_len(p_.W_enc, d * S, "W_enc");
  check_len(p_.b_enc, S, p_.arch == SaeArch::Gated ? "b_gate" : "b_enc");
  check_len(p_.W_dec, S * d, "W_dec");
  check_len(p_.b_dec, d, "b_dec");
  if (p_.arch == SaeArch::JumpRelu) check_len(p_.threshold, S, "threshold");
  if (p_.arch == SaeArch::Gated) {
    check_len(p_.r_mag, S, "r_mag");
    check_len(p_.b_mag, S, "b_mag");
    exp_r_mag_.resize(static_cast<size_t>(S));
    for (int64_t i = 0; i < S; ++i) exp_r_mag_[static_cast<size_t>(i)] = std::exp(p_.r_mag[static_cast<size_t>(i)]);
  }
  if (p_.arch == SaeArch::TopK && (p_.k < 1 || p_.k > S)) fail(code::kInvalidInput, "TopK SAE k must be in [1, d_sae]");
  if (p_.rescale_acts_by_decoder_norm) {
    if (p_.arch != SaeArch::TopK) fail(code::kInvalidInput, "rescale_acts_by_decoder_norm is a TopK SAE option");
    // SAELens: W_dec.norm(dim=-1); a zero (or NaN) norm would make every output NaN.
    dec_norm_.resize(static_cast<size_t>(S));
    for (int64_t j = 0; j < S; ++j) {
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(p_.W_dec[static_cast<size_t>(j * d + i)]) * p_.W_dec[static_cast<size_t>(j * d + i)];
      dec_norm_[static_cast<size_t>(j)] = static_cast<float>(std::sqrt(ss));
      if (!(dec_norm_[static_cast<size_t>(j)] > 0.0f) || !std::isfinite(dec_norm_[static_cast<size_t>(j)]))
        fail(code::kInvalidInput, "rescale_acts_by_decoder_norm needs finite, non-zero W_dec row norms; row " + std::to_string(j) + " has " +
                                      std::to_string(dec_norm_[static_cast<size_t>(j)]));
    }
  }
  if (p_.norm == SaeNorm::Scale && !(std::isfinite(p_.norm_scale) && p_.norm_scale != 0.0f))
    fail(code::kInvalidInput, "SAE normalization factor must be finite and non-zero");

  // The engine's GEMM takes W as [out, in]: W_enc^T [d_sae, d_in].
  std::vector<float> wt(static_cast<size_t>(S * d));
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < S; ++j) wt[static_cast<size_t>(j * d + i)] = p_.W_enc[static_cast<size_t>(i * S + j)];
  std::vector<float>().swap(p_.W_enc);
  enc_ = DeviceBuffer::upload(be_, wt.data(), wt.size() * sizeof(float));
  const nt_backend_api &api = be_->api();
  if (api.pack_weight) {
    nt_dtype packed = NT_F32;
    if (void *pw = api.pack_weight(be_->ctx(), enc_.data(), NT_F32, S, d, &packed)) {
      enc_ = DeviceBuffer::adopt(be_, pw, 0);
      enc_dtype_ = packed;
    }
  }
}

float *AttachedSae::buf(size_t slot, int64_t floats) {
  if (scratch_.size() <= slot) scratch_.resize(slot + 1);
  std::vector<float> &b = scratch_[slot];
  if (static_cast<int64_t>(b.size()) < floats) b.resize(static_cast<size_t>(floats));
  return b.data();
}

void AttachedSae::encode(const float *sae_in, int64_t M, float *u, float *pre, float *gate, float *sa, float *sb) {
  const int64_t d = p_.d_in, S = p_.d_sae;
  for_rows(M, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float *xr = sae_in + r * d;
      float *ur = u + r * d;
      float a = 1.0f, b = 0.0f;  // u = (x - b) * a
      float sd_out = 0.0f;       // layer_norm: the std, which denormalize multiplies by
      switch (p_.norm) {
        case SaeNorm::None: break;
        case SaeNorm::Scale: a = p_.norm_scale; break;
        case SaeNorm::ConstantNormRescale: {
          double ss = 0;
          for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * xr[i];
          a = static_cast<float>(std::sqrt(static_cast<double>(d)) / std::sqrt(ss));
          break;
        }
        case SaeNorm::LayerNorm: {
          double mu = 0;
          for (int64_t i = 0; i < d; ++i) mu += xr[i];
          mu /= static_cast<double>(d);
          double var = 0;
          for (int64_t i = 0; i < d; ++i) var += (xr[i] - mu) * (xr[i] - mu);
          const double sd = std::sqrt(var / static_cast<double>(std::max<int64_t>(1, d - 1)));
          b = static_cast<float>(mu);
          a = static_cast<float>(1.0 / (sd + kLayerNormEps));
          sd_out = static_cast<float>(sd);  // SAELens de-normalizes with the std, without the eps
          break;
        }
      }
      sa[r] = p_.norm == SaeNorm::LayerNorm ? sd_out : a;
      sb[r] = b;
      for (int64_t i = 0; i < d; ++i) ur[i] = (xr[i] - b) * a - (p_.apply_b_dec_to_input ? p_.b_dec[static_cast<size_t>(i)] : 0.0f);
    }
  });
  const nt_backend_api &api = be_->api();
  const bool gated = p_.arch == SaeArch::Gated;
  be_->check(api.gemm(be_->ctx(), u, M, d, enc_.data(), enc_dtype_, S, gated ? nullptr : p_.b_enc.data(), pre), "SAE encoder gemm");
  if (gated) {
    // gate = u·W_enc + b_gate; pre (the hooked magnitude) = (u·W_enc) * exp(r_mag) + b_mag.
    for_rows(M, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t j = 0; j < S; ++j) {
          const size_t i = static_cast<size_t>(r * S + j), js = static_cast<size_t>(j);
          gate[i] = pre[i] + p_.b_enc[js];
          pre[i] = pre[i] * exp_r_mag_[js] + p_.b_mag[js];
        }
    });
  }
}

void AttachedSae::activate(const float *pre, const float *gate, int64_t M, float *post) const {
  const int64_t S = p_.d_sae;
  for_rows(M, [&](int64_t r0, int64_t r1) {
    const bool topk = p_.arch == SaeArch::TopK, rescale = !dec_norm_.empty();
    std::vector<int32_t> idx(topk ? static_cast<size_t>(p_.k) : 0), cand(topk ? static_cast<size_t>(S) : 0);
    std::vector<float> vals(topk ? static_cast<size_t>(S) : 0), scaled(rescale ? static_cast<size_t>(S) : 0);
    for (int64_t r = r0; r < r1; ++r) {
      const float *pr = pre + r * S;
      float *po = post + r * S;
      switch (p_.arch) {
        case SaeArch::Standard:
          for (int64_t j = 0; j < S; ++j) po[j] = std::max(pr[j], 0.0f);
          break;
        case SaeArch::JumpRelu:
          for (int64_t j = 0; j < S; ++j) po[j] = pr[j] > p_.threshold[static_cast<size_t>(j)] ? std::max(pr[j], 0.0f) : 0.0f;
          break;
        case SaeArch::Gated: {
          const float *gr = gate + r * S;
          for (int64_t j = 0; j < S; ++j) po[j] = gr[j] > 0.0f ? std::max(pr[j], 0.0f) : 0.0f;
          break;
        }
        case SaeArch::TopK: {
          // rescale_acts_by_decoder_norm: pre * |W_dec[j]| is ranked and kept (acts_post sees it).
          const float *ranked = pr;
          if (rescale) {
            for (int64_t j = 0; j < S; ++j) scaled[static_cast<size_t>(j)] = pr[j] * dec_norm_[static_cast<size_t>(j)];
            ranked = scaled.data();
          }
          top_k(ranked, S, p_.k, vals.data(), cand.data(), idx.data());
          std::fill(po, po + S, 0.0f);
          for (int64_t t = 0; t < p_.k; ++t) po[idx[static_cast<size_t>(t)]] = std::max(ranked[idx[static_cast<size_t>(t)]], 0.0f);
          break;
        }
      }
    }
  });
}

void AttachedSae::decode(const float *post, int64_t M, float *recons) const {
  // Sparse: only firing features touch their W_dec row (L0 of a trained SAE is small).
  // rescale_acts_by_decoder_norm: post / |W_dec[j]| is what multiplies the row.
  const int64_t d = p_.d_in, S = p_.d_sae;
  const float *norm = dec_norm_.empty() ? nullptr : dec_norm_.data();
  for_rows(M, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float *y = recons + r * d;
      std::copy(p_.b_dec.begin(), p_.b_dec.end(), y);
      const float *a = post + r * S;
      for (int64_t j = 0; j < S; ++j) {
        if (a[j] == 0.0f) continue;
        const float w = norm ? a[j] / norm[j] : a[j], *row = p_.W_dec.data() + j * d;
        for (int64_t i = 0; i < d; ++i) y[i] += w * row[i];
      }
    }
  });
}

void AttachedSae::denormalize(float *y, int64_t M, const float *sa, const float *sb) const {
  if (p_.norm == SaeNorm::None) return;
  const int64_t d = p_.d_in;
  if (p_.norm == SaeNorm::LayerNorm) {  // y * std + mean (sa holds the std)
    for (int64_t r = 0; r < M; ++r)
      for (int64_t i = 0; i < d; ++i) y[r * d + i] = y[r * d + i] * sa[r] + sb[r];
    return;
  }
  for (int64_t r = 0; r < M; ++r)
    for (int64_t i = 0; i < d; ++i) y[r * d + i] = y[r * d + i] / sa[r] + sb[r];
}

void AttachedSae::read_features(const float *post, int64_t M, const SaeFeatures &f) const {
  const int64_t S = p_.d_sae;
  if (f.k > 0)
    for_rows(M, [&](int64_t r0, int64_t r1) {
      std::vector<float> vals(static_cast<size_t>(S));
      std::vector<int32_t> cand(static_cast<size_t>(S));
      for (int64_t r = r0; r < r1; ++r) {
        const float *a = post + r * S;
        int32_t *idx = f.indices + r * f.k;
        top_k(a, S, f.k, vals.data(), cand.data(), idx);
        auto v = [&](int32_t j) { return std::isnan(a[j]) ? -std::numeric_limits<float>::infinity() : a[j]; };
        std::sort(idx, idx + f.k, [&](int32_t i, int32_t j) { return v(i) > v(j) || (v(i) == v(j) && i < j); });
        for (int64_t t = 0; t < f.k; ++t) f.values[r * f.k + t] = a[idx[t]];
      }
    });
  if (f.counts)
    for (int64_t r = 0; r < M; ++r) {
      if (f.rows && !f.rows[r]) continue;
      const float *a = post + r * S;
      for (int64_t j = 0; j < S; ++j) f.counts[j] += a[j] > 0.0f;
    }
}

float *AttachedSae::reconstruct(const float *x, int64_t M, size_t slot, const Fire *fire, const SaeFeatures *features) {
  const int64_t d = p_.d_in, S = p_.d_sae;
  float *u = buf(slot + 1, M * d), *pre = buf(slot + 2, M * S), *post = buf(slot + 3, M * S);
  float *gate = p_.arch == SaeArch::Gated ? buf(slot + 4, M * S) : nullptr, *rec = buf(slot + 5, M * d);
  float *sa = buf(slot + 6, M), *sb = buf(slot + 7, M);
  const float *in = x;
  if (fire) {  // hooks edit a copy: the error term needs the original activation
    float *copy = buf(slot, M * d);
    std::memcpy(copy, x, static_cast<size_t>(M * d) * sizeof(float));
    (*fire)(kSaeInput, copy);
    in = copy;
  }
  encode(in, M, u, pre, gate, sa, sb);
  if (fire) (*fire)(kSaeActsPre, pre);
  activate(pre, gate, M, post);
  if (fire) (*fire)(kSaeActsPost, post);
  if (features) read_features(post, M, *features);
  decode(post, M, rec);
  if (fire) (*fire)(kSaeRecons, rec);
  denormalize(rec, M, sa, sb);
  return rec;
}

void AttachedSae::run(float *x, int64_t M, const Fire &fire, const Hooked &edited, const SaeFeatures *features) {
  const int64_t n = M * p_.d_in;
  float *rec = reconstruct(x, M, 0, &fire, features);  // the SAE's output without the error term
  if (use_error_term_) {
    // SAELens computes the error from a second, hook-free pass when its hooks edit something.
    const bool edits = edited(kSaeInput) || edited(kSaeActsPre) || edited(kSaeActsPost) || edited(kSaeRecons);
    const float *clean = edits ? reconstruct(x, M, 8, nullptr, nullptr) : rec;
    float *err = buf(16, n);
    for (int64_t i = 0; i < n; ++i) err[i] = x[i] - clean[i];
    fire(kSaeError, err);
    for (int64_t i = 0; i < n; ++i) rec[i] += err[i];
  }
  fire(kSaeOutput, rec);
  std::memcpy(x, rec, static_cast<size_t>(n) * sizeof(float));
}

}  // namespace nt
