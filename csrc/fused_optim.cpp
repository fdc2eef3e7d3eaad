// Multi-tensor optimizer kernels for the CPU, and the schemas of every `torch.ops.trainer.*` op.
//
// One op call updates ALL tensors of a parameter group in one pass over memory: the tensors are
// laid end to end on a virtual global index, cut into fixed-size chunks, and the chunks are
// shared out over OpenMP threads (at::parallel_for, whose backend is OpenMP in torch's CPU
// builds, so the extension uses torch's own OpenMP runtime and honours torch.set_num_threads).
// The inner loops are plain float loops under `#pragma omp simd` that gcc vectorises with
// -O3 -march=native; bf16/fp16 are converted by hand with bit ops so the conversions vectorise too.
//
// Everything that changes between steps (lr, step count, grad scale, found_inf, clip coefficient)
// is read from 0-dim tensors, so a compiled graph that calls these ops never recompiles when the
// values change. Fake (meta) implementations are registered in Python (trainer/optim/_ops.py).
#include <Python.h>

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#ifdef TRAINER_WITH_CUDA
#include "fused_optim_cuda.h"  // CUDA kernels of the same ops (fused_optim_cuda.cu)
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace trainer {
namespace {

using at::Tensor;

// ---------------------------------------------------------------------------------------------
// Element conversions. Storage types: float, bf16 (as uint16 bits), fp16 (as _Float16).
// ---------------------------------------------------------------------------------------------
static inline float ld(const float* p, int64_t i) { return p[i]; }
static inline void st(float* p, int64_t i, float x) { p[i] = x; }

static inline float ld(const c10::BFloat16* p, int64_t i) {
  uint16_t h;
  std::memcpy(&h, p + i, 2);
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static inline void st(c10::BFloat16* p, int64_t i, float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  // Round to nearest even; NaN stays a (quiet) NaN.
  uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  uint16_t h = (x != x) ? uint16_t(0x7FC0) : uint16_t(r);
  std::memcpy(p + i, &h, 2);
}

#if defined(__FLT16_MAX__)
// gcc's _Float16 turns into vcvtph2ps/vcvtps2ph (F16C / AVX512-FP16) and vectorises.
static inline float ld(const c10::Half* p, int64_t i) {
  _Float16 h;
  std::memcpy(&h, p + i, 2);
  return float(h);
}
static inline void st(c10::Half* p, int64_t i, float x) {
  _Float16 h = _Float16(x);
  std::memcpy(p + i, &h, 2);
}
#else
static inline float ld(const c10::Half* p, int64_t i) { return float(p[i]); }
static inline void st(c10::Half* p, int64_t i, float x) { p[i] = c10::Half(x); }
#endif

static double read_scalar(const Tensor& t) {
  TORCH_CHECK(t.numel() == 1, "trainer: expected a one-element tensor, got shape ", t.sizes());
  TORCH_CHECK(t.device().is_cpu(), "trainer: CPU kernel got a scalar tensor on ", t.device());
  switch (t.scalar_type()) {
    case at::kFloat: return *t.const_data_ptr<float>();
    case at::kDouble: return *t.const_data_ptr<double>();
    case at::kLong: return double(*t.const_data_ptr<int64_t>());
    case at::kInt: return double(*t.const_data_ptr<int32_t>());
    case at::kBool: return *t.const_data_ptr<bool>() ? 1.0 : 0.0;
    default: return t.item<double>();
  }
}

// Gradient multiplier shared by every op: sign (maximize) * clip_coef / grad_scale.
// Returns false when found_inf says the step must be skipped.
static bool grad_multiplier(const std::optional<Tensor>& grad_scale, const std::optional<Tensor>& found_inf,
                            const std::optional<Tensor>& clip_coef, bool maximize, float* out) {
  if (found_inf.has_value() && found_inf->defined() && read_scalar(*found_inf) != 0.0) return false;
  double m = maximize ? -1.0 : 1.0;
  if (clip_coef.has_value() && clip_coef->defined()) m *= read_scalar(*clip_coef);
  if (grad_scale.has_value() && grad_scale->defined()) m /= read_scalar(*grad_scale);
  *out = float(m);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Tensor lists: contiguity handling and the chunked multi-tensor loop.
// ---------------------------------------------------------------------------------------------

// Non-contiguous inputs are copied into contiguous scratch tensors; mutated ones are copied back
// after the kernel. Parameters and optimizer state are contiguous in practice (only grads of
// views/transposes are not), so this path costs nothing in the common case.
struct ListArg {
  std::vector<Tensor> work;      // contiguous tensors the kernel reads/writes
  std::vector<int64_t> copy_back;  // indices whose work tensor is a scratch copy
  const std::vector<Tensor>* orig = nullptr;
};

static ListArg make_list(const at::TensorList& ts) {
  ListArg a;
  a.work.reserve(ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    if (ts[i].is_contiguous()) {
      a.work.push_back(ts[i]);
    } else {
      a.work.push_back(ts[i].contiguous());
      a.copy_back.push_back(int64_t(i));
    }
  }
  return a;
}

static void finish_list(const ListArg& a, const at::TensorList& ts) {
  for (int64_t i : a.copy_back) ts[i].copy_(a.work[i]);
}

// Elements per chunk: 32K elements is 896 KB of AdamW fp32 traffic, big enough to amortise the
// per-chunk bookkeeping and small enough to balance 400 small tensors over the threads.
constexpr int64_t kChunk = 32768;

// Calls fn(tensor_index, begin, end) for every piece of every tensor, in parallel over chunks of
// the concatenation of all tensors.
template <typename Fn>
static void for_each_piece(const std::vector<int64_t>& numels, Fn fn) {
  const int64_t n_t = int64_t(numels.size());
  std::vector<int64_t> offs(n_t + 1, 0);
  for (int64_t i = 0; i < n_t; ++i) offs[i + 1] = offs[i] + numels[i];
  const int64_t total = offs[n_t];
  if (total == 0) return;
  const int64_t n_chunks = (total + kChunk - 1) / kChunk;
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    int64_t t = int64_t(std::upper_bound(offs.begin(), offs.end(), c0 * kChunk) - offs.begin()) - 1;
    for (int64_t c = c0; c < c1; ++c) {
      // Pieces never straddle a chunk boundary (the grad norm relies on it).
      const int64_t g1 = std::min(total, (c + 1) * kChunk);
      for (int64_t g = c * kChunk; g < g1;) {
        while (offs[t + 1] <= g) ++t;  // skips empty tensors too
        const int64_t b = g - offs[t], e = std::min(offs[t + 1], g1) - offs[t];
        fn(t, b, e);
        g = offs[t] + e;
      }
    }
  });
}

static void check_same_numel(const char* what, const at::TensorList& a, const at::TensorList& b) {
  TORCH_CHECK(a.size() == b.size(), "trainer: ", what, " has ", b.size(), " tensors, params has ", a.size());
  for (size_t i = 0; i < a.size(); ++i)
    TORCH_CHECK(a[i].numel() == b[i].numel(), "trainer: ", what, "[", i, "] has ", b[i].numel(),
                " elements, params[", i, "] has ", a[i].numel());
}

static void check_state(const char* what, const at::TensorList& params, const at::TensorList& state) {
  check_same_numel(what, params, state);
  for (size_t i = 0; i < state.size(); ++i)
    TORCH_CHECK(state[i].scalar_type() == at::kFloat, "trainer: ", what, "[", i,
                "] must be float32 (optimizer state is kept in fp32), got ", state[i].scalar_type());
}

static void check_params_grads(const at::TensorList& params, const at::TensorList& grads) {
  check_same_numel("grads", params, grads);
  for (size_t i = 0; i < params.size(); ++i) {
    const auto dt = params[i].scalar_type();
    TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf,
                "trainer: params must be float32, bfloat16 or float16, got ", dt);
    TORCH_CHECK(grads[i].scalar_type() == dt, "trainer: grads[", i, "] dtype ", grads[i].scalar_type(),
                " differs from its param's dtype ", dt);
  }
}

static std::vector<int64_t> numels_of(const at::TensorList& ts) {
  std::vector<int64_t> n(ts.size());
  for (size_t i = 0; i < ts.size(); ++i) n[i] = ts[i].numel();
  return n;
}

// Runs body.template operator()<P>(i, b, e) with P the storage type of params[i].
#define TRAINER_DISPATCH_PARAM(dtype, ...)                                \
  switch (dtype) {                                                        \
    case at::kFloat: { using P = float; __VA_ARGS__; break; }             \
    case at::kBFloat16: { using P = c10::BFloat16; __VA_ARGS__; break; }  \
    case at::kHalf: { using P = c10::Half; __VA_ARGS__; break; }          \
    default: TORCH_CHECK(false, "trainer: unsupported dtype ", dtype);    \
  }

// ---------------------------------------------------------------------------------------------
// Adam / AdamW
// ---------------------------------------------------------------------------------------------
// omb1, omb2: 1 - beta1, 1 - beta2 rounded from double (as torch.optim's Python floats reach its
// kernels); 1.0f - 0.999f would be 1.3e-5 relative off, a drift of every exp_avg_sq
struct AdamScalars {
  float lr, beta1, beta2, eps, wd, gmul, step_size, bc2_sqrt_inv;
  bool decoupled;
  float omb1, omb2;
};

template <typename P, bool AMS, bool MASTER>
static void adam_piece(P* __restrict p, const P* __restrict g, float* __restrict m, float* __restrict v,
                       float* __restrict vmax, float* __restrict w, int64_t n, const AdamScalars s) {
  const float decay = s.decoupled ? 1.0f - s.lr * s.wd : 1.0f;
  const float l2 = s.decoupled ? 0.0f : s.wd;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float gi = ld(g, i) * s.gmul;
    float pi = MASTER ? w[i] : ld(p, i);
    gi += l2 * pi;
    pi *= decay;
    const float mi = m[i] + s.omb1 * (gi - m[i]);
    const float vi = s.beta2 * v[i] + s.omb2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float vu = vi;
    if (AMS) {
      vu = std::max(vmax[i], vi);
      vmax[i] = vu;
    }
    const float denom = std::sqrt(vu) * s.bc2_sqrt_inv + s.eps;
    pi -= s.step_size * mi / denom;
    if (MASTER) w[i] = pi;
    st(p, i, pi);
  }
}

