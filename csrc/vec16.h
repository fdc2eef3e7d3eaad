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

// n <= 16 floats at p, zero-padded to 16 lanes (the last columns of a row)
inline v16 loadn(const float* p, int64_t n) {
  if (n == 16) return load16(p);
  alignas(64) float z[16] = {};
  std::memcpy(z, p, n * sizeof(float));
  return load16(z);
}
inline void storen(float* p, v16 v, int64_t n) {
  if (n == 16) return store16(p, v);
  alignas(64) float z[16];
  store16(z, v);
  std::memcpy(p, z, n * sizeof(float));
}

// One stage of a 16 x 16 transpose in registers: rows i and i + K (i & K == 0) swap their K-wide
// off-diagonal blocks. After the stages K = 1, 2, 4, 8, r[i][j] holds what r[j][i] held.
template <int K>
inline void transpose_stage(v16* r) {
  constexpr vi16 lo = {
#define TRAINER_LO(j) (((j) & K) ? 16 + (j) - K : (j))
      TRAINER_LO(0), TRAINER_LO(1), TRAINER_LO(2), TRAINER_LO(3), TRAINER_LO(4), TRAINER_LO(5),
      TRAINER_LO(6), TRAINER_LO(7), TRAINER_LO(8), TRAINER_LO(9), TRAINER_LO(10), TRAINER_LO(11),
      TRAINER_LO(12), TRAINER_LO(13), TRAINER_LO(14), TRAINER_LO(15)};
#undef TRAINER_LO
  constexpr vi16 hi = {
#define TRAINER_HI(j) (((j) & K) ? 16 + (j) : (j) + K)
      TRAINER_HI(0), TRAINER_HI(1), TRAINER_HI(2), TRAINER_HI(3), TRAINER_HI(4), TRAINER_HI(5),
      TRAINER_HI(6), TRAINER_HI(7), TRAINER_HI(8), TRAINER_HI(9), TRAINER_HI(10), TRAINER_HI(11),
      TRAINER_HI(12), TRAINER_HI(13), TRAINER_HI(14), TRAINER_HI(15)};
#undef TRAINER_HI
  for (int i = 0; i < 16; ++i) {
    if (i & K) continue;
    const v16 a = r[i], b = r[i + K];
    r[i] = __builtin_shuffle(a, b, lo);
    r[i + K] = __builtin_shuffle(a, b, hi);
  }
}

inline void transpose16(v16* r) {
  transpose_stage<1>(r);
  transpose_stage<2>(r);
  transpose_stage<4>(r);
  transpose_stage<8>(r);
}

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
