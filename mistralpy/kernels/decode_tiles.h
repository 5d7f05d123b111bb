// Decode attention's inner loops over many keys at once (AVX-512 BF16), for bf16 queries and bf16 or int8 K/V rows
// (kv_cache.h). The per-key loops in paged_attention.cpp form each score with a horizontal sum of its own and keep
// the V sums in memory; here 16 scores share one transposing sum tree, and the V sums of up to 4 query heads x 64
// dims stay in registers for all the keys.
#pragma once
#include <c10/util/BFloat16.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "isa.h"
#include "kv_cache.h"

#ifdef MISTRALPY_AVX512_BF16
namespace decode_tiles {

constexpr int64_t kTile = 16;    // keys per score tile
constexpr int64_t kDims = 64;    // dims per V tile
constexpr int64_t kHeads = 4;    // query heads per V tile
constexpr int64_t kAhead = 16;   // keys requested ahead of their use

// Key j of a tile goes into slot 4 (j % 4) + j / 4 of sum16's input, which returns key j's sum in lane j.
constexpr int kSlot[kTile] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};

// The sums of the lanes of s[0..16), permuted by kSlot: each level adds two halves of two vectors into one.
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

inline __m512bh load_pairs(const c10::BFloat16* p) { return (__m512bh)_mm512_loadu_si512(p); }

// scores[g * stride + j] = scale * (q_g . k_j) for the `group` query heads (q_g at q + g * q_stride) and the n <= 16
// keys at base + offsets[j]. The products of bf16 values are exact; they are summed in float32.
template <int D>
inline void score_tile(const c10::BFloat16* base, const int64_t* offsets, int64_t n, const c10::BFloat16* q,
                       int64_t q_stride, int64_t group, float scale, float* scores, int64_t stride) {
  const __mmask16 mask = n >= kTile ? 0xFFFF : static_cast<__mmask16>((1u << n) - 1);
  for (int64_t g = 0; g < group; ++g) {
    __m512bh qv[D / 32];
    for (int c = 0; c < D / 32; ++c) qv[c] = load_pairs(q + g * q_stride + 32 * c);
    __m512 s[kTile];
    for (int j = 0; j < kTile; ++j) {
      __m512 acc = _mm512_setzero_ps();
      if (j < n) {
        for (int c = 0; c < D / 32; ++c) acc = _mm512_dpbf16_ps(acc, load_pairs(base + offsets[j] + 32 * c), qv[c]);
      }
      s[kSlot[j]] = acc;
    }
    _mm512_mask_storeu_ps(scores + g * stride, mask, _mm512_mul_ps(sum16(s), _mm512_set1_ps(scale)));
  }
}

// A V row's 16 values from dim d as float32, and the factor its weights take: bf16 rows are exact in float32 (the top
// half); an int8 row's codes are, and its scale multiplies the row's weight.
inline __m512 row16(const c10::BFloat16* row, int64_t d) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + d)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
inline __m512 row16(const uint8_t* row, int64_t d) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + d))));
}
inline float weight(float p, const c10::BFloat16*, int64_t) { return p; }
inline float weight(float p, const uint8_t* row, int64_t D) { return p * kv::row_scale(row, D); }

// scores[g * stride + j] = scale_j * (q_g . k_j) for the `group` query heads (q_g at q + g * D, float32, the
// softmax scale already in) and the n <= 16 int8 K rows at base + offsets[j] (scale_j: their row scales).
template <int D>
inline void score_tile_int8(const uint8_t* base, const int64_t* offsets, int64_t n, const float* q, int64_t group,
                            float* scores, int64_t stride) {
  const __mmask16 mask = n >= kTile ? 0xFFFF : static_cast<__mmask16>((1u << n) - 1);
  alignas(64) float row_scales[kTile] = {};
  for (int64_t j = 0; j < n; ++j) row_scales[j] = kv::row_scale(base + offsets[j], D);
  for (int64_t g = 0; g < group; ++g) {
    __m512 s[kTile];
    for (int j = 0; j < kTile; ++j) {
      __m512 acc = _mm512_setzero_ps();
      if (j < n) {
        for (int c = 0; c < D / 16; ++c) {
          acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + g * D + 16 * c), row16(base + offsets[j], 16 * c), acc);
        }
      }
      s[kSlot[j]] = acc;
    }
    _mm512_mask_storeu_ps(scores + g * stride, mask, _mm512_mul_ps(sum16(s), _mm512_load_ps(row_scales)));
  }
}

