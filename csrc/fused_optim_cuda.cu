// CUDA multi-tensor kernels for the `trainer::` ops: same schemas and semantics as the CPU kernels
// of fused_optim.cpp (which registers these for the CUDA dispatch key under TRAINER_WITH_CUDA).
//
// - One launch per group of up to N tensors (see multi_tensor_apply.cuh): a whole parameter group
//   is updated in ceil(n_tensors / N) launches, whatever the tensors' sizes and dtypes (fp32, bf16
//   and fp16 params may share a launch; the element type is a per-tensor flag).
// - Optimizer state and master weights are fp32; params/grads are fp32, bf16 or fp16, computed in
//   fp32 registers and rounded to nearest even on store.
// - lr, step, grad_scale, found_inf and clip_coef are read inside the kernel from device tensors
//   (thread 0 of each block, once), so nothing syncs with the host; with found_inf nonzero every
//   block returns before touching memory. CPU scalar tensors are read on the host instead.
// - Parameters, grads and state are used in place when they share a dense memory layout (including
//   channels_last); otherwise mismatching tensors go through scratch copies laid out like the
//   param, and the mutated ones are copied back after the launch (all stream-ordered).
#include "fused_optim_cuda.h"
#include "multi_tensor_apply.cuh"

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: no cuBLAS/cuSPARSE headers needed

#include <initializer_list>
#include <utility>

namespace trainer {
namespace cuda {
namespace {

using at::Tensor;
using mta::kAligned;
using mta::kChunk;
using mta::kILP;
using mta::kThreads;
using mta::Meta;
using mta::Scalar;

// ---------------------------------------------------------------------------------------------
// Host helpers: argument checks, scalars, memory layouts.
// ---------------------------------------------------------------------------------------------
void check_on(const char* what, at::TensorList ts, const at::Device& dev) {
  for (size_t i = 0; i < ts.size(); ++i)
    TORCH_CHECK(ts[i].device() == dev, "trainer: ", what, "[", i, "] is on ", ts[i].device(),
                ", params[0] is on ", dev);
}

void check_same_numel(const char* what, at::TensorList a, at::TensorList b) {
  TORCH_CHECK(a.size() == b.size(), "trainer: ", what, " has ", b.size(), " tensors, params has ", a.size());
  for (size_t i = 0; i < a.size(); ++i)
    TORCH_CHECK(a[i].numel() == b[i].numel(), "trainer: ", what, "[", i, "] has ", b[i].numel(),
                " elements, params[", i, "] has ", a[i].numel());
}

void check_state(const char* what, at::TensorList params, at::TensorList state) {
  check_same_numel(what, params, state);
  check_on(what, state, params[0].device());
  for (size_t i = 0; i < state.size(); ++i)
    TORCH_CHECK(state[i].scalar_type() == at::kFloat, "trainer: ", what, "[", i,
                "] must be float32 (optimizer state is kept in fp32), got ", state[i].scalar_type());
}

void check_params_grads(at::TensorList params, at::TensorList grads) {
  const at::Device dev = params[0].device();
  TORCH_CHECK(dev.is_cuda(), "trainer: CUDA kernel got params on ", dev);
  check_on("params", params, dev);
  check_same_numel("grads", params, grads);
  check_on("grads", grads, dev);
  for (size_t i = 0; i < params.size(); ++i) {
    const auto dt = params[i].scalar_type();
    TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf,
                "trainer: params must be float32, bfloat16 or float16, got ", dt);
    TORCH_CHECK(grads[i].scalar_type() == dt, "trainer: grads[", i, "] dtype ", grads[i].scalar_type(),
                " differs from its param's dtype ", dt);
  }
}

double host_value(const Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return *t.const_data_ptr<float>();
    case at::kDouble: return *t.const_data_ptr<double>();
    case at::kLong: return double(*t.const_data_ptr<int64_t>());
    case at::kInt: return double(*t.const_data_ptr<int32_t>());
    case at::kBool: return *t.const_data_ptr<bool>() ? 1.0 : 0.0;
    default: return t.item<double>();
  }
}

// A 0-dim/one-element tensor as a kernel Scalar: a device pointer when it lives on `dev`, its value
// when it lives on the CPU (`dflt` when absent).
Scalar make_scalar(const Tensor* t, double dflt, const at::Device& dev, const char* what) {
  if (t == nullptr || !t->defined()) return Scalar{nullptr, dflt, mta::kSF32};
  TORCH_CHECK(t->numel() == 1, "trainer: ", what, " must have one element, got shape ", t->sizes());
  if (t->device().is_cpu()) return Scalar{nullptr, host_value(*t), mta::kSF32};
  TORCH_CHECK(t->device() == dev, "trainer: ", what, " is on ", t->device(), ", params are on ", dev);
  int code;
  switch (t->scalar_type()) {
    case at::kFloat: code = mta::kSF32; break;
    case at::kDouble: code = mta::kSF64; break;
    case at::kHalf: code = mta::kSF16; break;
    case at::kBFloat16: code = mta::kSBF16; break;
    case at::kLong: code = mta::kSI64; break;
    case at::kInt: code = mta::kSI32; break;
    case at::kBool:
    case at::kByte: code = mta::kSBool; break;
    default: TORCH_CHECK(false, "trainer: unsupported dtype ", t->scalar_type(), " for ", what);
  }
  return Scalar{t->const_data_ptr(), 0.0, code};
}

Scalar make_scalar(const std::optional<Tensor>& t, double dflt, const at::Device& dev, const char* what) {
  return make_scalar(t.has_value() ? &*t : nullptr, dflt, dev, what);
}

// found_inf known on the host (a CPU tensor) and set: the whole step is skipped without a launch.
bool host_says_skip(const std::optional<Tensor>& found_inf) {
  return found_inf.has_value() && found_inf->defined() && found_inf->device().is_cpu() &&
         host_value(*found_inf) != 0.0;
}

// The tensors the kernel works on: for index i, every list's tensor shares one dense layout, that of
// params[i] (or its contiguous copy when params[i] is not dense, or when another list's tensor has
// another shape and the param's layout is not plain contiguous).
struct Work {
  std::vector<std::vector<Tensor>> lists;
  std::vector<std::pair<Tensor, Tensor>> copy_back;  // (original, scratch) for mutated lists