void fused_adamw_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                     at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs, at::TensorList master_params,
                     at::TensorList steps, const Tensor& lr, double beta1, double beta2, double eps,
                     double weight_decay, bool amsgrad, bool maximize, bool decoupled,
                     const std::optional<Tensor>& grad_scale, const std::optional<Tensor>& found_inf,
                     const std::optional<Tensor>& clip_coef) {
  if (params.empty()) return;
  check_params_grads(params, grads);
  check_state("exp_avgs", params, exp_avgs);
  check_state("exp_avg_sqs", params, exp_avg_sqs);
  if (amsgrad) check_state("max_exp_avg_sqs", params, max_exp_avg_sqs);
  const bool master = !master_params.empty();
  if (master) check_state("master_params", params, master_params);
  TORCH_CHECK(steps.size() == params.size() || steps.size() == 1,
              "trainer: steps must hold one tensor per param or a single shared one");
  float gmul;
  if (!grad_multiplier(grad_scale, found_inf, clip_coef, maximize, &gmul)) return;

  const float lr_v = float(read_scalar(lr));
  // Bias corrections depend on each tensor's step; computed once per tensor, not per element.
  std::vector<float> step_size(params.size()), bc2_inv(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const double st_v = read_scalar(steps[steps.size() == 1 ? 0 : i]);
    const double bc1 = 1.0 - std::pow(beta1, st_v), bc2 = 1.0 - std::pow(beta2, st_v);
    step_size[i] = float(lr_v / bc1);
    bc2_inv[i] = float(1.0 / std::sqrt(bc2));
  }

  ListArg LP = make_list(params), LG = make_list(grads), LM = make_list(exp_avgs), LV = make_list(exp_avg_sqs);
  ListArg LX = make_list(amsgrad ? max_exp_avg_sqs : at::TensorList()), LW = make_list(master_params);
  for_each_piece(numels_of(params), [&](int64_t i, int64_t b, int64_t e) {
    AdamScalars s{lr_v, float(beta1), float(beta2), float(eps), float(weight_decay), gmul,
                  step_size[i], bc2_inv[i], decoupled, float(1.0 - beta1), float(1.0 - beta2)};
    float* m = LM.work[i].data_ptr<float>() + b;
    float* v = LV.work[i].data_ptr<float>() + b;
    float* x = amsgrad ? LX.work[i].data_ptr<float>() + b : nullptr;
    float* w = master ? LW.work[i].data_ptr<float>() + b : nullptr;
    TRAINER_DISPATCH_PARAM(LP.work[i].scalar_type(), {
      P* p = LP.work[i].data_ptr<P>() + b;
      const P* g = LG.work[i].const_data_ptr<P>() + b;
      const int64_t n = e - b;
      if (amsgrad) {
        if (master) adam_piece<P, true, true>(p, g, m, v, x, w, n, s);
        else adam_piece<P, true, false>(p, g, m, v, x, w, n, s);
      } else {
        if (master) adam_piece<P, false, true>(p, g, m, v, x, w, n, s);
        else adam_piece<P, false, false>(p, g, m, v, x, w, n, s);
      }
    });
  });
  finish_list(LP, params);
  finish_list(LM, exp_avgs);
  finish_list(LV, exp_avg_sqs);
  if (amsgrad) finish_list(LX, max_exp_avg_sqs);
  finish_list(LW, master_params);
}