// acc[g * D + d] = sum_i p[g * stride + i] v_i[d] for GT query heads and the 64 dims from d0 of the V rows at
// base + offsets[i], i < span, summed in key order (as the per-key loop does).
template <int GT, typename KV>
inline void value_tile(const KV* base, const int64_t* offsets, int64_t span, const float* p, int64_t stride,
                       int64_t D, int64_t d0, float* acc) {
  __m512 a[GT][4];
  for (int g = 0; g < GT; ++g)
    for (int c = 0; c < 4; ++c) a[g][c] = _mm512_setzero_ps();
  constexpr int64_t kLine = 64 / sizeof(KV);
  for (int64_t i = 0; i < span; ++i) {
    if (i + kAhead < span) {
      for (int64_t e = 0; e < kDims; e += kLine) prefetch_line(base + offsets[i + kAhead] + d0 + e);
    }
    const KV* v = base + offsets[i];
    __m512 x[4];
    for (int c = 0; c < 4; ++c) x[c] = row16(v, d0 + 16 * c);
    for (int g = 0; g < GT; ++g) {
      const __m512 w = _mm512_set1_ps(weight(p[g * stride + i], v, D));
      for (int c = 0; c < 4; ++c) a[g][c] = _mm512_fmadd_ps(w, x[c], a[g][c]);
    }
  }
  for (int g = 0; g < GT; ++g)
    for (int c = 0; c < 4; ++c) _mm512_storeu_ps(acc + g * D + d0 + 16 * c, a[g][c]);
}

// value_tile over all of a KV head's `group` query heads and D dims (D a multiple of 64).
template <typename KV>
inline void value_rows(const KV* base, const int64_t* offsets, int64_t span, const float* p, int64_t stride,
                       int64_t group, int64_t D, float* acc) {
  for (int64_t d0 = 0; d0 < D; d0 += kDims) {
    for (int64_t g0 = 0; g0 < group; g0 += kHeads) {
      const float* pg = p + g0 * stride;
      float* ag = acc + g0 * D;
      switch (std::min(kHeads, group - g0)) {
        case 1: value_tile<1>(base, offsets, span, pg, stride, D, d0, ag); break;
        case 2: value_tile<2>(base, offsets, span, pg, stride, D, d0, ag); break;
        case 3: value_tile<3>(base, offsets, span, pg, stride, D, d0, ag); break;
        default: value_tile<4>(base, offsets, span, pg, stride, D, d0, ag); break;
      }
    }
  }
}

// The scores of a task's query heads against its `span` keys, 16 keys at a time. scores holds
// task_heads x group rows of span; q is the task's first query head (bf16 rows), qf the same heads in float32 with
// the softmax scale in. prefetch(plane, i, into_l2) requests key i's rows of the task's KV heads in that plane
// (0: K, v_plane: V) into L1, or into L2.
template <typename T, typename KV, typename F>
void score_tiles(const KV* kv, const int64_t* offsets, int64_t span, const T* q, int64_t q_stride, const float* qf,
                 int64_t task_heads, int64_t group, int64_t D, int64_t head_stride, float scale, float* scores,
                 F&& prefetch, int64_t v_plane) {
  for (int64_t i = 0; i < kTile; ++i) prefetch(0, i);
  for (int64_t i0 = 0; i0 < span; i0 += kTile) {
    for (int64_t i = i0 + kTile; i < i0 + 2 * kTile; ++i) prefetch(0, i);
    // the V pass's rows too (into L2; a few hundred keys' rows fit), so that their misses overlap the K pass's
    for (int64_t i = i0; i < i0 + kTile; ++i) prefetch(v_plane, i, true);
    const int64_t n = std::min(kTile, span - i0);
    for (int64_t h = 0; h < task_heads; ++h) {
      const KV* base = kv + h * head_stride;
      float* s = scores + h * group * span + i0;
      if constexpr (std::is_same_v<KV, uint8_t>) {
        const float* qh = qf + h * group * D;
        if (D == 64) {
          score_tile_int8<64>(base, offsets + i0, n, qh, group, s, span);
        } else {
          score_tile_int8<128>(base, offsets + i0, n, qh, group, s, span);
        }
      } else if constexpr (std::is_same_v<T, c10::BFloat16> && std::is_same_v<KV, c10::BFloat16>) {
        const T* qh = q + h * group * q_stride;
        if (D == 64) {
          score_tile<64>(base, offsets + i0, n, qh, q_stride, group, scale, s, span);
        } else {
          score_tile<128>(base, offsets + i0, n, qh, q_stride, group, scale, s, span);
        }
      }
    }
  }
}

// acc (task_heads x group rows of D) = each query head's weights (scores) times the V rows.
template <typename KV>
void value_tiles(const KV* v, const int64_t* offsets, int64_t span, const float* weights, int64_t task_heads,
                 int64_t group, int64_t D, int64_t head_stride, float* acc) {
  if constexpr (std::is_same_v<KV, c10::BFloat16> || std::is_same_v<KV, uint8_t>) {  // the rows row16 reads
    for (int64_t h = 0; h < task_heads; ++h) {
      value_rows(v + h * head_stride, offsets, span, weights + h * group * span, span, group, D, acc + h * group * D);
    }
  }
}
}  // namespace decode_tiles
#endif
