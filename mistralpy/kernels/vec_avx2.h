// 8-lane helpers the kernels share on every build with AVX2 (the avx2 levels, and avx512, which has it too): exact
// loads of bf16 values and int8 codes as float32, the sum of 8 s32 lanes, the maximum of a float32 array.
#pragma once
#include "isa.h"
#if defined(MISTRALPY_AVX2) || defined(MISTRALPY_AVX512)
#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace vec {

inline __m256 load8_f32(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8_f32(const c10::BFloat16* p) {  // exact: a bf16 is a float32's high half
  const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
}

// 8 int8 codes (an int8 K/V row's bytes) as float32, exactly.
inline __m256 codes8_f32(const uint8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

inline int32_t sum8_epi32(__m256i v) {
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
  return _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1)));
}

// The largest of p[0, n) that is not NaN (-inf if none): what a loop of m = std::max(m, p[i]) from -inf returns, in
// lanes (a maximum does not depend on the order; vmaxps returns its second operand, the running maximum, for a NaN).
inline float max_f32(const float* p, int64_t n) {
  __m256 a = _mm256_set1_ps(-std::numeric_limits<float>::infinity()), b = a;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a = _mm256_max_ps(_mm256_loadu_ps(p + i), a), b = _mm256_max_ps(_mm256_loadu_ps(p + i + 8), b);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_max_ps(a, b));
  float m = lanes[0];
  for (int k = 1; k < 8; ++k) m = std::max(m, lanes[k]);
  for (; i < n; ++i) m = std::max(m, p[i]);
  return m;
}

}  // namespace vec
#endif
