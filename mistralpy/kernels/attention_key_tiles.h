// Int8 scores of several query rows against a tile of keys at once: the tile's K codes are transposed once, so that a
// vector lane holds one key's 4 codes of a group of dims, and each row then takes one u8 x s8 dot per group (its 4
// codes broadcast) for all the tile's keys, with no sum across lanes. A dot is an exact integer whatever order it is
// taken in, and the float steps after it are attention_scores.h's: (float(dot) * k_scale) * factor. So these are the
// same bits as scoring the keys one by one, for every row; only the work is shared.
#pragma once
#include <cstdint>
#include <cstring>

#include "attention_scores.h"

namespace attn {

#if defined(MISTRALPY_AVX512_VNNI) || defined(MISTRALPY_AVX2)
#define MISTRALPY_KEY_TILES 1  // score_key_tile exists on this build
#endif

#if defined(MISTRALPY_AVX512_VNNI)
// t[j] (key j's 16 groups of 4 codes) -> t[g] (group g of the 16 keys), a 16 x 16 transpose of int32 lanes.
inline void transpose16(__m512i* t) {
  __m512i a[16], b[16];
  for (int i = 0; i < 16; i += 2) {
    a[i] = _mm512_unpacklo_epi32(t[i], t[i + 1]), a[i + 1] = _mm512_unpackhi_epi32(t[i], t[i + 1]);
  }
  for (int q = 0; q < 16; q += 4) {  // b[q + m], 128-bit chunk c: keys q .. q + 3 at group 4c + m
    b[q] = _mm512_unpacklo_epi64(a[q], a[q + 2]), b[q + 1] = _mm512_unpackhi_epi64(a[q], a[q + 2]);
    b[q + 2] = _mm512_unpacklo_epi64(a[q + 1], a[q + 3]), b[q + 3] = _mm512_unpackhi_epi64(a[q + 1], a[q + 3]);
  }
  for (int m = 0; m < 4; ++m) {
    const __m512i lo01 = _mm512_shuffle_i32x4(b[m], b[4 + m], 0x44);
    const __m512i hi01 = _mm512_shuffle_i32x4(b[m], b[4 + m], 0xEE);
    const __m512i lo23 = _mm512_shuffle_i32x4(b[8 + m], b[12 + m], 0x44);
    const __m512i hi23 = _mm512_shuffle_i32x4(b[8 + m], b[12 + m], 0xEE);
    t[m] = _mm512_shuffle_i32x4(lo01, lo23, 0x88), t[4 + m] = _mm512_shuffle_i32x4(lo01, lo23, 0xDD);
    t[8 + m] = _mm512_shuffle_i32x4(hi01, hi23, 0x88), t[12 + m] = _mm512_shuffle_i32x4(hi01, hi23, 0xDD);
  }
}

// w[r * ld + j] = row r's score of key j (j < n <= 16) at k + offsets[j].
inline void score_key_tile(const uint8_t* k, const int64_t* offsets, int64_t n, int64_t D, const Query* qs,
                           int64_t rows, const float* k_scales, float* w, int64_t ld) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));  // codes + 128: vpdpbusd takes K as u8
  __m512i acc[kMaxRows];
  for (int64_t r = 0; r < rows; ++r) acc[r] = _mm512_setzero_si512();
  for (int64_t d = 0; d < D; d += 64) {
    const __mmask64 m = D - d >= 64 ? ~0ULL : (1ULL << (D - d)) - 1;
    __m512i t[16];
    for (int j = 0; j < 16; ++j) t[j] = j < n ? _mm512_maskz_loadu_epi8(m, k + offsets[j] + d) : _mm512_setzero_si512();
    transpose16(t);
    for (int g = 0; g < 16; ++g) t[g] = _mm512_xor_si512(t[g], flip);
    for (int64_t r = 0; r < rows; ++r) {
      const int8_t* q = qs[r].codes + d;
      __m512i a = acc[r];
      for (int g = 0; g < 16; ++g) {
        int32_t four;
        std::memcpy(&four, q + 4 * g, 4);
        a = _mm512_dpbusd_epi32(a, t[g], _mm512_set1_epi32(four));
      }
      acc[r] = a;
    }
  }
  const __mmask16 m = first_lanes(n);
  const __m512 scales = _mm512_maskz_loadu_ps(m, k_scales);
  for (int64_t r = 0; r < rows; ++r) {
    const __m512i dots = _mm512_sub_epi32(acc[r], _mm512_set1_epi32(128 * qs[r].code_sum));
    const __m512 scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(dots), scales);
    _mm512_mask_storeu_ps(w + r * ld, m, _mm512_mul_ps(scaled, _mm512_set1_ps(qs[r].factor)));
  }
}

