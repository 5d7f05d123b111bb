// Scores of one query row against keys of the paged KV cache, read in place. The arithmetic of a score depends only on
// the query row and the key's row, never on which other keys or rows are computed alongside, so decode and prefill
// attention (attention_rows.h) get the same bits for the same (query, key):
//   int8 rows (kv_cache.h): the query row quantized to int8 the way the cache quantizes K (llama.cpp likewise turns
//     the query into q8_0 for a q8_0 cache); an exact integer dot product with K's codes, then
//     (float(dot) * k_scale) * (q_scale * softmax_scale).
//   bf16 rows: vdpbf16ps over the row in chunks of 32 values (16 lanes of pairs), then the 16 lanes summed by one
//     fixed tree, times the softmax scale. float rows: the same with fused multiply-adds over chunks of 16.
// Int8 scores on the AVX2 and AVX-512 VNNI builds: attention_key_tiles.h, for several rows at once (the same integers
// and float steps). Otherwise, and for bf16 and float rows without AVX-512, plain loops: the same bits for decode and
// prefill on each build.
#pragma once
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "isa.h"
#include "kv_cache.h"
#include "vec_max.h"
#if defined(MISTRALPY_AVX512) || defined(MISTRALPY_AVX2)
#include <immintrin.h>

#include "vec_avx2.h"
#endif

namespace attn {

constexpr int64_t kTile = 16;    // keys scored together
constexpr int64_t kMaxRows = 8;  // query rows attended together: they share key tiles and a pass over V

// A query row as the scores take it: for int8 rows, its codes (padded with zeros to a multiple of 64), their sum and
// factor = q_scale * softmax_scale; for bf16 and float rows, the row itself and factor = softmax_scale.
struct Query {
  const int8_t* codes = nullptr;
  int32_t code_sum = 0;
  const void* values = nullptr;
  float factor = 0.0f;
};

inline int64_t padded_dim(int64_t D) { return (D + 63) / 64 * 64; }

// The row's int8 codes into `codes` (padded_dim(D) bytes), as kv::quantize_row rounds.
template <typename T>
Query quantize_query(const T* q, int64_t D, float scale, int8_t* codes) {
  const float amax = vec::max_abs_f32(q, D);
  const float q_scale = amax / 127.0f, inv = q_scale > 0.0f ? 1.0f / q_scale : 0.0f;
  int32_t sum = 0;
  for (int64_t d = 0; d < padded_dim(D); ++d) {
    const float x = d < D ? static_cast<float>(q[d]) * inv : 0.0f;
    codes[d] = static_cast<int8_t>(std::nearbyint(std::clamp(x, -127.0f, 127.0f)));
    sum += codes[d];
  }
  return {codes, sum, nullptr, q_scale * scale};
}

#if defined(MISTRALPY_AVX512)
// Key j of a tile goes into slot 4 (j % 4) + j / 4 of a sum tree's input, which returns key j's sum in lane j.
constexpr int kSlot[kTile] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};

// The lane sums of s[0..16), permuted by kSlot: each level adds two halves of two vectors into one. Every key's sum
// goes through the same adds (lanes l and l + 8, then l and l + 4, l + 2, l + 1), whatever its slot.
inline __m512 sum16(const __m512* s) {
  __m512 c[8], d[4], e[2];
  for (int j = 0; j < 8; ++j) {
    c[j] = _mm512_add_ps(_mm512_shuffle_f32x4(s[2 * j], s[2 * j + 1], 0x44),
                         _mm512_shuffle_f32x4(s[2 * j], s[2 * j + 1], 0xEE));
  }
  for (int j = 0; j < 4; ++j) {
    d[j] = _mm512_add_ps(_mm512_shuffle_f32x4(c[2 * j], c[2 * j + 1], 0x88),
                         _mm512_shuffle_f32x4(c[2 * j], c[2 * j + 1], 0xDD));
  }
  for (int j = 0; j < 2; ++j) {
    e[j] = _mm512_add_ps(_mm512_shuffle_ps(d[2 * j], d[2 * j + 1], 0x44),
                         _mm512_shuffle_ps(d[2 * j], d[2 * j + 1], 0xEE));
  }
  return _mm512_add_ps(_mm512_shuffle_ps(e[0], e[1], 0x88), _mm512_shuffle_ps(e[0], e[1], 0xDD));
}

