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
// 16 keys a tile, in the 16 int32 lanes of a zmm; 64 dims a pass.
struct KeyLanes {
  using V = __m512i;
  static constexpr int kKeys = 16;
  static V lo32(V a, V b) { return _mm512_unpacklo_epi32(a, b); }
  static V hi32(V a, V b) { return _mm512_unpackhi_epi32(a, b); }
  static V lo64(V a, V b) { return _mm512_unpacklo_epi64(a, b); }
  static V hi64(V a, V b) { return _mm512_unpackhi_epi64(a, b); }
  // t[4c + m] = chunk c of b[m], b[4 + m], b[8 + m], b[12 + m]
  static void join_chunks(const V* b, V* t) {
    for (int m = 0; m < 4; ++m) {
      const V lo01 = _mm512_shuffle_i32x4(b[m], b[4 + m], 0x44), hi01 = _mm512_shuffle_i32x4(b[m], b[4 + m], 0xEE);
      const V lo23 = _mm512_shuffle_i32x4(b[8 + m], b[12 + m], 0x44);
      const V hi23 = _mm512_shuffle_i32x4(b[8 + m], b[12 + m], 0xEE);
      t[m] = _mm512_shuffle_i32x4(lo01, lo23, 0x88), t[4 + m] = _mm512_shuffle_i32x4(lo01, lo23, 0xDD);
      t[8 + m] = _mm512_shuffle_i32x4(hi01, hi23, 0x88), t[12 + m] = _mm512_shuffle_i32x4(hi01, hi23, 0xDD);
    }
  }
  static V zero() { return _mm512_setzero_si512(); }
  static V codes(const uint8_t* row, int64_t d, int64_t D) {  // 64 codes from dim d, zeros past D
    return _mm512_maskz_loadu_epi8(D - d >= 64 ? ~0ULL : (1ULL << (D - d)) - 1, row + d);
  }
  // vpdpbusd takes K as u8: codes + 128 (a flip of the top bit), and the 128 * sum(q) this adds is taken off after
  static V operand(V t) { return _mm512_xor_si512(t, _mm512_set1_epi8(static_cast<char>(0x80))); }
  static V dot4(V acc, V t, int32_t four) { return _mm512_dpbusd_epi32(acc, t, _mm512_set1_epi32(four)); }
  static void store(V acc, const Query& q, int64_t n, const float* k_scales, float* w) {
    const __mmask16 m = first_lanes(n);
    const __m512i dots = _mm512_sub_epi32(acc, _mm512_set1_epi32(128 * q.code_sum));
    const __m512 scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(dots), _mm512_maskz_loadu_ps(m, k_scales));
    _mm512_mask_storeu_ps(w, m, _mm512_mul_ps(scaled, _mm512_set1_ps(q.factor)));
  }
};

#elif defined(MISTRALPY_AVX2)
// 8 keys a tile, in the 8 int32 lanes of a ymm; 32 dims a pass.
struct KeyLanes {
  using V = __m256i;
  static constexpr int kKeys = 8;
  static V lo32(V a, V b) { return _mm256_unpacklo_epi32(a, b); }
  static V hi32(V a, V b) { return _mm256_unpackhi_epi32(a, b); }
  static V lo64(V a, V b) { return _mm256_unpacklo_epi64(a, b); }
  static V hi64(V a, V b) { return _mm256_unpackhi_epi64(a, b); }
  // t[4c + m] = chunk c of b[m], b[4 + m]
  static void join_chunks(const V* b, V* t) {
    for (int m = 0; m < 4; ++m) {
      t[m] = _mm256_permute2x128_si256(b[m], b[4 + m], 0x20);
      t[4 + m] = _mm256_permute2x128_si256(b[m], b[4 + m], 0x31);
    }
  }
  static V zero() { return _mm256_setzero_si256(); }
  static V codes(const uint8_t* row, int64_t d, int64_t D) {  // 32 codes from dim d, zeros past D
    if (D - d >= 32) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + d));
    alignas(32) uint8_t tail[32] = {};
    std::memcpy(tail, row + d, D - d);
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(tail));
  }
