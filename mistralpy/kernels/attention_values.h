// The V side of attention (attention_rows.h): out[r] = sum over keys of w[r][i] * v_i, by fused multiply-adds in key
// order, rounded to the output dtype at the end; 8 or 16 lanes of dims on the AVX2 and AVX-512 builds, plain C++
// elsewhere, the same fma per value on every build. Also the query row and the KV head's context that attention takes.
#pragma once
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "attention_scores.h"
#include "vec_avx2.h"

namespace attn {

constexpr int64_t kAhead = 16;  // keys whose rows are requested ahead of their use

// A query row: its D values, where its D outputs go, and the keys [lo, hi) of the context it attends.
template <typename T>
struct Row {
  const T* q;
  T* out;
  int64_t lo, hi;
};

// One KV head's context: key i's K and V rows at k + offsets[i] and v + offsets[i]; for int8 rows also their scales.
template <typename KV>
struct Context {
  const KV* k;
  const KV* v;
  const int64_t* offsets;
  const float* k_scales = nullptr;
  const float* v_scales = nullptr;
};

// out[r] = sum over keys [base, base + width) of w[r][i - base] * v_i, in key order, for rows r < n: plain C++.
template <typename KV, typename T>
void weighted_scalar(const Context<KV>& c, const float* w, int64_t base, int64_t width, int64_t D,
                     const Row<T>* rows, int64_t n) {
  std::vector<float> acc(n * D, 0.0f);
  for (int64_t i = 0; i < width; ++i) {
    const KV* row = c.v + c.offsets[base + i];
    for (int64_t r = 0; r < n; ++r) {
      const float wr = w[r * width + i];
      for (int64_t d = 0; d < D; ++d) {
        const float x = std::is_same_v<KV, uint8_t> ? static_cast<float>(static_cast<int8_t>(row[d]))
                                                     : static_cast<float>(row[d]);
        acc[r * D + d] = std::fma(wr, x, acc[r * D + d]);
      }
    }
  }
  for (int64_t r = 0; r < n; ++r)
    for (int64_t d = 0; d < D; ++d) rows[r].out[d] = static_cast<T>(acc[r * D + d]);
}

#if defined(MISTRALPY_AVX512)
// A V row's 16 values from dim d (fewer at the row's end: the rest 0) as float32, exactly.
inline __m512 values16(const uint8_t* row, int64_t d, __mmask16 m) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, row + d)));
}
inline __m512 values16(const c10::BFloat16* row, int64_t d, __mmask16 m) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, row + d));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
inline __m512 values16(const float* row, int64_t d, __mmask16 m) { return _mm512_maskz_loadu_ps(m, row + d); }

// out[r][d0 .. d0 + 16 V) = sum over keys [base, base + width) of w[r][i - base] * v_i, in key order.
template <int R, int V, typename KV, typename T>
void weighted_values(const Context<KV>& c, const float* w, int64_t base, int64_t width, int64_t D, int64_t d0,
                     const Row<T>* rows) {
  __m512 acc[R][V];
  __mmask16 mask[V];
  MISTRALPY_UNROLL for (int v = 0; v < V; ++v) mask[v] = d0 + 16 * v < D ? first_lanes(D - d0 - 16 * v) : 0;
  MISTRALPY_UNROLL for (int r = 0; r < R; ++r) {
    MISTRALPY_UNROLL for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < width; ++i) {
    if (i + kAhead < width) prefetch_line(c.v + c.offsets[base + i + kAhead] + d0);
    const KV* row = c.v + c.offsets[base + i];
    __m512 x[V];
    MISTRALPY_UNROLL for (int v = 0; v < V; ++v) x[v] = values16(row, d0 + 16 * v, mask[v]);
    MISTRALPY_UNROLL for (int r = 0; r < R; ++r) {
      const __m512 wr = _mm512_set1_ps(w[r * width + i]);
      MISTRALPY_UNROLL for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(wr, x[v], acc[r][v]);
    }
  }
  float sums[R][V][16];
  MISTRALPY_UNROLL for (int r = 0; r < R; ++r) {
    MISTRALPY_UNROLL for (int v = 0; v < V; ++v) _mm512_storeu_ps(sums[r][v], acc[r][v]);
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V && mask[v]; ++v) {
      const int64_t n = std::min<int64_t>(16, D - d0 - 16 * v);
      for (int64_t e = 0; e < n; ++e) rows[r].out[d0 + 16 * v + e] = static_cast<T>(sums[r][v][e]);
    }
  }
}

