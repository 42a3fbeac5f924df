// Cross-backend op test (as ggml's test-backend-ops): every op of the backend ABI on random
// shapes, run on the CPU backend (the reference) and on the CUDA backend, compared with a
// tolerance per dtype; the first mismatches are printed. Without a CUDA backend library or a
// GPU it prints why and checks only that the CPU table runs.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "engine/backend.h"
#include "engine/error.h"
#include "io/safetensors.h"

using nt::Backend;
using nt::DeviceBuffer;

namespace {

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float &x : v) x = d(rng);
  return v;
}

// Weights as a backend stores them: f32 as is, f16/bf16 as 16-bit words. `rounded` gets the
// values the device sees, upcast again, for the CPU reference.
std::vector<uint8_t> as_dtype(const std::vector<float> &v, nt_dtype dt, std::vector<float> *rounded) {
  rounded->resize(v.size());
  if (dt == NT_F32) {
    *rounded = v;
    return std::vector<uint8_t>(reinterpret_cast<const uint8_t *>(v.data()), reinterpret_cast<const uint8_t *>(v.data() + v.size()));
  }
  std::vector<uint8_t> out(v.size() * 2);
  for (size_t i = 0; i < v.size(); ++i) {
    const uint16_t h = dt == NT_BF16 ? nt::f32_to_bf16(v[i]) : nt::f32_to_f16(v[i]);
    (*rounded)[i] = dt == NT_BF16 ? nt::bf16_to_f32(h) : nt::f16_to_f32(h);
    out[2 * i] = static_cast<uint8_t>(h);
    out[2 * i + 1] = static_cast<uint8_t>(h >> 8);
  }
  return out;
}

// A test case runs an op on one backend from host inputs and returns host outputs.
using Case = std::function<std::vector<float>(const std::shared_ptr<Backend> &)>;

struct Runner {
  std::shared_ptr<Backend> cpu, cuda;
  int compared = 0;

  void run(const std::string &name, double tol, const Case &on_cpu, const Case &on_cuda) {
    std::vector<float> ref;
    try {
      ref = on_cpu(cpu);
    } catch (const std::exception &e) {
      CHECK(false, "%s: CPU backend failed: %s", name.c_str(), e.what());
      return;
    }
    CHECK(!ref.empty(), "%s: no output", name.c_str());
    if (!cuda) return;
    std::vector<float> got;
    try {
      got = on_cuda(cuda);
    } catch (const std::exception &e) {
      CHECK(false, "%s: CUDA backend failed: %s", name.c_str(), e.what());
      return;
    }
    ++compared;
    if (got.size() != ref.size()) {
      CHECK(false, "%s: %zu outputs vs %zu", name.c_str(), got.size(), ref.size());
      return;
    }
    double scale = 0, worst = 0;
    for (float r : ref)
      if (std::isfinite(r)) scale = std::max(scale, static_cast<double>(std::fabs(r)));
    scale = std::max(scale, 1e-30);
    int shown = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const bool same_inf = std::isinf(ref[i]) && ref[i] == got[i];
      const double err = same_inf ? 0.0 : (std::isfinite(got[i]) ? std::fabs(got[i] - ref[i]) / scale : INFINITY);
      worst = std::max(worst, err);
      if (err > tol && shown < 5) {
        std::fprintf(stderr, "  %s [%zu]: cuda %.8g cpu %.8g\n", name.c_str(), i, got[i], ref[i]);
        ++shown;
      }
    }
    CHECK(worst <= tol, "%s: relative error %.3g > %.1g", name.c_str(), worst, tol);
  }
};

std::vector<float> download(const std::shared_ptr<Backend> &be, const DeviceBuffer &b) {
  std::vector<float> h(b.bytes() / sizeof(float));
  be->check(be->api().copy_to_host(be->ctx(), h.data(), b.data(), b.bytes()), "download");
  return h;
}

DeviceBuffer up(const std::shared_ptr<Backend> &be, const std::vector<float> &v) { return DeviceBuffer::upload(be, v.data(), v.size() * sizeof(float)); }
template <class T>
DeviceBuffer up_raw(const std::shared_ptr<Backend> &be, const std::vector<T> &v) { return DeviceBuffer::upload(be, v.data(), v.size() * sizeof(T)); }

}  // namespace