// ---------------------------------------------------------------------------------------------
// SGD (momentum, dampening, nesterov, weight decay) — torch.optim.SGD semantics.
// ---------------------------------------------------------------------------------------------
struct SgdScalars {
  float lr, momentum, dampening, wd, gmul;
  bool nesterov, first;
};

template <typename P, bool MOM, bool MASTER>
static void sgd_piece(P* __restrict p, const P* __restrict g, float* __restrict buf, float* __restrict w,
                      int64_t n, const SgdScalars s) {
  const float keep = s.first ? 0.0f : s.momentum;
  const float add = s.first ? 1.0f : 1.0f - s.dampening;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float pi = MASTER ? w[i] : ld(p, i);
    float gi = ld(g, i) * s.gmul + s.wd * pi;
    if (MOM) {
      // First step: buf = g (torch clones the gradient); afterwards buf = m*buf + (1-d)*g.
      const float bi = s.first ? gi : keep * buf[i] + add * gi;
      buf[i] = bi;
      gi = s.nesterov ? gi + s.momentum * bi : bi;
    }
    pi -= s.lr * gi;
    if (MASTER) w[i] = pi;
    st(p, i, pi);
  }
}

void fused_sgd_cpu(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                   at::TensorList master_params, const Tensor& lr, double momentum, double dampening,
                   double weight_decay, bool nesterov, bool maximize, bool is_first_step,
                   const std::optional<Tensor>& grad_scale, const std::optional<Tensor>& found_inf,
                   const std::optional<Tensor>& clip_coef) {
  if (params.empty()) return;
  check_params_grads(params, grads);
  const bool mom = momentum != 0.0;
  if (mom) check_state("momentum_buffers", params, momentum_buffers);
  const bool master = !master_params.empty();
  if (master) check_state("master_params", params, master_params);
  float gmul;
  if (!grad_multiplier(grad_scale, found_inf, clip_coef, maximize, &gmul)) return;
  const SgdScalars s{float(read_scalar(lr)), float(momentum), float(dampening), float(weight_decay), gmul,
                     nesterov, is_first_step};
  ListArg LP = make_list(params), LG = make_list(grads), LB = make_list(mom ? momentum_buffers : at::TensorList()),
          LW = make_list(master_params);
  for_each_piece(numels_of(params), [&](int64_t i, int64_t b, int64_t e) {
    float* buf = mom ? LB.work[i].data_ptr<float>() + b : nullptr;
    float* w = master ? LW.work[i].data_ptr<float>() + b : nullptr;
    TRAINER_DISPATCH_PARAM(LP.work[i].scalar_type(), {
      P* p = LP.work[i].data_ptr<P>() + b;
      const P* g = LG.work[i].const_data_ptr<P>() + b;
      const int64_t n = e - b;
      if (mom) {
        if (master) sgd_piece<P, true, true>(p, g, buf, w, n, s);
        else sgd_piece<P, true, false>(p, g, buf, w, n, s);
      } else {
        if (master) sgd_piece<P, false, true>(p, g, buf, w, n, s);
        else sgd_piece<P, false, false>(p, g, buf, w, n, s);
      }
    });
  });
  finish_list(LP, params);
  if (mom) finish_list(LB, momentum_buffers);
  finish_list(LW, master_params);
}