template <int R, typename KV, typename T>
void weighted_rows(const Context<KV>& c, const float* w, int64_t base, int64_t width, int64_t D, const Row<T>* rows) {
  constexpr int V = R <= 4 ? 4 : 2;  // R x V accumulators in registers
  for (int64_t d0 = 0; d0 < D; d0 += 16 * V) weighted_values<R, V>(c, w, base, width, D, d0, rows);
}

#elif defined(MISTRALPY_AVX2)
inline __m256 values8(const uint8_t* row) { return vec::codes8_f32(row); }
template <typename KV>
inline __m256 values8(const KV* row) {
  return vec::load8_f32(row);
}

// out[r][d0 .. d0 + 8 V) as the avx512 level's weighted_values computes it (the same fma per lane, in key order).
template <int R, int V, typename KV, typename T>
void weighted_values8(const Context<KV>& c, const float* w, int64_t base, int64_t width, int64_t d0,
                      const Row<T>* rows) {
  __m256 acc[R][V];
  MISTRALPY_UNROLL for (int r = 0; r < R; ++r) {
    MISTRALPY_UNROLL for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < width; ++i) {
    if (i + kAhead < width) prefetch_line(c.v + c.offsets[base + i + kAhead] + d0);
    const KV* row = c.v + c.offsets[base + i] + d0;
    __m256 x[V];
    MISTRALPY_UNROLL for (int v = 0; v < V; ++v) x[v] = values8(row + 8 * v);
    MISTRALPY_UNROLL for (int r = 0; r < R; ++r) {
      const __m256 wr = _mm256_set1_ps(w[r * width + i]);
      MISTRALPY_UNROLL for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(wr, x[v], acc[r][v]);
    }
  }
  MISTRALPY_UNROLL for (int r = 0; r < R; ++r) {
    MISTRALPY_UNROLL for (int v = 0; v < V; ++v) vec::store8(rows[r].out + d0 + 8 * v, acc[r][v]);
  }
}

template <int R, typename KV, typename T>
void weighted_rows(const Context<KV>& c, const float* w, int64_t base, int64_t width, int64_t D, const Row<T>* rows) {
  if (D % 8 != 0) return weighted_scalar(c, w, base, width, D, rows, R);
  constexpr int V = R <= 2 ? 4 : R <= 4 ? 2 : 1;  // R x V sums, V values and a weight: within 16 ymm
  int64_t d0 = 0;
  for (; d0 + 8 * V <= D; d0 += 8 * V) weighted_values8<R, V>(c, w, base, width, d0, rows);
  for (; d0 < D; d0 += 8) weighted_values8<R, 1>(c, w, base, width, d0, rows);
}
#endif

#if defined(MISTRALPY_AVX512) || defined(MISTRALPY_AVX2)
template <typename KV, typename T>
void weighted_sums(const Context<KV>& c, const float* w, int64_t base, int64_t width, int64_t D, const Row<T>* rows,
                   int64_t n) {
  with_count<kMaxRows>(n, [&](auto R) { weighted_rows<R()>(c, w, base, width, D, rows); });
}
#else
template <typename KV, typename T>
void weighted_sums(const Context<KV>& c, const float* w, int64_t base, int64_t width, int64_t D, const Row<T>* rows,
                   int64_t n) {
  weighted_scalar(c, w, base, width, D, rows, n);
}
#endif

}  // namespace attn
