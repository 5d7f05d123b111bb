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

// 8 float32 rounded to bf16 as c10::BFloat16 rounds (nearest, ties to even; NaN to 0x7FC0), kept as float32 (the
// low half zero).
inline __m256 round_bf16x8(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i bias = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1)),
                                        _mm256_set1_epi32(0x7FFF));
  const __m256i high = _mm256_set1_epi32(static_cast<int>(0xFFFF0000));
  const __m256i rounded = _mm256_and_si256(_mm256_add_epi32(bits, bias), high);
  const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  return _mm256_blendv_ps(_mm256_castsi256_ps(rounded), _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC00000)), nan);
}

// The high halves of 8 rounded values (round_bf16x8) as bf16.
inline void store_bf16x8(c10::BFloat16* p, __m256 rounded) {
  const __m256i high = _mm256_srli_epi32(_mm256_castps_si256(rounded), 16);
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(high, high), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}

// 8 float32 stored as the output dtype: as they are, or rounded as static_cast<c10::BFloat16> rounds.
inline void store8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
inline void store8(c10::BFloat16* p, __m256 v) { store_bf16x8(p, round_bf16x8(v)); }

inline int32_t sum8_epi32(__m256i v) {
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
  return _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1)));
}

}  // namespace vec
#endif