  void finish() {
    for (auto& ow : copy_back) ow.first.copy_(ow.second);
  }
};

Work prepare(std::initializer_list<at::TensorList> lists, std::initializer_list<bool> mutated) {
  const std::vector<at::TensorList> L(lists);
  const std::vector<bool> M(mutated);
  Work w;
  w.lists.resize(L.size());
  const size_t n = L[0].size();
  for (size_t d = 0; d < L.size(); ++d) w.lists[d].reserve(L[d].size());
  for (size_t i = 0; i < n; ++i) {
    const Tensor& p = L[0][i];
    bool use_ref = p.is_contiguous();
    if (!use_ref && p.is_non_overlapping_and_dense()) {
      use_ref = true;  // a dense layout (channels_last, ...) serves if every other tensor has p's shape
      for (size_t d = 1; d < L.size(); ++d)
        if (!L[d].empty() && L[d][i].sizes() != p.sizes()) use_ref = false;
    }
    Tensor ref = p;
    if (!use_ref) {
      ref = p.contiguous();
      if (M[0]) w.copy_back.emplace_back(p, ref);
    }
    w.lists[0].push_back(ref);
    const bool contiguous = ref.is_contiguous();
    for (size_t d = 1; d < L.size(); ++d) {
      if (L[d].empty()) continue;
      const Tensor& t = L[d][i];
      bool same;
      if (contiguous) same = t.is_contiguous();
      else same = t.sizes() == ref.sizes() && t.strides() == ref.strides();
      if (same) {
        w.lists[d].push_back(t);
        continue;
      }
      Tensor s;
      if (contiguous) {
        s = t.contiguous();
      } else {
        s = at::empty_like(ref, t.options());  // preserve_format keeps a dense ref's strides
        s.copy_(t);
      }
      if (M[d]) w.copy_back.emplace_back(t, s);
      w.lists[d].push_back(s);
    }
  }
  return w;
}

template <int DEPTH>
std::array<const std::vector<Tensor>*, DEPTH> ptrs(const Work& w) {
  std::array<const std::vector<Tensor>*, DEPTH> a;
  for (int d = 0; d < DEPTH; ++d) a[d] = &w.lists[d];
  return a;
}

// Host part of the gradient multiplier sign * clip_coef / grad_scale, finished on the device.
struct GradArgs {
  Scalar grad_scale, found_inf, clip_coef;
  float sign;
};

GradArgs grad_args(const std::optional<Tensor>& grad_scale, const std::optional<Tensor>& found_inf,
                   const std::optional<Tensor>& clip_coef, bool maximize, const at::Device& dev) {
  return GradArgs{make_scalar(grad_scale, 1.0, dev, "grad_scale"), make_scalar(found_inf, 0.0, dev, "found_inf"),
                  make_scalar(clip_coef, 1.0, dev, "clip_coef"), maximize ? -1.0f : 1.0f};
}

// Thread 0: false when the step must be skipped; else *gmul = sign * clip_coef / grad_scale.
__device__ __forceinline__ bool device_grad_multiplier(const GradArgs& a, float* gmul) {
  if (mta::read_scalar(a.found_inf) != 0.0) return false;
  double m = double(a.sign) * mta::read_scalar(a.clip_coef);
  m /= mta::read_scalar(a.grad_scale);
  *gmul = float(m);
  return true;
}

// Offset of a block's chunk inside its tensor, and the chunk's length.
template <int DEPTH, int N>
__device__ __forceinline__ void chunk_of(const Meta<DEPTH, N>& meta, int t, int64_t* begin, int* n) {
  const int chunk = int(blockIdx.x) - (t > 0 ? meta.chunk_end[t - 1] : 0);
  *begin = int64_t(chunk) * kChunk;
  const int64_t left = meta.numel[t] - *begin;
  *n = int(left < kChunk ? left : kChunk);
}

// ---------------------------------------------------------------------------------------------
// Adam / AdamW
// ---------------------------------------------------------------------------------------------
constexpr int kAdamN = 48;
using AdamMeta = Meta<6, kAdamN>;  // params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masters

struct StepTable {
  const float* ptr[kAdamN];  // fp32 step on the device, or nullptr: use value
  float value[kAdamN];
};

struct AdamArgs {
  GradArgs g;
  Scalar lr;
  double beta1, beta2;
  float eps, wd;
  bool decoupled;
};
static_assert(sizeof(AdamMeta) + sizeof(StepTable) + sizeof(AdamArgs) <= mta::kMaxParamBytes,
              "Adam kernel parameters exceed 4 KB");

// omb1, omb2: 1 - beta1, 1 - beta2 rounded from double, as torch.optim's Python floats reach its kernels
struct AdamCoef {
  float gmul, l2, decay, beta1, beta2, eps, step_size, bc2_inv, omb1, omb2;
};

template <bool AMS>
__device__ __forceinline__ void adam_elem(float& p, float g, float& m, float& v, float& x, const AdamCoef& c) {
  g = g * c.gmul + c.l2 * p;
  p *= c.decay;
  m = m + c.omb1 * (g - m);
  v = c.beta2 * v + c.omb2 * g * g;
  float vu = v;
  if (AMS) {
    vu = fmaxf(x, v);
    x = vu;
  }
  const float denom = sqrtf(vu) * c.bc2_inv + c.eps;
  p -= c.step_size * m / denom;
}

template <typename P, bool AMS, bool MASTER>
__device__ __forceinline__ void adam_chunk(P* __restrict__ p, const P* __restrict__ g, float* __restrict__ m,
                                           float* __restrict__ v, float* __restrict__ x, float* __restrict__ w,
                                           int n, bool aligned, const AdamCoef& c) {
  int i0 = 0;
  if (aligned) {
    i0 = n - n % kILP;
    for (int i = int(threadIdx.x) * kILP; i < i0; i += kThreads * kILP) {
      float pr[kILP], gr[kILP], mr[kILP], vr[kILP], xr[kILP] = {};
      mta::load4(g + i, gr);
      mta::load4(m + i, mr);
      mta::load4(v + i, vr);
      if (AMS) mta::load4(x + i, xr);
      if (MASTER) mta::load4(w + i, pr);
      else mta::load4(p + i, pr);
#pragma unroll
      for (int k = 0; k < kILP; ++k) adam_elem<AMS>(pr[k], gr[k], mr[k], vr[k], xr[k], c);
      mta::store4(p + i, pr);
      mta::store4(m + i, mr);
      mta::store4(v + i, vr);
      if (AMS) mta::store4(x + i, xr);
      if (MASTER) mta::store4(w + i, pr);
    }
  }
  for (int i = i0 + int(threadIdx.x); i < n; i += kThreads) {
    float pi = MASTER ? w[i] : mta::load1(p, i), mi = m[i], vi = v[i], xi = AMS ? x[i] : 0.0f;
    adam_elem<AMS>(pi, mta::load1(g, i), mi, vi, xi, c);
    mta::store1(p, i, pi);
    m[i] = mi;
    v[i] = vi;
    if (AMS) x[i] = xi;
    if (MASTER) w[i] = pi;
  }
}

template <bool AMS, bool MASTER>
__global__ void __launch_bounds__(kThreads)
    adam_kernel(const __grid_constant__ AdamMeta meta, const __grid_constant__ StepTable steps,
                const __grid_constant__ AdamArgs a) {
  __shared__ int s_t;
  __shared__ bool s_run;
  __shared__ AdamCoef s_c;
  if (threadIdx.x == 0) {
    float gmul = 0.0f;
    s_run = device_grad_multiplier(a.g, &gmul);
    if (s_run) {
      const int t = mta::find_tensor(meta, int(blockIdx.x));
      s_t = t;
      const float lr = float(mta::read_scalar(a.lr));
      const double step = steps.ptr[t] != nullptr ? double(*steps.ptr[t]) : double(steps.value[t]);
      const double bc1 = 1.0 - pow(a.beta1, step), bc2 = 1.0 - pow(a.beta2, step);
      s_c = AdamCoef{gmul,
                     a.decoupled ? 0.0f : a.wd,
                     a.decoupled ? 1.0f - lr * a.wd : 1.0f,
                     float(a.beta1),
                     float(a.beta2),
                     a.eps,
                     float(double(lr) / bc1),
                     float(1.0 / sqrt(bc2)),
                     float(1.0 - a.beta1),
                     float(1.0 - a.beta2)};
    }
  }
  __syncthreads();
  if (!s_run) return;
  const int t = s_t;
  const AdamCoef c = s_c;
  int64_t b;
  int n;
  chunk_of(meta, t, &b, &n);
  const uint8_t flags = meta.flags[t];
  float* m = static_cast<float*>(meta.ptr[2][t]) + b;
  float* v = static_cast<float*>(meta.ptr[3][t]) + b;
  float* x = AMS ? static_cast<float*>(meta.ptr[4][t]) + b : nullptr;
  float* w = MASTER ? static_cast<float*>(meta.ptr[5][t]) + b : nullptr;
  mta::dispatch_type(flags, [&](auto tag) {
    using P = decltype(tag);
    adam_chunk<P, AMS, MASTER>(static_cast<P*>(meta.ptr[0][t]) + b, static_cast<const P*>(meta.ptr[1][t]) + b, m,
                               v, x, w, n, (flags & kAligned) != 0, c);
  });
}

}  // namespace

