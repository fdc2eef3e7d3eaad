// 16-float vectors on GCC vector types (one AVX-512 register, or two AVX2 ones) and the
// elementwise math the CPU kernels of trainer._C share (attention.cpp, gelu.cpp).
#pragma once

#include <cstdint>
#include <cstring>

namespace trainer {
namespace vec {

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));

inline v16 load16(const float* p) {
  v16 x;
  std::memcpy(&x, p, sizeof(x));
  return x;
}
inline void store16(float* p, v16 x) { std::memcpy(p, &x, sizeof(x)); }

// exp on 16 lanes: 2^n * e^r, n = round(x / ln2) (by the 1.5 * 2^23 trick), r in [-ln2/2, ln2/2],
// e^r by its degree-7 Taylor polynomial (relative error < 1e-7); x clamped at -87 (exp -> ~1e-38).
// For x <= 0 (softmax rows, Gaussian densities): large positive x overflow.
inline v16 vexp(v16 x) {
  const v16 lo = x * 0.0f - 87.0f;
  x = x < lo ? lo : x;
  const v16 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  v16 r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  v16 p = r * (1.0f / 5040.0f) + (1.0f / 720.0f);
  p = p * r + (1.0f / 120.0f);
  p = p * r + (1.0f / 24.0f);
  p = p * r + (1.0f / 6.0f);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const vi16 bits = reinterpret_cast<vi16&>(p) + (__builtin_convertvector(n, vi16) << 23);
  return reinterpret_cast<const v16&>(bits);
}

}  // namespace vec
}  // namespace trainer
