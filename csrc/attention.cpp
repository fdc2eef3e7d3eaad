// Attention for short sequences on the CPU: trainer::small_attention_{fwd,bwd}
// (used by the compiled step, trainer/compile/attention.py).
//
// ATen's CPU flash-attention kernel is blocked for long sequences; at the sizes of small language
// models (T <= 128, head size <= 128) one (batch, head) pair's Q, K, V, scores and probabilities fit
// in L1/L2 and the whole pair is best done in one go: S = scale Q K^T, a row softmax (causal rows stop
// at the diagonal), O = P V. The forward keeps P (T x T per pair), so the backward needs no
// recomputation and no exp:
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(P * dP)),  dQ = scale dS K,  dK = scale dS^T Q.
// Work is split over (batch, head) pairs with at::parallel_for. Inner loops are written
// on GCC vector types (16 floats: one AVX-512 register), register-blocked; exp is a polynomial
// (degree 7 on [-ln2/2, ln2/2], ~1e-7 relative error) evaluated 16 lanes at a time.
//
// Layouts: q, k, v are [B, H, T, D] views with a contiguous last dimension and any other strides
// (e.g. the transposed split of one fused qkv projection). out, dq, dk and dv are allocated
// [B, T, H, D]-contiguous and returned as [B, H, T, D] views (the layout the usual
// `y.transpose(1, 2).contiguous().view(B, T, C)` reads without a copy); p is [B, H, T, T] contiguous.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "vec16.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