// ---------------------------------------------------------------------------------------------
// Lion (Chen et al. 2023): p -= lr * (sign(b1*m + (1-b1)*g) + wd*p); m = b2*m + (1-b2)*g.
// ---------------------------------------------------------------------------------------------
template <typename P, bool MASTER>
static void lion_piece(P* __restrict p, const P* __restrict g, float* __restrict m, float* __restrict w, int64_t n,
                       float lr, float beta1, float beta2, float wd, float gmul, float omb1, float omb2) {
  const float decay = 1.0f - lr * wd;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float gi = ld(g, i) * gmul;
    float pi = MASTER ? w[i] : ld(p, i);
    const float c = beta1 * m[i] + omb1 * gi;
    const float sgn = c > 0.0f ? 1.0f : (c < 0.0f ? -1.0f : 0.0f);
    pi = pi * decay - lr * sgn;
    m[i] = beta2 * m[i] + omb2 * gi;
    if (MASTER) w[i] = pi;
    st(p, i, pi);
  }
}

void fused_lion_cpu(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                    at::TensorList master_params, const Tensor& lr, double beta1, double beta2, double weight_decay,
                    bool maximize, const std::optional<Tensor>& grad_scale, const std::optional<Tensor>& found_inf,
                    const std::optional<Tensor>& clip_coef) {
  if (params.empty()) return;
  check_params_grads(params, grads);
  check_state("exp_avgs", params, exp_avgs);
  const bool master = !master_params.empty();
  if (master) check_state("master_params", params, master_params);
  float gmul;
  if (!grad_multiplier(grad_scale, found_inf, clip_coef, maximize, &gmul)) return;
  const float lr_v = float(read_scalar(lr));
  ListArg LP = make_list(params), LG = make_list(grads), LM = make_list(exp_avgs), LW = make_list(master_params);
  for_each_piece(numels_of(params), [&](int64_t i, int64_t b, int64_t e) {
    float* m = LM.work[i].data_ptr<float>() + b;
    float* w = master ? LW.work[i].data_ptr<float>() + b : nullptr;
    TRAINER_DISPATCH_PARAM(LP.work[i].scalar_type(), {
      P* p = LP.work[i].data_ptr<P>() + b;
      const P* g = LG.work[i].const_data_ptr<P>() + b;
      if (master)
        lion_piece<P, true>(p, g, m, w, e - b, lr_v, float(beta1), float(beta2), float(weight_decay), gmul,
                            float(1.0 - beta1), float(1.0 - beta2));
      else
        lion_piece<P, false>(p, g, m, w, e - b, lr_v, float(beta1), float(beta2), float(weight_decay), gmul,
                             float(1.0 - beta1), float(1.0 - beta2));
    });
  });
  finish_list(LP, params);
  finish_list(LM, exp_avgs);
  finish_list(LW, master_params);
}

