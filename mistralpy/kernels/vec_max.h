// Maxima over float32 (or bf16) arrays on every level: 8 lanes where the build has AVX2 (the avx2 levels, avx512),
// a plain loop otherwise. A maximum does not depend on the order it is taken in, so both give the plain loop's
// value, NaN included: std::max(m, NaN) keeps m, as vmaxps returns its second operand (the running maximum).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "isa.h"
#include "vec_avx2.h"

namespace vec {

#if defined(MISTRALPY_AVX2) || defined(MISTRALPY_AVX512)
inline float max_lanes(__m256 v) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  float m = lanes[0];
  for (int k = 1; k < 8; ++k) m = std::max(m, lanes[k]);
  return m;
}
#endif

// The largest p[i] that is not NaN, -inf if none: m = std::max(m, p[i]) from m = -inf.
inline float max_f32(const float* p, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
#if defined(MISTRALPY_AVX2) || defined(MISTRALPY_AVX512)
  __m256 a = _mm256_set1_ps(m), b = a;
  for (; i + 16 <= n; i += 16) {
    a = _mm256_max_ps(_mm256_loadu_ps(p + i), a), b = _mm256_max_ps(_mm256_loadu_ps(p + i + 8), b);
  }
  m = max_lanes(_mm256_max_ps(a, b));
#endif
  for (; i < n; ++i) m = std::max(m, p[i]);
  return m;
}

// The largest |p[i]| that is not NaN, 0 if none: m = std::max(m, std::fabs(p[i])) from m = 0 (lanes for float32 and
// bf16 values).
template <typename T>
inline float max_abs_f32(const T* p, int64_t n) {
  float m = 0.0f;
  int64_t i = 0;
#if defined(MISTRALPY_AVX2) || defined(MISTRALPY_AVX512)
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, c10::BFloat16>) {
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 a = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) a = _mm256_max_ps(_mm256_and_ps(load8_f32(p + i), magnitude), a);
    m = max_lanes(a);
  }
#endif
  for (; i < n; ++i) m = std::max(m, std::fabs(static_cast<float>(p[i])));
  return m;
}

}  // namespace vec