void fused_adamw(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                 at::TensorList max_exp_avg_sqs, at::TensorList master_params, at::TensorList steps,
                 const Tensor& lr, double beta1, double beta2, double eps, double weight_decay, bool amsgrad,
                 bool maximize, bool decoupled, const std::optional<Tensor>& grad_scale,
                 const std::optional<Tensor>& found_inf, const std::optional<Tensor>& clip_coef) {
  if (params.empty()) return;
  check_params_grads(params, grads);
  const at::Device dev = params[0].device();
  check_state("exp_avgs", params, exp_avgs);
  check_state("exp_avg_sqs", params, exp_avg_sqs);
  if (amsgrad) check_state("max_exp_avg_sqs", params, max_exp_avg_sqs);
  const bool master = !master_params.empty();
  if (master) check_state("master_params", params, master_params);
  TORCH_CHECK(steps.size() == params.size() || steps.size() == 1,
              "trainer: steps must hold one tensor per param or a single shared one");
  if (host_says_skip(found_inf)) return;
  const c10::cuda::CUDAGuard guard(dev);

  // Steps as fp32 device pointers (a cast copy for other dtypes) or host values.
  std::vector<Tensor> step_keep;
  std::vector<const float*> step_ptr(steps.size(), nullptr);
  std::vector<float> step_val(steps.size(), 0.0f);
  for (size_t i = 0; i < steps.size(); ++i) {
    const Tensor& s = steps[i];
    TORCH_CHECK(s.numel() == 1, "trainer: steps[", i, "] must have one element, got shape ", s.sizes());
    if (s.device().is_cpu()) {
      step_val[i] = float(host_value(s));
      continue;
    }
    TORCH_CHECK(s.device() == dev, "trainer: steps[", i, "] is on ", s.device(), ", params are on ", dev);
    Tensor f = s.scalar_type() == at::kFloat ? s : s.to(at::kFloat);
    if (!f.is_same(s)) step_keep.push_back(f);
    step_ptr[i] = f.const_data_ptr<float>();
  }

  AdamArgs args{grad_args(grad_scale, found_inf, clip_coef, maximize, dev), make_scalar(&lr, 0.0, dev, "lr"),
                beta1, beta2, float(eps), float(weight_decay), decoupled};
  const at::TensorList none;
  Work W = prepare({params, grads, exp_avgs, exp_avg_sqs, amsgrad ? max_exp_avg_sqs : none, master_params},
                   {true, false, true, true, true, true});
  StepTable table;
  const bool shared_step = steps.size() == 1;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  mta::multi_tensor_apply<6, kAdamN>(
      ptrs<6>(W),
      [&](int slot, size_t i) {
        const size_t j = shared_step ? 0 : i;
        table.ptr[slot] = step_ptr[j];
        table.value[slot] = step_val[j];
      },
      [&](const AdamMeta& meta, int chunks) {
        auto kernel = amsgrad ? (master ? adam_kernel<true, true> : adam_kernel<true, false>)
                              : (master ? adam_kernel<false, true> : adam_kernel<false, false>);
        kernel<<<chunks, kThreads, 0, stream>>>(meta, table, args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  W.finish();
}

// ---------------------------------------------------------------------------------------------
// SGD (momentum, dampening, nesterov, weight decay): torch.optim.SGD semantics.
// ---------------------------------------------------------------------------------------------
namespace {

constexpr int kSgdN = 64;
using SgdMeta = Meta<4, kSgdN>;  // params, grads, momentum_buffers, masters

struct SgdArgs {
  GradArgs g;
  Scalar lr;
  float momentum, dampening, wd;
  bool nesterov, first;
};
static_assert(sizeof(SgdMeta) + sizeof(SgdArgs) <= mta::kMaxParamBytes, "SGD kernel parameters exceed 4 KB");

struct SgdCoef {
  float gmul, lr, wd, momentum, keep, add;
};

template <bool MOM, bool FIRST>
__device__ __forceinline__ void sgd_elem(float& p, float g, float& buf, const SgdCoef& c, bool nesterov) {
  g = g * c.gmul + c.wd * p;
  if (MOM) {
    // First step: buf = g (torch clones the gradient); afterwards buf = m*buf + (1-d)*g.
    const float b = FIRST ? g : c.keep * buf + c.add * g;
    buf = b;
    g = nesterov ? g + c.momentum * b : b;
  }
  p -= c.lr * g;
}

// FIRST: the momentum buffers are only written (set to the gradient), never read.
template <typename P, bool MOM, bool MASTER, bool FIRST>
__device__ __forceinline__ void sgd_chunk(P* __restrict__ p, const P* __restrict__ g, float* __restrict__ buf,
                                          float* __restrict__ w, int n, bool aligned, const SgdCoef& c,
                                          bool nesterov) {
  int i0 = 0;
  if (aligned) {
    i0 = n - n % kILP;
    for (int i = int(threadIdx.x) * kILP; i < i0; i += kThreads * kILP) {
      float pr[kILP], gr[kILP], br[kILP] = {};
      mta::load4(g + i, gr);
      if (MOM && !FIRST) mta::load4(buf + i, br);
      if (MASTER) mta::load4(w + i, pr);
      else mta::load4(p + i, pr);
#pragma unroll
      for (int k = 0; k < kILP; ++k) sgd_elem<MOM, FIRST>(pr[k], gr[k], br[k], c, nesterov);
      mta::store4(p + i, pr);
      if (MOM) mta::store4(buf + i, br);
      if (MASTER) mta::store4(w + i, pr);
    }
  }
  for (int i = i0 + int(threadIdx.x); i < n; i += kThreads) {
    float pi = MASTER ? w[i] : mta::load1(p, i), bi = (MOM && !FIRST) ? buf[i] : 0.0f;
    sgd_elem<MOM, FIRST>(pi, mta::load1(g, i), bi, c, nesterov);
    mta::store1(p, i, pi);
    if (MOM) buf[i] = bi;
    if (MASTER) w[i] = pi;
  }
}

template <bool MOM, bool MASTER>
__global__ void __launch_bounds__(kThreads)
    sgd_kernel(const __grid_constant__ SgdMeta meta, const __grid_constant__ SgdArgs a) {
  __shared__ int s_t;
  __shared__ bool s_run;
  __shared__ SgdCoef s_c;
  if (threadIdx.x == 0) {
    float gmul = 0.0f;
    s_run = device_grad_multiplier(a.g, &gmul);
    if (s_run) {
      s_t = mta::find_tensor(meta, int(blockIdx.x));
      s_c = SgdCoef{gmul, float(mta::read_scalar(a.lr)), a.wd, a.momentum,
                    a.first ? 0.0f : a.momentum, a.first ? 1.0f : 1.0f - a.dampening};
    }
  }
  __syncthreads();
  if (!s_run) return;
  const int t = s_t;
  const SgdCoef c = s_c;
  int64_t b;
  int n;
  chunk_of(meta, t, &b, &n);
  const uint8_t flags = meta.flags[t];
  float* buf = MOM ? static_cast<float*>(meta.ptr[2][t]) + b : nullptr;
  float* w = MASTER ? static_cast<float*>(meta.ptr[3][t]) + b : nullptr;
  mta::dispatch_type(flags, [&](auto tag) {
    using P = decltype(tag);
    P* p = static_cast<P*>(meta.ptr[0][t]) + b;
    const P* g = static_cast<const P*>(meta.ptr[1][t]) + b;
    const bool aligned = (flags & kAligned) != 0;
    if (MOM && a.first) sgd_chunk<P, MOM, MASTER, true>(p, g, buf, w, n, aligned, c, a.nesterov);
    else sgd_chunk<P, MOM, MASTER, false>(p, g, buf, w, n, aligned, c, a.nesterov);
  });
}

}  // namespace

void fused_sgd(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
               at::TensorList master_params, const Tensor& lr, double momentum, double dampening,
               double weight_decay, bool nesterov, bool maximize, bool is_first_step,
               const std::optional<Tensor>& grad_scale, const std::optional<Tensor>& found_inf,
               const std::optional<Tensor>& clip_coef) {
  if (params.empty()) return;
  check_params_grads(params, grads);
  const at::Device dev = params[0].device();
  const bool mom = momentum != 0.0;
  if (mom) check_state("momentum_buffers", params, momentum_buffers);
  const bool master = !master_params.empty();
  if (master) check_state("master_params", params, master_params);
  if (host_says_skip(found_inf)) return;
  const c10::cuda::CUDAGuard guard(dev);
  const SgdArgs args{grad_args(grad_scale, found_inf, clip_coef, maximize, dev), make_scalar(&lr, 0.0, dev, "lr"),
                     float(momentum), float(dampening), float(weight_decay), nesterov, is_first_step};
  const at::TensorList none;
  Work W = prepare({params, grads, mom ? momentum_buffers : none, master_params}, {true, false, true, true});
  const auto stream = c10::cuda::getCurrentCUDAStream();
  mta::multi_tensor_apply<4, kSgdN>(
      ptrs<4>(W), [](int, size_t) {},
      [&](const SgdMeta& meta, int chunks) {
        auto kernel = mom ? (master ? sgd_kernel<true, true> : sgd_kernel<true, false>)
                          : (master ? sgd_kernel<false, true> : sgd_kernel<false, false>);
        kernel<<<chunks, kThreads, 0, stream>>>(meta, args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  W.finish();
}

// ---------------------------------------------------------------------------------------------
// Lion: p -= lr * (sign(b1*m + (1-b1)*g) + wd*p); m = b2*m + (1-b2)*g.
// ---------------------------------------------------------------------------------------------
namespace {

constexpr int kLionN = 64;
using LionMeta = Meta<4, kLionN>;  // params, grads, exp_avgs, masters

struct LionArgs {
  GradArgs g;
  Scalar lr;
  float beta1, beta2, wd;
  float omb1, omb2;  // 1 - beta1, 1 - beta2 rounded from double
};
static_assert(sizeof(LionMeta) + sizeof(LionArgs) <= mta::kMaxParamBytes, "Lion kernel parameters exceed 4 KB");

struct LionCoef {
  float gmul, lr, decay, beta1, beta2, omb1, omb2;
};

__device__ __forceinline__ void lion_elem(float& p, float g, float& m, const LionCoef& c) {
  g *= c.gmul;
  const float u = c.beta1 * m + c.omb1 * g;
  const float sgn = u > 0.0f ? 1.0f : (u < 0.0f ? -1.0f : 0.0f);
  p = p * c.decay - c.lr * sgn;
  m = c.beta2 * m + c.omb2 * g;
}

template <typename P, bool MASTER>
__device__ __forceinline__ void lion_chunk(P* __restrict__ p, const P* __restrict__ g, float* __restrict__ m,
                                           float* __restrict__ w, int n, bool aligned, const LionCoef& c) {
  int i0 = 0;
  if (aligned) {
    i0 = n - n % kILP;
    for (int i = int(threadIdx.x) * kILP; i < i0; i += kThreads * kILP) {
      float pr[kILP], gr[kILP], mr[kILP];
      mta::load4(g + i, gr);
      mta::load4(m + i, mr);
      if (MASTER) mta::load4(w + i, pr);
      else mta::load4(p + i, pr);
#pragma unroll
      for (int k = 0; k < kILP; ++k) lion_elem(pr[k], gr[k], mr[k], c);
      mta::store4(p + i, pr);
      mta::store4(m + i, mr);
      if (MASTER) mta::store4(w + i, pr);
    }
  }
  for (int i = i0 + int(threadIdx.x); i < n; i += kThreads) {
    float pi = MASTER ? w[i] : mta::load1(p, i), mi = m[i];
    lion_elem(pi, mta::load1(g, i), mi, c);
    mta::store1(p, i, pi);
    m[i] = mi;
    if (MASTER) w[i] = pi;
  }
}

template <bool MASTER>
__global__ void __launch_bounds__(kThreads)
    lion_kernel(const __grid_constant__ LionMeta meta, const __grid_constant__ LionArgs a) {
  __shared__ int s_t;
  __shared__ bool s_run;
  __shared__ LionCoef s_c;
  if (threadIdx.x == 0) {
    float gmul = 0.0f;
    s_run = device_grad_multiplier(a.g, &gmul);
    if (s_run) {
      s_t = mta::find_tensor(meta, int(blockIdx.x));
      const float lr = float(mta::read_scalar(a.lr));
      s_c = LionCoef{gmul, lr, 1.0f - lr * a.wd, a.beta1, a.beta2, a.omb1, a.omb2};
    }
  }
  __syncthreads();
  if (!s_run) return;
  const int t = s_t;
  const LionCoef c = s_c;
  int64_t b;
  int n;
  chunk_of(meta, t, &b, &n);
  const uint8_t flags = meta.flags[t];
  float* m = static_cast<float*>(meta.ptr[2][t]) + b;
  float* w = MASTER ? static_cast<float*>(meta.ptr[3][t]) + b : nullptr;
  mta::dispatch_type(flags, [&](auto tag) {
    using P = decltype(tag);
    lion_chunk<P, MASTER>(static_cast<P*>(meta.ptr[0][t]) + b, static_cast<const P*>(meta.ptr[1][t]) + b, m, w, n,
                          (flags & kAligned) != 0, c);
  });
}

}  // namespace

void fused_lion(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList master_params,
                const Tensor& lr, double beta1, double beta2, double weight_decay, bool maximize,
                const std::optional<Tensor>& grad_scale, const std::optional<Tensor>& found_inf,
                const std::optional<Tensor>& clip_coef) {
  if (params.empty()) return;
  check_params_grads(params, grads);
  const at::Device dev = params[0].device();
  check_state("exp_avgs", params, exp_avgs);
  const bool master = !master_params.empty();
  if (master) check_state("master_params", params, master_params);
  if (host_says_skip(found_inf)) return;
  const c10::cuda::CUDAGuard guard(dev);
  const LionArgs args{grad_args(grad_scale, found_inf, clip_coef, maximize, dev), make_scalar(&lr, 0.0, dev, "lr"),
                      float(beta1), float(beta2), float(weight_decay), float(1.0 - beta1), float(1.0 - beta2)};
  Work W = prepare({params, grads, exp_avgs, master_params}, {true, false, true, true});
  const auto stream = c10::cuda::getCurrentCUDAStream();
  mta::multi_tensor_apply<4, kLionN>(
      ptrs<4>(W), [](int, size_t) {},
      [&](const LionMeta& meta, int chunks) {
        auto kernel = master ? lion_kernel<true> : lion_kernel<false>;
        kernel<<<chunks, kThreads, 0, stream>>>(meta, args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  W.finish();
}

// ---------------------------------------------------------------------------------------------
// Global L2 norm (fp32 result) of a list of gradients, optionally of grads / grad_scale.
// Deterministic: one partial per chunk (fp32 per thread, fixed-order block sum in fp64), then one
// block sums the partials in a fixed order. inf/NaN anywhere propagates into the norm.
// ---------------------------------------------------------------------------------------------
namespace {

constexpr int kNormN = 160;
using NormMeta = Meta<1, kNormN>;
static_assert(sizeof(NormMeta) + sizeof(void*) <= mta::kMaxParamBytes, "grad_norm kernel parameters exceed 4 KB");

template <typename P>
__device__ __forceinline__ float sumsq_chunk(const P* __restrict__ g, int n, bool aligned) {
  float acc = 0.0f;
  int i0 = 0;
  if (aligned) {
    i0 = n - n % kILP;
    for (int i = int(threadIdx.x) * kILP; i < i0; i += kThreads * kILP) {
      float r[kILP];
      mta::load4(g + i, r);
#pragma unroll
      for (int k = 0; k < kILP; ++k) acc += r[k] * r[k];
    }
  }
  for (int i = i0 + int(threadIdx.x); i < n; i += kThreads) {
    const float x = mta::load1(g, i);
    acc += x * x;
  }
  return acc;
}

__global__ void __launch_bounds__(kThreads) sumsq_kernel(const __grid_constant__ NormMeta meta, double* partials) {
  __shared__ int s_t;
  if (threadIdx.x == 0) s_t = mta::find_tensor(meta, int(blockIdx.x));
  __syncthreads();
  const int t = s_t;
  int64_t b;
  int n;
  chunk_of(meta, t, &b, &n);
  const uint8_t flags = meta.flags[t];
  float acc = 0.0f;
  mta::dispatch_type(flags, [&](auto tag) {
    using P = decltype(tag);
    acc = sumsq_chunk<P>(static_cast<const P*>(meta.ptr[0][t]) + b, n, (flags & kAligned) != 0);
  });
  const double total = mta::block_sum(double(acc));
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kThreads)
    norm_finalize_kernel(const double* __restrict__ partials, int64_t n, const Scalar grad_scale, float* out) {
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) s += partials[i];
  s = mta::block_sum(s);
  if (threadIdx.x == 0) *out = float(sqrt(s) / mta::read_scalar(grad_scale));
}

}  // namespace

Tensor grad_norm(at::TensorList grads, const std::optional<Tensor>& grad_scale) {
  if (grads.empty()) {  // reached only through a CUDA grad_scale: the norm of nothing, on its device
    TORCH_CHECK(grad_scale.has_value() && grad_scale->defined(), "trainer: grad_norm of an empty list");
    return at::zeros({}, grad_scale->options().dtype(at::kFloat));
  }
  const at::Device dev = grads[0].device();
  TORCH_CHECK(dev.is_cuda(), "trainer: CUDA kernel got grads on ", dev);
  check_on("grads", grads, dev);
  for (size_t i = 0; i < grads.size(); ++i) {
    const auto dt = grads[i].scalar_type();
    TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf,
                "trainer: grads must be float32, bfloat16 or float16, got ", dt);
  }
  const c10::cuda::CUDAGuard guard(dev);
  const Scalar scale = make_scalar(grad_scale, 1.0, dev, "grad_scale");
  int64_t total = 0;
  for (const Tensor& g : grads) total += (g.numel() + kChunk - 1) / kChunk;
  const auto f64 = at::TensorOptions().dtype(at::kDouble).device(dev);
  Tensor partials = at::empty({std::max<int64_t>(total, 1)}, f64);
  Tensor out = at::empty({}, f64.dtype(at::kFloat));
  Work W = prepare({grads}, {false});
  const auto stream = c10::cuda::getCurrentCUDAStream();
  double* base = partials.data_ptr<double>();
  mta::multi_tensor_apply<1, kNormN>(ptrs<1>(W), [](int, size_t) {}, [&](const NormMeta& meta, int chunks) {
    sumsq_kernel<<<chunks, kThreads, 0, stream>>>(meta, base);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    base += chunks;
  });
  norm_finalize_kernel<<<1, kThreads, 0, stream>>>(partials.const_data_ptr<double>(), total, scale,
                                                   out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace cuda
}  // namespace trainer
