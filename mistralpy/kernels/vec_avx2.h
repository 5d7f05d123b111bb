// 8-lane helpers the kernels share on every build with AVX2 (the avx2 levels, and avx512, which has it too): exact
// loads of bf16 values and int8 codes as float32, and the sum of 8 s32 lanes.
#pragma once
#include "isa.h"
#if defined(MISTRALPY_AVX2) || defined(MISTRALPY_AVX512)
#include <c10/util/BFloat16.h>
#include <immintrin.h>

#include <cstdint>

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

}  // namespace vec
#endif