int main() {
  Runner r;
  r.cpu = Backend::cpu(2);
  const char *dir = std::getenv("NEUROTAP_BACKEND_DIR");
  const std::string backend_dir = dir ? dir : "build/Release";
  try {
    r.cuda = Backend::load("cuda", backend_dir, 0, 2);
    std::printf("test-backend-ops: comparing CUDA (%s) with the CPU backend\n", r.cuda->device_name().c_str());
  } catch (const nt::EngineError &e) {
    std::printf("test-backend-ops: skipping the CUDA comparison: %s\n", e.what());
  }

  // GEMM, every weight dtype. bf16/f16 devices round activations to the weight dtype too, so
  // the tolerance is that dtype's: ~2^-8 (bf16) and ~2^-11 (f16) relative per product.
  for (nt_dtype dt : {NT_F32, NT_F16, NT_BF16}) {
    const double tol = dt == NT_F32 ? 1e-5 : dt == NT_F16 ? 4e-3 : 3e-2;
    for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{{1, 64, 96}, {7, 33, 17}, {130, 256, 70}}) {
      const std::vector<float> A = randn(M * K, 1), W = randn(N * K, 2, 1.0f / std::sqrt(static_cast<float>(K))), bias = randn(N, 3);
      std::vector<float> w_rounded;
      const std::vector<uint8_t> w_bytes = as_dtype(W, dt, &w_rounded);
      const std::string name = "gemm dtype " + std::to_string(dt) + " " + std::to_string(M) + "x" + std::to_string(K) + "x" + std::to_string(N);
      auto op = [&](const std::shared_ptr<Backend> &be, bool device_dtype) {
        DeviceBuffer a = up(be, A), b = up(be, bias), c(be, static_cast<size_t>(M * N) * sizeof(float));
        DeviceBuffer w = device_dtype ? up_raw(be, w_bytes) : up(be, w_rounded);
        be->check(be->api().gemm(be->ctx(), a.f32(), M, K, w.data(), device_dtype ? dt : NT_F32, N, b.f32(), c.f32()), "gemm");
        return download(be, c);
      };
      r.run(name, tol, [&](const auto &be) { return op(be, false); }, [&](const auto &be) { return op(be, true); });
    }
  }

  // Embedding and learned positions, every table dtype.
  for (nt_dtype dt : {NT_F32, NT_F16, NT_BF16}) {
    const int64_t V = 50, d = 24, B = 2, T = 5;
    const std::vector<float> table = randn(V * d, 4);
    std::vector<float> rounded;
    const std::vector<uint8_t> bytes = as_dtype(table, dt, &rounded);
    const std::vector<int32_t> tokens = {0, 49, 3, 7, 7, 12, 1, 2, 3, 4};
    const std::vector<int32_t> pad = {0, 2};
    auto op = [&](const std::shared_ptr<Backend> &be, bool device_dtype) {
      DeviceBuffer t = device_dtype ? up_raw(be, bytes) : up(be, rounded), tok = up_raw(be, tokens), p = up_raw(be, pad);
      DeviceBuffer out(be, static_cast<size_t>(B * T * d) * sizeof(float));
      be->check(be->api().embed(be->ctx(), t.data(), device_dtype ? dt : NT_F32, static_cast<const int32_t *>(tok.data()), B * T, d, out.f32()), "embed");
      be->check(be->api().add_positions(be->ctx(), t.data(), device_dtype ? dt : NT_F32, B, T, d, 3, static_cast<const int32_t *>(p.data()), out.f32()), "add_positions");
      return download(be, out);
    };
    r.run("embed + add_positions dtype " + std::to_string(dt), 1e-6, [&](const auto &be) { return op(be, false); }, [&](const auto &be) { return op(be, true); });
  }

  // Norms, with and without weights and scale output.
  for (int64_t d : {8, 64, 771}) {
    const int64_t M = 9;
    const std::vector<float> x = randn(M * d, 5, 3.0f), w = randn(d, 6), b = randn(d, 7);
    for (int variant = 0; variant < 4; ++variant) {
      const bool layer = variant < 2, weighted = variant % 2 == 0;
      auto op = [&](const std::shared_ptr<Backend> &be) {
        DeviceBuffer xb = up(be, x), wb = up(be, w), bb = up(be, b), out(be, static_cast<size_t>(M * d) * sizeof(float)), s(be, static_cast<size_t>(M) * sizeof(float));
        const float *wp = weighted ? wb.f32() : nullptr;
        if (layer) be->check(be->api().layer_norm(be->ctx(), xb.f32(), M, d, wp, weighted ? bb.f32() : nullptr, 1e-5f, out.f32(), s.f32()), "layer_norm");
        else be->check(be->api().rms_norm(be->ctx(), xb.f32(), M, d, wp, 1e-6f, out.f32(), s.f32()), "rms_norm");
        std::vector<float> o = download(be, out), sc = download(be, s);
        o.insert(o.end(), sc.begin(), sc.end());
        return o;
      };
      r.run(std::string(layer ? "layer_norm" : "rms_norm") + (weighted ? "" : " (no weight)") + " d=" + std::to_string(d), 1e-5, op, op);
    }
  }

  // Elementwise: add, mul_rows, activations, gated activations.
  {
    const int64_t n = 4099, d = 17, M = n / d;
    const std::vector<float> a = randn(n, 8, 2.0f), b = randn(n, 9, 2.0f), w = randn(d, 10);
    auto add = [&](const std::shared_ptr<Backend> &be) {
      DeviceBuffer x = up(be, a), y = up(be, b);
      be->check(be->api().add(be->ctx(), x.f32(), y.f32(), n, x.f32()), "add");
      return download(be, x);
    };
    r.run("add", 1e-6, add, add);
    auto mul = [&](const std::shared_ptr<Backend> &be) {
      DeviceBuffer x = up(be, a), wb = up(be, w), o(be, static_cast<size_t>(M * d) * sizeof(float));
      be->check(be->api().mul_rows(be->ctx(), x.f32(), M, d, wb.f32(), o.f32()), "mul_rows");
      return download(be, o);
    };
    r.run("mul_rows", 1e-6, mul, mul);
    auto cap = [&](const std::shared_ptr<Backend> &be) {
      std::vector<float> xs = a;
      xs[7] = -std::numeric_limits<float>::infinity();  // a masked score stays -inf
      DeviceBuffer x = up(be, xs);
      be->check(be->api().softcap(be->ctx(), x.f32(), n, 1.5f), "softcap");
      std::vector<float> o = download(be, x);
      o[7] = o[7] == -std::numeric_limits<float>::infinity() ? -1e30f : 0.0f;  // compared as a finite flag
      return o;
    };
    r.run("softcap", 1e-6, cap, cap);
    for (nt_activation act : {NT_ACT_GELU_TANH, NT_ACT_GELU_ERF, NT_ACT_SILU, NT_ACT_RELU}) {
      auto plain = [&](const std::shared_ptr<Backend> &be) {
        DeviceBuffer x = up(be, a);
        be->check(be->api().activation(be->ctx(), act, x.f32(), n), "activation");
        return download(be, x);
      };
      r.run("activation " + std::to_string(act), 2e-6, plain, plain);
      auto gated = [&](const std::shared_ptr<Backend> &be) {
        DeviceBuffer g = up(be, a), u = up(be, b), o(be, static_cast<size_t>(n) * sizeof(float));
        be->check(be->api().gated_activation(be->ctx(), act, g.f32(), u.f32(), n, o.f32()), "gated_activation");
        return download(be, o);
      };
      r.run("gated_activation " + std::to_string(act), 2e-6, gated, gated);
    }
  }

  // Rotary with an offset and left padding.
  {
    const int64_t B = 2, T = 6, heads = 3, D = 16;
    const std::vector<float> x = randn(B * T * heads * D, 11);
    std::vector<float> inv(D / 2);
    for (int64_t i = 0; i < D / 2; ++i) inv[i] = 1.0f / std::pow(10000.0f, 2.0f * i / D);
    const std::vector<int32_t> pad = {0, 3};
    auto op = [&](const std::shared_ptr<Backend> &be) {
      DeviceBuffer xb = up(be, x), ib = up(be, inv), p = up_raw(be, pad);
      be->check(be->api().rope(be->ctx(), xb.f32(), B, T, heads, D, ib.f32(), 5, static_cast<const int32_t *>(p.data())), "rope");
      return download(be, xb);
    };
    r.run("rope", 2e-6, op, op);
  }

  // Attention: fused and instrumented, GQA, sliding window, padding, a strided KV store.
  for (int window : {0, 3}) {
    for (bool cached : {false, true}) {
      const int64_t B = 2, H = 4, G = 2, D = 16, T = cached ? 2 : 7, q0 = cached ? 5 : 0, KV = q0 + T, S = cached ? 11 : T;
      const std::vector<float> q = randn(B * T * H * D, 12), k = randn(B * S * G * D, 13), v = randn(B * S * G * D, 14);
      const std::vector<int32_t> pad = {0, 2};
      const std::string tag = " window=" + std::to_string(window) + (cached ? " cached" : "");
      auto shape = [&](const DeviceBuffer &p) {
        return nt_attention_shape{B, T, H, G, D, S, KV, q0, 0.25f, window, static_cast<const int32_t *>(p.data())};
      };
      auto fused = [&](const std::shared_ptr<Backend> &be) {
        DeviceBuffer qb = up(be, q), kb = up(be, k), vb = up(be, v), p = up_raw(be, pad), z(be, static_cast<size_t>(B * T * H * D) * sizeof(float));
        const nt_attention_shape s = shape(p);
        be->check(be->api().attention(be->ctx(), &s, qb.f32(), kb.f32(), vb.f32(), z.f32()), "attention");
        return download(be, z);
      };
      r.run("attention" + tag, 1e-5, fused, fused);
      auto instrumented = [&](const std::shared_ptr<Backend> &be) {
        DeviceBuffer qb = up(be, q), kb = up(be, k), vb = up(be, v), p = up_raw(be, pad);
        DeviceBuffer sc(be, static_cast<size_t>(B * H * T * KV) * sizeof(float)), z(be, static_cast<size_t>(B * T * H * D) * sizeof(float));
        const nt_attention_shape s = shape(p);
        be->check(be->api().attention_scores(be->ctx(), &s, qb.f32(), kb.f32(), sc.f32()), "attention_scores");
        std::vector<float> out = download(be, sc);
        be->check(be->api().softmax_rows(be->ctx(), sc.f32(), B * H * T, KV), "softmax_rows");
        const std::vector<float> pat = download(be, sc);
        be->check(be->api().attention_apply(be->ctx(), &s, sc.f32(), vb.f32(), z.f32()), "attention_apply");
        const std::vector<float> zz = download(be, z);
        out.insert(out.end(), pat.begin(), pat.end());
        out.insert(out.end(), zz.begin(), zz.end());
        return out;
      };
      r.run("attention scores/softmax/apply" + tag, 1e-5, instrumented, instrumented);
    }
  }

  // Edits: every op, with position, row and head selection, on a per-head layout.
  {
    const int64_t B = 2, T = 5, heads = 3, width = 8;
    const std::vector<float> x = randn(B * T * heads * width, 15), vec = randn(width, 16), src = randn(B * T * heads * width, 17);
    std::vector<float> unit = vec;
    double n2 = 0;
    for (float f : unit) n2 += f * f;
    for (float &f : unit) f = static_cast<float>(f / std::sqrt(n2));
    const std::vector<int64_t> positions = {1, 3};
    const std::vector<int32_t> rows = {1}, head_list = {0, 2}, pad = {0, 1};
    for (int op = NT_EDIT_ADD; op <= NT_EDIT_PATCH; ++op) {
      for (int selection = 0; selection < 3; ++selection) {
        auto run = [&](const std::shared_ptr<Backend> &be) {
          DeviceBuffer xb = up(be, x), vb = up(be, op >= NT_EDIT_PROJECT_OUT && op <= NT_EDIT_PROJECTION_CAP ? unit : vec), sb = up(be, src);
          DeviceBuffer pb = up_raw(be, positions), rb = up_raw(be, rows), hb = up_raw(be, head_list), padb = up_raw(be, pad);
          nt_edit e{};
          e.op = static_cast<nt_edit_op>(op);
          e.vec = vb.f32();
          e.factor = 0.5f;
          e.lo = -0.3f;
          e.hi = 0.2f;
          e.source = sb.f32();
          if (selection == 1) {
            e.positions = static_cast<const int64_t *>(pb.data());
            e.n_positions = 2;
            e.heads = static_cast<const int32_t *>(hb.data());
            e.n_heads = 2;
          } else if (selection == 2) {
            e.rows = static_cast<const int32_t *>(rb.data());
            e.n_rows = 1;
            e.last_only = 1;
          }
          const nt_edit_context ctx{B, T, heads, width, 0, T, 0, static_cast<const int32_t *>(padb.data())};
          be->check(be->api().apply_edit(be->ctx(), &e, &ctx, xb.f32()), "apply_edit");
          return download(be, xb);
        };
        r.run("apply_edit op " + std::to_string(op) + " selection " + std::to_string(selection), 1e-6, run, run);
      }
    }
  }

  // copy_2d (KV-cache appends, last-position gathers).
  {
    const std::vector<float> src = randn(6 * 10, 18);
    auto op = [&](const std::shared_ptr<Backend> &be) {
      DeviceBuffer s = up(be, src), d = up(be, std::vector<float>(6 * 16, -1.0f));
      be->check(be->api().copy_2d(be->ctx(), d.f32() + 2, 16 * sizeof(float), s.f32() + 1, 10 * sizeof(float), 7 * sizeof(float), 6), "copy_2d");
      return download(be, d);
    };
    r.run("copy_2d", 0, op, op);
  }

  std::printf("test-backend-ops: %d cases compared across backends\n", r.compared);
  return report("test-backend-ops");
}