namespace trainer {
namespace {

using at::Tensor;
using namespace vec;

struct Strides {
  int64_t b, h, t;  // element strides of dims 0, 1, 2 (dim 3 is contiguous)
  explicit Strides(const Tensor& x) : b(x.stride(0)), h(x.stride(1)), t(x.stride(2)) {}
};

// Register-blocked inner products with GCC vector types (16 floats: one AVX-512 register, or two
// AVX2 ones): blocks of kR rows x 64 columns (scores) or kR rows x 32 head columns (weighted sums)
// keep their accumulators in registers over the whole reduction.
constexpr int64_t kR = 4;   // rows per block
constexpr int64_t kJ = 64;  // score columns per block (4 vectors)
constexpr int64_t kD = 32;  // head-dimension columns per block (2 vectors)

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// z[:ld] = softmax(s[:n]) padded with zeros (s and z hold ld >= n floats, ld a multiple of 16)
inline void row_softmax(const float* s, int64_t n, int64_t ld, float* z) {
  const vi16 lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  const v16 neg = v16{} - INFINITY;
  v16 mv = neg;
  for (int64_t j = 0; j < ld; j += 16) {
    const v16 x = load16(s + j);
    const v16 xm = (lane + static_cast<int32_t>(j)) < static_cast<int32_t>(n) ? x : neg;
    mv = xm > mv ? xm : mv;
  }
  float m = mv[0];
  for (int i = 1; i < 16; ++i) m = std::max(m, mv[i]);
  v16 sv = {};
  for (int64_t j = 0; j < ld; j += 16) {
    v16 e = vexp(load16(s + j) - m);
    e = (lane + static_cast<int32_t>(j)) < static_cast<int32_t>(n) ? e : v16{};
    store16(z + j, e);
    sv += e;
  }
  float sum = 0.0f;
  for (int i = 0; i < 16; ++i) sum += sv[i];
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < ld; j += 16) store16(z + j, load16(z + j) * inv);
}

// out[r][j] = sum_k a[r][k] * bt[k][j], r < kR, j < ncols (rounded up to kJ: bt is zero padded and
// out has room). a: kR rows of lda floats; bt: K rows of ldb; out: kR rows of ldo.
inline void rows_x_mat_t(const float* a, int64_t lda, const float* bt, int64_t ldb, int64_t K, int64_t ncols,
                         float* out, int64_t ldo) {
  for (int64_t j0 = 0; j0 < ncols; j0 += kJ) {
    v16 acc[kR][4] = {};
    for (int64_t kk = 0; kk < K; ++kk) {
      const float* b = bt + kk * ldb + j0;
      const v16 b0 = load16(b), b1 = load16(b + 16), b2 = load16(b + 32), b3 = load16(b + 48);
#pragma GCC unroll 4
      for (int64_t r = 0; r < kR; ++r) {
        const float x = a[r * lda + kk];
        acc[r][0] += x * b0;
        acc[r][1] += x * b1;
        acc[r][2] += x * b2;
        acc[r][3] += x * b3;
      }
    }
    for (int64_t r = 0; r < kR; ++r)
      for (int64_t c = 0; c < 4; ++c) store16(out + r * ldo + j0 + 16 * c, acc[r][c]);
  }
}

// out[r][:D] = sum_{j in [j_begin, j_end)} w(r, j) * m[j][:], w(r, j) = w[r * wr + j * wc]; m: rows of
// ldm >= round_up(D, kD) floats, zero padded; out: kR rows of ldo floats (only D written).
inline void rows_x_mat(const float* w, int64_t wr, int64_t wc, const float* m, int64_t ldm, int64_t j_begin,
                       int64_t j_end, int64_t D, float* out, int64_t ldo, int64_t rows) {
  for (int64_t d0 = 0; d0 < D; d0 += kD) {
    v16 acc[kR][2] = {};
    for (int64_t j = j_begin; j < j_end; ++j) {
      const float* row = m + j * ldm + d0;
      const v16 m0 = load16(row), m1 = load16(row + 16);
#pragma GCC unroll 4
      for (int64_t r = 0; r < kR; ++r) {
        const float x = w[r * wr + j * wc];
        acc[r][0] += x * m0;
        acc[r][1] += x * m1;
      }
    }
    const int64_t nd = std::min(kD, D - d0);
    for (int64_t r = 0; r < rows; ++r) {
      float tmp[kD];
      store16(tmp, acc[r][0]);
      store16(tmp + 16, acc[r][1]);
      std::memcpy(out + r * ldo + d0, tmp, nd * sizeof(float));
    }
  }
}

// rows [T, D] of a strided head plus `bias` ([D], or nullptr) -> contiguous [Tp, ld] (zero padded),
// times `scale`
inline void load_rows(const float* src, int64_t stride, int64_t T, int64_t D, int64_t Tp, int64_t ld, float* dst,
                      const float* bias, float scale = 1.0f) {
  for (int64_t t = 0; t < T; ++t) {
    const float* s = src + t * stride;
    float* o = dst + t * ld;
    if (bias) {
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) o[d] = (s[d] + bias[d]) * scale;
    } else {
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) o[d] = s[d] * scale;
    }
    std::fill(o + D, o + ld, 0.0f);
  }
  std::fill(dst + T * ld, dst + Tp * ld, 0.0f);
}

// the transpose [D, ld] of a strided head's rows plus `bias` ([D], or nullptr), zero padded to ld columns
// (16 x 16 tiles transposed in registers; ld >= T rounded up to 16)
inline void load_transposed(const float* src, int64_t stride, int64_t T, int64_t D, int64_t ld, float* dst,
                            const float* bias) {
  const int64_t T16 = round_up(T, 16);
  if (T16 < ld)
    for (int64_t d = 0; d < D; ++d) std::fill(dst + d * ld + T16, dst + (d + 1) * ld, 0.0f);
  v16 r[16];
  for (int64_t d0 = 0; d0 < D; d0 += 16) {
    const int64_t nd = std::min<int64_t>(16, D - d0);
    const v16 b = bias ? loadn(bias + d0, nd) : v16{};
    for (int64_t t0 = 0; t0 < T; t0 += 16) {
      const int64_t nt = std::min<int64_t>(16, T - t0);
      for (int64_t i = 0; i < 16; ++i) r[i] = i < nt ? loadn(src + (t0 + i) * stride + d0, nd) + b : v16{};
      transpose16(r);
      for (int64_t i = 0; i < nd; ++i) store16(dst + (d0 + i) * ld + t0, r[i]);
    }
  }
}