// ---------------------------------------------------------------------------------------------
// Global L2 norm of a list of gradients (fp32 result), optionally of the unscaled gradients.
// Deterministic: fixed chunks, per-chunk double partials summed in order, whatever the threads.
// ---------------------------------------------------------------------------------------------
template <typename P>
static double sumsq_piece(const P* __restrict g, int64_t n) {
  double total = 0.0;
  for (int64_t b = 0; b < n; b += 4096) {
    const int64_t e = std::min(n, b + 4096);
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = b; i < e; ++i) {
      const float x = ld(g, i);
      acc += x * x;
    }
    total += double(acc);
  }
  return total;
}

Tensor grad_norm_cpu(at::TensorList grads, const std::optional<Tensor>& grad_scale) {
  auto out = at::empty({}, at::TensorOptions().dtype(at::kFloat).device(at::kCPU));
  std::vector<int64_t> numels = numels_of(grads);
  int64_t total = 0;
  for (auto n : numels) total += n;
  const int64_t n_chunks = (total + kChunk - 1) / kChunk;
  std::vector<double> partial(std::max<int64_t>(n_chunks, 1), 0.0);
  ListArg LG = make_list(grads);
  std::vector<int64_t> offs(grads.size() + 1, 0);
  for (size_t i = 0; i < grads.size(); ++i) offs[i + 1] = offs[i] + numels[i];
  for_each_piece(numels, [&](int64_t i, int64_t b, int64_t e) {
    double s = 0.0;
    TRAINER_DISPATCH_PARAM(LG.work[i].scalar_type(), { s = sumsq_piece<P>(LG.work[i].const_data_ptr<P>() + b, e - b); });
    // Pieces never straddle chunks, so each chunk's partial is written by one thread only.
    partial[(offs[i] + b) / kChunk] += s;
  });
  double sum = 0.0;
  for (double s : partial) sum += s;
  double norm = std::sqrt(sum);
  if (grad_scale.has_value() && grad_scale->defined()) norm /= read_scalar(*grad_scale);
  *out.data_ptr<float>() = float(norm);
  return out;
}

}  // namespace

