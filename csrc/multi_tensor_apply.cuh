// Multi-tensor launches for the CUDA optimizer kernels (apex / ATen MultiTensorApply style).
//
// One launch updates up to N tensors: their pointers travel in a by-value kernel argument
// (`Meta`, kept under the classic 4 KB parameter limit), each tensor is cut into chunks of kChunk
// elements, and block b works on chunk b of the concatenated chunk list. `chunk_end[t]` is the
// cumulative chunk count up to tensor t, so a block finds its tensor with a binary search over at
// most N entries (done once per block by thread 0) and the grid needs no per-block table: a launch
// is bounded by the tensor count only. A group with more than N tensors takes ceil(n / N) launches.
//
// Values that change between steps (lr, step, grad_scale, found_inf, clip_coef) are `Scalar`s: a
// device pointer read inside the kernel (no host sync), or a value read on the host when the
// tensor lives on the CPU (reading CPU memory never syncs either).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <array>
#include <climits>
#include <cstdint>
#include <vector>

namespace trainer {
namespace mta {

constexpr int kThreads = 256;     // threads per block
constexpr int kILP = 4;           // elements per thread and iteration (one 16-byte fp32 load)
constexpr int64_t kChunk = 16384;  // elements per block: 16 iterations of the whole block
static_assert(kChunk % (kThreads * kILP) == 0, "chunks must keep vector loads aligned");

// Kernel parameters must fit the classic 4 KB launch limit (the larger CUDA 12.1+ limit needs a
// recent driver and Volta+; staying under 4 KB works everywhere).
constexpr size_t kMaxParamBytes = 4000;

// Per-tensor flags: element type of the param/grad (low 2 bits) and whether every pointer of the
// tensor is aligned for kILP-wide vector loads.
enum : uint8_t { kF32 = 0, kBF16 = 1, kF16 = 2, kTypeMask = 3, kAligned = 4 };

template <int DEPTH, int N>
struct Meta {
  void* ptr[DEPTH][N];  // list d, tensor t (nullptr for a list the op does not use)
  int64_t numel[N];
  int chunk_end[N];     // cumulative chunk count of tensors 0..t in this launch
  uint8_t flags[N];
  int n;                // tensors in this launch
};

// --------------------------------------------------------------------------------------------
// Scalars read on the device.
// --------------------------------------------------------------------------------------------
enum ScalarCode : int { kSF32 = 0, kSF64, kSF16, kSBF16, kSI64, kSI32, kSBool };

struct Scalar {
  const void* ptr;  // device pointer, or nullptr: use `value`
  double value;
  int code;
};

__device__ __forceinline__ double read_scalar(const Scalar& s) {
  if (s.ptr == nullptr) return s.value;
  switch (s.code) {
    case kSF32: return double(*static_cast<const float*>(s.ptr));
    case kSF64: return *static_cast<const double*>(s.ptr);
    case kSF16: return double(static_cast<float>(*static_cast<const c10::Half*>(s.ptr)));
    case kSBF16: return double(static_cast<float>(*static_cast<const c10::BFloat16*>(s.ptr)));
    case kSI64: return double(*static_cast<const int64_t*>(s.ptr));
    case kSI32: return double(*static_cast<const int32_t*>(s.ptr));
    default: return *static_cast<const unsigned char*>(s.ptr) ? 1.0 : 0.0;
  }
}

// Thread 0 only: index of the tensor that owns chunk `block` (first t with chunk_end[t] > block).
template <int DEPTH, int N>
__device__ __forceinline__ int find_tensor(const Meta<DEPTH, N>& meta, int block) {
  int lo = 0, hi = meta.n - 1;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (meta.chunk_end[mid] <= block) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// --------------------------------------------------------------------------------------------
// Element access: kILP-wide vector loads/stores converting to/from fp32 registers.
// --------------------------------------------------------------------------------------------
template <typename T, int K>
struct alignas(sizeof(T) * K) Pack {
  T v[K];
};

template <typename T>
__device__ __forceinline__ void load4(const T* p, float r[kILP]) {
  const Pack<T, kILP> pk = *reinterpret_cast<const Pack<T, kILP>*>(p);
#pragma unroll
  for (int k = 0; k < kILP; ++k) r[k] = static_cast<float>(pk.v[k]);
}

template <typename T>
__device__ __forceinline__ void store4(T* p, const float r[kILP]) {
  Pack<T, kILP> pk;
#pragma unroll
  for (int k = 0; k < kILP; ++k) pk.v[k] = static_cast<T>(r[k]);  // round to nearest even
  *reinterpret_cast<Pack<T, kILP>*>(p) = pk;
}

template <typename T>
__device__ __forceinline__ float load1(const T* p, int64_t i) {
  return static_cast<float>(p[i]);
}

template <typename T>
__device__ __forceinline__ void store1(T* p, int64_t i, float x) {
  p[i] = static_cast<T>(x);
}

// Calls body(P{}) with P the storage type named by a tensor's flags.
template <typename Body>
__device__ __forceinline__ void dispatch_type(uint8_t flags, Body&& body) {
  switch (flags & kTypeMask) {
    case kBF16: body(c10::BFloat16{}); break;
    case kF16: body(c10::Half{}); break;
    default: body(float{}); break;
  }
}

// Block-wide sum of one double per thread, in a fixed order (deterministic). All threads must call
// it; the result is valid in thread 0.
__device__ __forceinline__ double block_sum(double x) {
  __shared__ double warp_sums[kThreads / 32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  x = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0;
  if (warp == 0) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_down_sync(0xffffffffu, x, o);
  }
  return x;
}

// --------------------------------------------------------------------------------------------
// Host side: packing tensor lists into launches.
// --------------------------------------------------------------------------------------------
inline uint8_t type_flag(at::ScalarType t) {
  return t == at::kBFloat16 ? kBF16 : (t == at::kHalf ? kF16 : kF32);
}

// Packs lists[0..DEPTH) (equal lengths, or empty for an unused list) into launches of at most N
// tensors. Empty tensors are left out. add(slot, i) fills per-tensor extras of the launch being
// built; launch(meta, n_chunks) launches it.
template <int DEPTH, int N, typename Add, typename Launch>
void multi_tensor_apply(const std::array<const std::vector<at::Tensor>*, DEPTH>& lists, Add&& add,
                        Launch&& launch) {
  Meta<DEPTH, N> meta;
  meta.n = 0;
  int64_t chunks = 0;
  const size_t n_tensors = lists[0]->size();
  for (size_t i = 0; i < n_tensors; ++i) {
    const at::Tensor& ref = (*lists[0])[i];
    const int64_t numel = ref.numel();
    if (numel == 0) continue;
    const int64_t c = (numel + kChunk - 1) / kChunk;
    TORCH_CHECK(c <= INT_MAX, "trainer: tensor of ", numel, " elements is too large for one launch");
    if (meta.n > 0 && chunks + c > INT_MAX) {
      launch(meta, int(chunks));
      meta.n = 0;
      chunks = 0;
    }
    const int slot = meta.n;
    bool aligned = true;
    for (int d = 0; d < DEPTH; ++d) {
      if (lists[d]->empty()) {
        meta.ptr[d][slot] = nullptr;
        continue;
      }
      const at::Tensor& t = (*lists[d])[i];
      void* p = const_cast<void*>(t.const_data_ptr());
      meta.ptr[d][slot] = p;
      aligned = aligned && reinterpret_cast<uintptr_t>(p) % (uintptr_t(t.element_size()) * kILP) == 0;
    }
    meta.numel[slot] = numel;
    chunks += c;
    meta.chunk_end[slot] = int(chunks);
    meta.flags[slot] = uint8_t(type_flag(ref.scalar_type()) | (aligned ? kAligned : 0));
    add(slot, i);
    if (++meta.n == N) {
      launch(meta, int(chunks));
      meta.n = 0;
      chunks = 0;
    }
  }
  if (meta.n > 0) launch(meta, int(chunks));
}

}  // namespace mta
}  // namespace trainer