// Optional per-head biases of q, k, v ([H, D] contiguous each): the kernels attend over q + q_bias
// etc., so a fused qkv projection's bias is added as its rows are loaded instead of into its output.
struct HeadBias {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  int64_t D = 0;
  HeadBias(const char* name, const Tensor& q_like, const std::optional<Tensor>& bq, const std::optional<Tensor>& bk,
           const std::optional<Tensor>& bv)
      : D(q_like.size(3)) {
    const float** dst[3] = {&q, &k, &v};
    const std::optional<Tensor>* src[3] = {&bq, &bk, &bv};
    for (int i = 0; i < 3; ++i) {
      if (!src[i]->has_value()) continue;
      const Tensor& b = src[i]->value();
      TORCH_CHECK(b.device().is_cpu() && b.scalar_type() == at::kFloat && b.is_contiguous() && b.dim() == 2 &&
                      b.size(0) == q_like.size(1) && b.size(1) == D,
                  name, ": a bias must be a contiguous float32 [H, D] CPU tensor");
      *dst[i] = b.data_ptr<float>();
    }
  }
  static const float* head(const float* p, int64_t h, int64_t D) { return p ? p + h * D : nullptr; }
  const float* qh(int64_t h) const { return head(q, h, D); }
  const float* kh(int64_t h) const { return head(k, h, D); }
  const float* vh(int64_t h) const { return head(v, h, D); }
};

void check_inputs(const char* name, const Tensor& q, const Tensor& k, const Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(), name,
              ": q, k, v must all be [B, H, T, D] of one shape");
  for (const Tensor* x : {&q, &k, &v}) {
    TORCH_CHECK(x->device().is_cpu() && x->scalar_type() == at::kFloat, name, ": CPU float32 tensors only");
    TORCH_CHECK(x->stride(3) == 1, name, ": the head dimension must be contiguous");
  }
}

// [B, H, T, D] view of a new [B, T, H, D]-contiguous tensor
Tensor empty_bhtd(const Tensor& like) {
  const auto s = like.sizes();
  return at::empty({s[0], s[2], s[1], s[3]}, like.options()).transpose(1, 2);
}

std::tuple<Tensor, Tensor> small_attention_fwd(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                               double scale_, const std::optional<Tensor>& q_bias,
                                               const std::optional<Tensor>& k_bias,
                                               const std::optional<Tensor>& v_bias) {
  check_inputs("small_attention_fwd", q, k, v);
  const HeadBias bias("small_attention_fwd", q, q_bias, k_bias, v_bias);
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  const int64_t Tp = round_up(T, kJ), Dp = round_up(D, kD);
  const float scale = static_cast<float>(scale_);
  Tensor out = empty_bhtd(q);
  Tensor p = at::empty({B, H, T, T}, q.options());
  const Strides sq(q), sk(k), sv(v), so(out);
  const float* Q0 = q.data_ptr<float>();
  const float* K0 = k.data_ptr<float>();
  const float* V0 = v.data_ptr<float>();
  float* O0 = out.data_ptr<float>();
  float* P0 = p.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    const int64_t Tr = round_up(T, kR);
    // kt: K^T; vp: V rows; qs: scaled Q rows; sb: a block of scores; pz: P rows of the block
    std::vector<float> kt(D * Tp), vp(Tp * Dp), qs(Tr * Dp), sb(kR * Tp), pz(kR * Tp);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      float* O = O0 + b * so.b + h * so.h;
      float* P = P0 + bh * T * T;
      load_transposed(K0 + b * sk.b + h * sk.h, sk.t, T, D, Tp, kt.data(), bias.kh(h));
      load_rows(V0 + b * sv.b + h * sv.h, sv.t, T, D, Tp, Dp, vp.data(), bias.vh(h));
      load_rows(Q0 + b * sq.b + h * sq.h, sq.t, T, D, Tr, Dp, qs.data(), bias.qh(h), scale);
      for (int64_t i0 = 0; i0 < T; i0 += kR) {
        const int64_t rows = std::min(kR, T - i0);
        const int64_t nmax = causal ? i0 + rows : T;  // keys any row of the block sees
        rows_x_mat_t(qs.data() + i0 * Dp, Dp, kt.data(), Tp, D, nmax, sb.data(), Tp);
        for (int64_t r = 0; r < kR; ++r) {
          float* z = pz.data() + r * Tp;
          if (r >= rows) {
            std::fill(z, z + Tp, 0.0f);
            continue;
          }
          row_softmax(sb.data() + r * Tp, causal ? i0 + r + 1 : T, Tp, z);
          std::memcpy(P + (i0 + r) * T, z, T * sizeof(float));
        }
        rows_x_mat(pz.data(), Tp, 1, vp.data(), Dp, 0, nmax, D, O + i0 * so.t, so.t, rows);
      }
    }
  });
  return {out, p};
}