#elif defined(MISTRALPY_AVX2)
// t[j] (key j's 8 groups of 4 codes) -> t[g] (group g of the 8 keys), an 8 x 8 transpose of int32 lanes.
inline void transpose8(__m256i* t) {
  __m256i a[8], b[8];
  for (int i = 0; i < 8; i += 2) {
    a[i] = _mm256_unpacklo_epi32(t[i], t[i + 1]), a[i + 1] = _mm256_unpackhi_epi32(t[i], t[i + 1]);
  }
  for (int q = 0; q < 8; q += 4) {  // b[q + m], 128-bit chunk c: keys q .. q + 3 at group 4c + m
    b[q] = _mm256_unpacklo_epi64(a[q], a[q + 2]), b[q + 1] = _mm256_unpackhi_epi64(a[q], a[q + 2]);
    b[q + 2] = _mm256_unpacklo_epi64(a[q + 1], a[q + 3]), b[q + 3] = _mm256_unpackhi_epi64(a[q + 1], a[q + 3]);
  }
  for (int m = 0; m < 4; ++m) {
    t[m] = _mm256_permute2x128_si256(b[m], b[4 + m], 0x20);
    t[4 + m] = _mm256_permute2x128_si256(b[m], b[4 + m], 0x31);
  }
}

// 32 codes of a K row from dim d, zeros past D.
inline __m256i codes32(const uint8_t* row, int64_t d, int64_t D) {
  if (D - d >= 32) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + d));
  alignas(32) uint8_t tail[32] = {};
  std::memcpy(tail, row + d, D - d);
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(tail));
}

// One row's 4 codes q against group t of 8 keys' codes (+ 128 with VNNI), added to acc: an exact dot per lane.
inline __m256i dot4(__m256i acc, __m256i t, int32_t four) {
  const __m256i q = _mm256_set1_epi32(four);
#if defined(MISTRALPY_AVX2_VNNI)
  return _mm256_dpbusd_avx_epi32(acc, t, q);  // t: codes + 128
#else
  // |q| (u8) times k with q's sign, pairs in s16 (at most 2 * 127 * 127: codes are within +-127)
  const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(t, q));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#endif
}

// The 8 keys at k + offsets[j] (j < n <= 8).
inline void score_key_tile8(const uint8_t* k, const int64_t* offsets, int64_t n, int64_t D, const Query* qs,
                            int64_t rows, const float* k_scales, float* w, int64_t ld) {
  __m256i acc[kMaxRows];
  for (int64_t r = 0; r < rows; ++r) acc[r] = _mm256_setzero_si256();
  for (int64_t d = 0; d < D; d += 32) {
    __m256i t[8];
    for (int j = 0; j < 8; ++j) t[j] = j < n ? codes32(k + offsets[j], d, D) : _mm256_setzero_si256();
    transpose8(t);
#if defined(MISTRALPY_AVX2_VNNI)
    for (int g = 0; g < 8; ++g) t[g] = _mm256_xor_si256(t[g], _mm256_set1_epi8(static_cast<char>(0x80)));
#endif
    for (int64_t r = 0; r < rows; ++r) {
      const int8_t* q = qs[r].codes + d;
      __m256i a = acc[r];
      for (int g = 0; g < 8; ++g) {
        int32_t four;
        std::memcpy(&four, q + 4 * g, 4);
        a = dot4(a, t[g], four);
      }
      acc[r] = a;
    }
  }
  alignas(32) int32_t dots[8];
  for (int64_t r = 0; r < rows; ++r) {
#if defined(MISTRALPY_AVX2_VNNI)
    acc[r] = _mm256_sub_epi32(acc[r], _mm256_set1_epi32(128 * qs[r].code_sum));
#endif
    _mm256_store_si256(reinterpret_cast<__m256i*>(dots), acc[r]);
    for (int64_t j = 0; j < n; ++j) w[r * ld + j] = static_cast<float>(dots[j]) * k_scales[j] * qs[r].factor;
  }
}

inline void score_key_tile(const uint8_t* k, const int64_t* offsets, int64_t n, int64_t D, const Query* qs,
                           int64_t rows, const float* k_scales, float* w, int64_t ld) {
  score_key_tile8(k, offsets, std::min<int64_t>(n, 8), D, qs, rows, k_scales, w, ld);
  if (n > 8) score_key_tile8(k, offsets + 8, n - 8, D, qs, rows, k_scales + 8, w + 8, ld);
}
#endif

}  // namespace attn
