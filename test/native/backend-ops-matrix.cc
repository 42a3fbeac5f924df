// Cross-backend op cases (run by test-backend-ops.cc): gemm (every weight dtype, odd shapes and
// pointer offsets, bias, packed weights), embed / add_positions, rope, every edit op with its
// selections, copy_2d.
#include <array>

#include "backend-ops.h"

namespace bops {
namespace {

// C[M, N] = A . W^T (+ bias) at element offsets oa (A), ow (W), ob (bias), oc (C); C starts as a
// sentinel so writes outside the output show. `pack`: through the backend's pack_weight if it has one.
void gemm_case(Runner &r, nt_dtype dt, int64_t M, int64_t K, int64_t N, int64_t off, bool bias, bool pack) {
  const int64_t oa = off, ow = off, ob = off, oc = off ? 3 : 0;
  const std::vector<float> A = randn(M * K + oa, 21 + M), W = randn(N * K + ow, 22 + K, 1.0f / std::sqrt(static_cast<float>(K))),
                           bv = randn(N + ob, 23);
  std::vector<float> w_rounded;
  const std::vector<uint8_t> w_bytes = as_dtype(W, dt, &w_rounded);
  const size_t esize = dt == NT_F32 ? 4 : 2;
  const std::string name = std::string("gemm ") + dtype_name(dt) + " M=" + std::to_string(M) + " K=" + std::to_string(K) + " N=" +
                           std::to_string(N) + (off ? " odd offsets" : "") + (bias ? " bias" : "") + (pack ? " packed" : "");
  r.run(name, gemm_tolerance(dt), [&](const BE &be, bool reference) {
    DeviceBuffer a = up(be, A), b = up(be, bv), c = up(be, std::vector<float>(M * N + oc, 7.0f));
    DeviceBuffer w = reference ? up(be, w_rounded) : up_raw(be, w_bytes);
    const nt_dtype wdt = reference ? NT_F32 : dt;
    const void *wp = static_cast<const uint8_t *>(w.data()) + ow * (reference ? 4 : esize);
    DeviceBuffer packed;
    nt_dtype pdt = wdt;
    if (pack && be->api().pack_weight) {
      void *p = be->api().pack_weight(be->ctx(), wp, wdt, N, K, &pdt);
      if (p) {
        packed = DeviceBuffer::adopt(be, p, 0);
        wp = p;
      } else {
        pdt = wdt;
      }
    }
    be->check(be->api().gemm(be->ctx(), a.f32() + oa, M, K, wp, pdt, N, bias ? b.f32() + ob : nullptr, c.f32() + oc), "gemm");
    return Outputs{{"", download(be, c)}};
  });
}

void gemm_cases(Runner &r) {
  const std::vector<std::array<int64_t, 3>> shapes = {{1, 1023, 517}, {37, 771, 130}, {5, 4097, 33}, {64, 257, 129}};
  for (nt_dtype dt : {NT_F32, NT_F16, NT_BF16}) {
    for (const auto &[M, K, N] : shapes) {
      gemm_case(r, dt, M, K, N, 0, true, false);
      gemm_case(r, dt, M, K, N, 1, false, false);
      gemm_case(r, dt, M, K, N, 1, true, false);
    }
    gemm_case(r, dt, 37, 771, 130, 0, true, true);
    gemm_case(r, dt, 1, 1023, 517, 0, false, true);
  }
}

// A prefill of 37 positions in 2 left-padded rows, and a decode step at position 64.
void embed_cases(Runner &r) {
  const int64_t V = 1000;
  for (nt_dtype dt : {NT_F32, NT_F16, NT_BF16}) {
    for (int64_t d : {771, 2048}) {
      const std::vector<float> table = randn(V * d, 31 + d);
      std::vector<float> rounded;
      const std::vector<uint8_t> bytes = as_dtype(table, dt, &rounded);
      for (bool decode : {false, true}) {
        const int64_t B = 2, T = decode ? 1 : 37, pos0 = decode ? 64 : 0;
        std::mt19937 rng(32);
        std::vector<int32_t> tokens(B * T);
        for (int32_t &t : tokens) t = static_cast<int32_t>(rng() % V);
        tokens[0] = 0;
        tokens.back() = static_cast<int32_t>(V - 1);
        const std::vector<int32_t> pad = {0, decode ? 7 : 5};
        const std::string name = std::string("embed + add_positions ") + dtype_name(dt) + " d=" + std::to_string(d) + (decode ? " decode" : " prefill");
        r.run(name, kExact, [&](const BE &be, bool reference) {
          DeviceBuffer t = reference ? up(be, rounded) : up_raw(be, bytes), tok = up_raw(be, tokens), p = up_raw(be, pad);
          const nt_dtype tdt = reference ? NT_F32 : dt;
          DeviceBuffer out = zeros(be, B * T * d);
          be->check(be->api().embed(be->ctx(), t.data(), tdt, i32(tok), B * T, d, out.f32()), "embed");
          Outputs o{{"embed", download(be, out)}};
          be->check(be->api().add_positions(be->ctx(), t.data(), tdt, B, T, d, pos0, i32(p), out.f32()), "add_positions");
          o.push_back({"add_positions", download(be, out)});
          return o;
        });
      }
    }
  }
}

void rope_cases(Runner &r) {
  for (int64_t D : {64, 80, 128, 256}) {
    for (int64_t pos0 : {0, 37}) {
      const int64_t B = 3, T = pos0 ? 1 : 5, heads = D == 256 ? 4 : 8;
      const std::vector<float> x = randn(B * T * heads * D, 41 + D);
      std::vector<float> inv(D / 2);
      const double theta = D == 128 ? 1e6 : 1e4;
      for (int64_t i = 0; i < D / 2; ++i) inv[i] = static_cast<float>(1.0 / std::pow(theta, 2.0 * i / D));
      const std::vector<int32_t> pad = {0, 2, 4};
      r.run("rope D=" + std::to_string(D) + " pos0=" + std::to_string(pos0), kMath, [&](const BE &be, bool) {
        DeviceBuffer xb = up(be, x), ib = up(be, inv), p = up_raw(be, pad);
        be->check(be->api().rope(be->ctx(), xb.f32(), B, T, heads, D, ib.f32(), pos0, i32(p)), "rope");
        return Outputs{{"", download(be, xb)}};
      });
    }
  }
}

// Every edit op under every selection, on four layouts: a residual stream, per-head z, head-major
// rows (scores / pattern), and a decode step past the prompt.
struct EditLayout {
  const char *name;
  int64_t B, T, heads, width, pos0, prompt_len;
  int32_t head_major;
};

void edit_cases(Runner &r) {
  const EditLayout layouts[] = {{"resid", 3, 7, 1, 771, 0, 7, 0},
                                {"z", 2, 6, 8, 64, 0, 6, 0},
                                {"pattern", 2, 5, 8, 37, 0, 5, 1},
                                {"decode", 3, 1, 4, 80, 9, 7, 0}};
  for (const EditLayout &L : layouts) {
    const int64_t n = L.B * L.T * L.heads * L.width;
    const std::vector<float> x = randn(n, 51), vec = randn(L.width, 52), src = randn(n, 53);
    std::vector<float> unit = vec;
    double n2 = 0;
    for (float f : unit) n2 += static_cast<double>(f) * f;
    for (float &f : unit) f = static_cast<float>(f / std::sqrt(n2));
    const std::vector<int32_t> pad = {0, 1, 3};
    const std::vector<int32_t> heads = L.heads == 1 ? std::vector<int32_t>{0} : std::vector<int32_t>{0, 3};
    const std::vector<int64_t> positions = L.pos0 ? std::vector<int64_t>{6, 8} : std::vector<int64_t>{0, 1, 3};
    const std::vector<int32_t> rows = {1, 2};
    for (int op = NT_EDIT_ADD; op <= NT_EDIT_PATCH; ++op) {
      for (int sel = 0; sel < 5; ++sel) {
        static const char *sel_names[] = {"all", "positions+heads", "rows+last", "generated", "prompt"};
        const bool projection = op == NT_EDIT_PROJECT_OUT || op == NT_EDIT_PROJECTION_CAP;
        const std::string name = std::string("apply_edit ") + L.name + " op " + std::to_string(op) + " " + sel_names[sel];
        r.run(name, projection ? kReduce : kExact, [&](const BE &be, bool) {
          DeviceBuffer xb = up(be, x), vb = up(be, projection ? unit : vec), sb = up(be, src);
          DeviceBuffer pb = up_raw(be, positions), rb = up_raw(be, rows), hb = up_raw(be, heads), padb = up_raw(be, pad);
          nt_edit e{};
          e.op = static_cast<nt_edit_op>(op);
          e.vec = vb.f32();
          e.factor = -1.5f;
          e.lo = -0.3f;
          e.hi = 0.2f;
          e.source = sb.f32();
          if (sel == 1) {
            e.positions = static_cast<const int64_t *>(pb.data());
            e.n_positions = static_cast<int64_t>(positions.size());
            e.heads = i32(hb);
            e.n_heads = static_cast<int64_t>(heads.size());
          } else if (sel == 2) {
            e.rows = i32(rb);
            e.n_rows = 2;
            e.last_only = 1;
          } else if (sel == 3) {
            e.generated_only = 1;
          } else if (sel == 4) {
            e.prompt_only = 1;
          }
          const nt_edit_context ctx{L.B, L.T, L.heads, L.width, L.pos0, L.prompt_len, L.head_major, i32(padb)};
          be->check(be->api().apply_edit(be->ctx(), &e, &ctx, xb.f32()), "apply_edit");
          return Outputs{{"", download(be, xb)}};
        });
      }
    }
    // Add and set with one vector per listed row (rows out of order: row 2's vector first).
    const std::vector<int32_t> per_rows = {2, 0};
    const std::vector<float> vecs = randn(2 * L.width, 54);
    for (int op : {NT_EDIT_ADD, NT_EDIT_SET}) {
      r.run(std::string("apply_edit ") + L.name + " op " + std::to_string(op) + " per-row vectors", kExact, [&](const BE &be, bool) {
        DeviceBuffer xb = up(be, x), vb = up(be, vecs), rb = up_raw(be, per_rows), padb = up_raw(be, pad);
        nt_edit e{};
        e.op = static_cast<nt_edit_op>(op);
        e.vec = vb.f32();
        e.rows = i32(rb);
        e.n_rows = 2;
        e.per_row = 1;
        const nt_edit_context ctx{L.B, L.T, L.heads, L.width, L.pos0, L.prompt_len, L.head_major, i32(padb)};
        be->check(be->api().apply_edit(be->ctx(), &e, &ctx, xb.f32()), "apply_edit");
        return Outputs{{"", download(be, xb)}};
      });
    }
  }
}

void copy_cases(Runner &r) {
  // A sub-block at float offsets, and the last-position gather of a [2, 37, 771] activation.
  const std::vector<float> src = randn(2 * 37 * 771, 61);
  r.run("copy_2d", 0, [&](const BE &be, bool) {
    DeviceBuffer s = up(be, src), d = up(be, std::vector<float>(6 * 16, -1.0f)), g = zeros(be, 2 * 771);
    be->check(be->api().copy_2d(be->ctx(), d.f32() + 2, 16 * sizeof(float), s.f32() + 1, 10 * sizeof(float), 7 * sizeof(float), 6), "copy_2d");
    be->check(be->api().copy_2d(be->ctx(), g.f32(), 771 * sizeof(float), s.f32() + 36 * 771, 37 * 771 * sizeof(float), 771 * sizeof(float), 2),
              "copy_2d gather");
    return Outputs{{"block", download(be, d)}, {"gather", download(be, g)}};
  });
}

}  // namespace

void matrix_cases(Runner &r) {
  gemm_cases(r);
  embed_cases(r);
  rope_cases(r);
  edit_cases(r);
  copy_cases(r);
}

}  // namespace bops