// dq, dk, dv: [B, H, T, D] outputs sharing one layout (strides), written in full
void attention_bwd_into(const char* name, const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& p, bool causal, double scale_, const HeadBias& bias, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv) {
  // q, k, v: checked by the caller (check_inputs)
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  TORCH_CHECK(grad_out.sizes() == q.sizes() && grad_out.scalar_type() == at::kFloat, name,
              ": grad_out must match q");
  TORCH_CHECK(p.is_contiguous() && p.sizes() == at::IntArrayRef({B, H, T, T}), name,
              ": p must be the forward's [B, H, T, T] probabilities");
  const Tensor go = grad_out.stride(3) == 1 ? grad_out : grad_out.contiguous();
  const int64_t Tp = round_up(T, kJ), Dp = round_up(D, kD);
  const float scale = static_cast<float>(scale_);
  const Strides sq(q), sk(k), sv(v), sg(go), sd(dq);
  TORCH_INTERNAL_ASSERT(dk.strides() == dq.strides() && dv.strides() == dq.strides());
  const float* Q0 = q.data_ptr<float>();
  const float* K0 = k.data_ptr<float>();
  const float* V0 = v.data_ptr<float>();
  const float* G0 = go.data_ptr<float>();
  const float* P0 = p.data_ptr<float>();
  float* DQ0 = dq.data_ptr<float>();
  float* DK0 = dk.data_ptr<float>();
  float* DV0 = dv.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    const int64_t Tr = round_up(T, kR);
    // vt: V^T; kp, qp, gp: K, Q, dO rows; sb: a block of dP; ds: scale * dS (all rows, Tr x Tp);
    // pp: P padded to Tr x Tp (P itself where it needs no padding: T a multiple of kJ)
    const bool padded = Tp != T || Tr != T;
    std::vector<float> vt(D * Tp), kp(Tp * Dp), qp(Tr * Dp), gp(Tr * Dp), sb(kR * Tp), ds(Tr * Tp),
        pp(padded ? Tr * Tp : 0);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const float* P = P0 + bh * T * T;
      load_transposed(V0 + b * sv.b + h * sv.h, sv.t, T, D, Tp, vt.data(), bias.vh(h));
      load_rows(K0 + b * sk.b + h * sk.h, sk.t, T, D, Tp, Dp, kp.data(), bias.kh(h));
      load_rows(Q0 + b * sq.b + h * sq.h, sq.t, T, D, Tr, Dp, qp.data(), bias.qh(h));
      load_rows(G0 + b * sg.b + h * sg.h, sg.t, T, D, Tr, Dp, gp.data(), nullptr);
      std::fill(ds.begin(), ds.end(), 0.0f);
      const float* PP = P;  // the forward wrote zeros above a causal diagonal
      if (padded) {
        std::fill(pp.begin(), pp.end(), 0.0f);
        for (int64_t i = 0; i < T; ++i) std::memcpy(pp.data() + i * Tp, P + i * T, T * sizeof(float));
        PP = pp.data();
      }
      float* DQ = DQ0 + b * sd.b + h * sd.h;
      for (int64_t i0 = 0; i0 < T; i0 += kR) {
        const int64_t rows = std::min(kR, T - i0);
        const int64_t nmax = causal ? i0 + rows : T;
        rows_x_mat_t(gp.data() + i0 * Dp, Dp, vt.data(), Tp, D, nmax, sb.data(), Tp);  // dP = dO V^T
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t n = causal ? i0 + r + 1 : T;
          const float* pi = PP + (i0 + r) * Tp;
          const float* dp = sb.data() + r * Tp;
          float* dsi = ds.data() + (i0 + r) * Tp;
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int64_t j = 0; j < n; ++j) dot += pi[j] * dp[j];
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) dsi[j] = scale * pi[j] * (dp[j] - dot);
        }
        rows_x_mat(ds.data() + i0 * Tp, Tp, 1, kp.data(), Dp, 0, nmax, D, DQ + i0 * sd.t, sd.t, rows);  // dQ
      }
      float* DK = DK0 + b * sd.b + h * sd.h;
      float* DV = DV0 + b * sd.b + h * sd.h;
      for (int64_t j0 = 0; j0 < T; j0 += kR) {  // key rows j0..j0+kR: columns of dS and P
        const int64_t rows = std::min(kR, T - j0);
        const int64_t i_begin = causal ? j0 : 0;  // queries that saw these keys
        rows_x_mat(ds.data() + j0, 1, Tp, qp.data(), Dp, i_begin, T, D, DK + j0 * sd.t, sd.t, rows);  // dK
        rows_x_mat(PP + j0, 1, Tp, gp.data(), Dp, i_begin, T, D, DV + j0 * sd.t, sd.t, rows);  // dV
      }
    }
  });
}