TORCH_LIBRARY(trainer, m) {
  m.def(
      "fused_adamw_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] exp_avg_sqs, "
      "Tensor(d!)[] max_exp_avg_sqs, Tensor(e!)[] master_params, Tensor[] steps, Tensor lr, float beta1, "
      "float beta2, float eps, float weight_decay, bool amsgrad, bool maximize, bool decoupled, "
      "Tensor? grad_scale=None, Tensor? found_inf=None, Tensor? clip_coef=None) -> ()");
  m.def(
      "fused_sgd_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] momentum_buffers, Tensor(c!)[] master_params, "
      "Tensor lr, float momentum, float dampening, float weight_decay, bool nesterov, bool maximize, "
      "bool is_first_step, Tensor? grad_scale=None, Tensor? found_inf=None, Tensor? clip_coef=None) -> ()");
  m.def(
      "fused_lion_(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, Tensor(c!)[] master_params, "
      "Tensor lr, float beta1, float beta2, float weight_decay, bool maximize, Tensor? grad_scale=None, "
      "Tensor? found_inf=None, Tensor? clip_coef=None) -> ()");
  m.def("grad_norm(Tensor[] grads, Tensor? grad_scale=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(trainer, CPU, m) {
  m.impl("fused_adamw_", &fused_adamw_cpu);
  m.impl("fused_sgd_", &fused_sgd_cpu);
  m.impl("fused_lion_", &fused_lion_cpu);
  m.impl("grad_norm", &grad_norm_cpu);
}

#ifdef TRAINER_WITH_CUDA
// The same schemas for CUDA tensors: CPU scalar tensors (lr, steps, ...) next to CUDA tensor
// lists dispatch here too, since CUDA outranks CPU in the dispatch key set.
TORCH_LIBRARY_IMPL(trainer, CUDA, m) {
  m.impl("fused_adamw_", &cuda::fused_adamw);
  m.impl("fused_sgd_", &cuda::fused_sgd);
  m.impl("fused_lion_", &cuda::fused_lion);
  m.impl("grad_norm", &cuda::grad_norm);
}
#endif

}  // namespace trainer

// A plain module: importing trainer._C loads the library above, which registers the ops.
// csrc/step_allocator.cpp: the compiled step's caching CPU allocator
extern PyMethodDef trainer_step_alloc_methods[];

static PyModuleDef trainer_c_module = {PyModuleDef_HEAD_INIT, "_C",
                                       "trainer's fused optimizer kernels and the compiled step's CPU allocator", -1,
                                       trainer_step_alloc_methods};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&trainer_c_module);
  if (m == nullptr) return nullptr;
#ifdef TRAINER_WITH_CUDA
  PyModule_AddIntConstant(m, "with_cuda", 1);
#else
  PyModule_AddIntConstant(m, "with_cuda", 0);
#endif
  // The widest vector ISA the host code was compiled for (the 16-float vector types of the CPU kernels
  // become one register, two, or a scalar loop): the engine uses its compute kernels only when wide.
#if defined(__AVX512F__)
  PyModule_AddIntConstant(m, "vector_bits", 512);
#elif defined(__AVX2__)
  PyModule_AddIntConstant(m, "vector_bits", 256);
#else
  PyModule_AddIntConstant(m, "vector_bits", 128);
#endif
  return m;
}