#if defined(MISTRALPY_AVX2_VNNI)
  static V operand(V t) { return _mm256_xor_si256(t, _mm256_set1_epi8(static_cast<char>(0x80))); }
  static V dot4(V acc, V t, int32_t four) { return _mm256_dpbusd_avx_epi32(acc, t, _mm256_set1_epi32(four)); }
  static constexpr int32_t kFlip = 128;
#else
  static V operand(V t) { return t; }
  // |q| (u8) times k with q's sign, pairs in s16 (at most 2 * 127 * 127: codes are within +-127)
  static V dot4(V acc, V t, int32_t four) {
    const __m256i q = _mm256_set1_epi32(four);
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(q), _mm256_sign_epi8(t, q));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
  static constexpr int32_t kFlip = 0;
#endif
  static void store(V acc, const Query& q, int64_t n, const float* k_scales, float* w) {
    alignas(32) int32_t dots[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(dots), acc);
    for (int64_t j = 0; j < n; ++j) w[j] = static_cast<float>(dots[j] - kFlip * q.code_sum) * k_scales[j] * q.factor;
  }
};
#endif

#if defined(MISTRALPY_KEY_TILES)
using KeyVec = KeyLanes::V;
constexpr int kKeys = KeyLanes::kKeys;

// t[j] (key j's kKeys groups of 4 codes) -> t[g] (group g of the kKeys keys): a transpose of int32 lanes.
inline void transpose_keys(KeyVec* t) {
  using L = KeyLanes;
  KeyVec a[kKeys], b[kKeys];
  for (int i = 0; i < kKeys; i += 2) a[i] = L::lo32(t[i], t[i + 1]), a[i + 1] = L::hi32(t[i], t[i + 1]);
  for (int q = 0; q < kKeys; q += 4) {  // b[q + m], 128-bit chunk c: keys q .. q + 3 at group 4c + m
    b[q] = L::lo64(a[q], a[q + 2]), b[q + 1] = L::hi64(a[q], a[q + 2]);
    b[q + 2] = L::lo64(a[q + 1], a[q + 3]), b[q + 3] = L::hi64(a[q + 1], a[q + 3]);
  }
  L::join_chunks(b, t);
}

// w[r * ld + j] = row r's score of key j (j < n <= kKeys) at k + offsets[j].
inline void score_keys(const uint8_t* k, const int64_t* offsets, int64_t n, int64_t D, const Query* qs, int64_t rows,
                       const float* k_scales, float* w, int64_t ld) {
  KeyVec acc[kMaxRows];
  for (int64_t r = 0; r < rows; ++r) acc[r] = KeyLanes::zero();
  for (int64_t d = 0; d < D; d += 4 * kKeys) {
    KeyVec t[kKeys];
    for (int j = 0; j < kKeys; ++j) t[j] = j < n ? KeyLanes::codes(k + offsets[j], d, D) : KeyLanes::zero();
    transpose_keys(t);
    for (int g = 0; g < kKeys; ++g) t[g] = KeyLanes::operand(t[g]);
    for (int64_t r = 0; r < rows; ++r) {
      const int8_t* q = qs[r].codes + d;
      KeyVec a = acc[r];
      for (int g = 0; g < kKeys; ++g) {
        int32_t four;
        std::memcpy(&four, q + 4 * g, 4);
        a = KeyLanes::dot4(a, t[g], four);
      }
      acc[r] = a;
    }
  }
  for (int64_t r = 0; r < rows; ++r) KeyLanes::store(acc[r], qs[r], n, k_scales, w + r * ld);
}

// The same for a tile of n <= kTile keys.
inline void score_key_tile(const uint8_t* k, const int64_t* offsets, int64_t n, int64_t D, const Query* qs,
                           int64_t rows, const float* k_scales, float* w, int64_t ld) {
  for (int64_t j = 0; j < n; j += kKeys) {
    score_keys(k, offsets + j, std::min<int64_t>(kKeys, n - j), D, qs, rows, k_scales + j, w + j, ld);
  }
}
#endif

}  // namespace attn