inline __mmask16 first_lanes(int64_t n) { return n >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << n) - 1); }
#endif

// scores[j] for the n <= 16 keys at k + offsets[j]; k_scales[j]: their row scales (int8 rows only).
template <typename KV>
inline void score_tile(const KV* k, const int64_t* offsets, int64_t n, int64_t D, const Query& q,
                       const float* k_scales, float* scores);

// Int8 rows key by key, in plain C++: the builds without key tiles (attention_key_tiles.h) take these.
template <>
inline void score_tile<uint8_t>(const uint8_t* k, const int64_t* offsets, int64_t n, int64_t D, const Query& q,
                                const float* k_scales, float* scores) {
  for (int64_t j = 0; j < n; ++j) {
    const int8_t* codes = reinterpret_cast<const int8_t*>(k + offsets[j]);
    int32_t dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += static_cast<int32_t>(q.codes[d]) * codes[d];
    scores[j] = static_cast<float>(dot) * k_scales[j] * q.factor;
  }
}

template <>
inline void score_tile<c10::BFloat16>(const c10::BFloat16* k, const int64_t* offsets, int64_t n, int64_t D,
                                      const Query& q, const float*, float* scores) {
  const auto* qv = static_cast<const c10::BFloat16*>(q.values);
#if defined(MISTRALPY_AVX512_BF16)
  __m512 s[kTile];
  for (int j = 0; j < kTile; ++j) {
    __m512 acc = _mm512_setzero_ps();
    if (j < n) {
      const c10::BFloat16* row = k + offsets[j];
      for (int64_t d = 0; d < D; d += 32) {
        const __mmask32 m = D - d >= 32 ? ~0u : (1u << (D - d)) - 1;
        const __m512bh a = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(m, row + d));
        const __m512bh b = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(m, qv + d));
        acc = _mm512_dpbf16_ps(acc, a, b);
      }
    }
    s[kSlot[j]] = acc;
  }
  _mm512_mask_storeu_ps(scores, first_lanes(n), _mm512_mul_ps(sum16(s), _mm512_set1_ps(q.factor)));
#else
  for (int64_t j = 0; j < n; ++j) {
    const c10::BFloat16* row = k + offsets[j];
    float acc = 0.0f;
    for (int64_t d = 0; d < D; ++d) acc = std::fma(static_cast<float>(qv[d]), static_cast<float>(row[d]), acc);
    scores[j] = acc * q.factor;
  }
#endif
}

template <>
inline void score_tile<float>(const float* k, const int64_t* offsets, int64_t n, int64_t D, const Query& q,
                              const float*, float* scores) {
  const auto* qv = static_cast<const float*>(q.values);
#if defined(MISTRALPY_AVX512)
  __m512 s[kTile];
  for (int j = 0; j < kTile; ++j) {
    __m512 acc = _mm512_setzero_ps();
    if (j < n) {
      const float* row = k + offsets[j];
      for (int64_t d = 0; d < D; d += 16) {
        const __mmask16 m = first_lanes(D - d);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, row + d), _mm512_maskz_loadu_ps(m, qv + d), acc);
      }
    }
    s[kSlot[j]] = acc;
  }
  _mm512_mask_storeu_ps(scores, first_lanes(n), _mm512_mul_ps(sum16(s), _mm512_set1_ps(q.factor)));
#else
  for (int64_t j = 0; j < n; ++j) {
    const float* row = k + offsets[j];
    float acc = 0.0f;
    for (int64_t d = 0; d < D; ++d) acc = std::fma(qv[d], row[d], acc);
    scores[j] = acc * q.factor;
  }
#endif
}

}  // namespace attn