std::tuple<Tensor, Tensor, Tensor> small_attention_bwd(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                                       const Tensor& v, const Tensor& p, bool causal, double scale,
                                                       const std::optional<Tensor>& q_bias,
                                                       const std::optional<Tensor>& k_bias,
                                                       const std::optional<Tensor>& v_bias) {
  check_inputs("small_attention_bwd", q, k, v);
  const HeadBias bias("small_attention_bwd", q, q_bias, k_bias, v_bias);
  Tensor dq = empty_bhtd(q), dk = empty_bhtd(q), dv = empty_bhtd(q);
  attention_bwd_into("small_attention_bwd", grad_out, q, k, v, p, causal, scale, bias, dq, dk, dv);
  return {dq, dk, dv};
}

// The gradients packed as the [B, T, 3 * H * D] tensor a fused qkv projection's backward reads
// (dq, dk, dv side by side in each token's row): what cat([dq, dk, dv] as [B, T, H * D], -1) makes,
// without the copy.
Tensor small_attention_bwd_packed(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& p, bool causal, double scale, const std::optional<Tensor>& q_bias,
                                  const std::optional<Tensor>& k_bias, const std::optional<Tensor>& v_bias) {
  check_inputs("small_attention_bwd_packed", q, k, v);
  const HeadBias bias("small_attention_bwd_packed", q, q_bias, k_bias, v_bias);
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  Tensor packed = at::empty({B, T, 3, H, D}, q.options());
  attention_bwd_into("small_attention_bwd_packed", grad_out, q, k, v, p, causal, scale, bias,
                     packed.select(2, 0).transpose(1, 2), packed.select(2, 1).transpose(1, 2),
                     packed.select(2, 2).transpose(1, 2));
  return packed.view({B, T, 3 * H * D});
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(trainer, m) {
  // q_bias, k_bias, v_bias: [H, D] each, added to q, k, v as they are read (see HeadBias)
  m.def(
      "small_attention_fwd(Tensor q, Tensor k, Tensor v, bool causal, float scale, Tensor? q_bias=None, "
      "Tensor? k_bias=None, Tensor? v_bias=None) -> (Tensor, Tensor)");
  m.def(
      "small_attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor p, bool causal, float scale, "
      "Tensor? q_bias=None, Tensor? k_bias=None, Tensor? v_bias=None) -> (Tensor, Tensor, Tensor)");
  m.def(
      "small_attention_bwd_packed(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor p, bool causal, "
      "float scale, Tensor? q_bias=None, Tensor? k_bias=None, Tensor? v_bias=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(trainer, CPU, m) {
  m.impl("small_attention_fwd", &small_attention_fwd);
  m.impl("small_attention_bwd", &small_attention_bwd);
  m.impl("small_attention_bwd_packed", &small_attention_bwd_packed);
}

}  // namespace trainer
