// Attention of query rows over one KV head's cached keys, read in place: the one arithmetic decode attention
// (paged_attention.cpp) and prefill attention (prefill_attention.cpp) share. A token's attention output, and so every
// later layer's K/V, is then the same bits however the scheduler ran it: alone or in a batch, as a decode step, in a
// prompt chunk, over a cached prefix or recomputed after preemption.
//
// Per query row, over its keys [lo, hi): scores as attention_scores.h computes them; an optional soft-cap,
// cap * tanh(score * (1 / cap)); the softmax: the maximum, exp(score - max) by one lane-independent routine, their sum
// in key order, and the weights (e * (1 / sum)) [* v_scale for int8 rows]; then out = fma(w_j, v_j, out) over the
// keys in order from 0, rounded to the output dtype at the end. Rows that share a pass over V give the keys they do
// not attend weight 0: fma(0, v, out) leaves out unchanged, bit for bit.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attention_scores.h"
#include "vec_exp.h"
#include "vec_max.h"

namespace attn {

constexpr int64_t kMaxRows = 8;  // rows whose V sums share one pass over the keys
constexpr int64_t kAhead = 16;   // keys whose rows are requested ahead of their use

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

struct Scratch {  // one per thread, reused across calls
  std::vector<float> weights;
  std::vector<int8_t> codes;
};

#if defined(MISTRALPY_AVX512)
inline __m512 tanh16(__m512 x) {  // 1 - 2 / (e^2x + 1)
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 e = exp16(_mm512_add_ps(x, x));
  return _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
}
#endif

// s[i] (i in [lo, hi)) -> exp(s[i] - max) after the soft-cap; returns their sum, taken in key order.
inline float exp_scores(float* s, int64_t lo, int64_t hi, float cap) {
#if defined(MISTRALPY_AVX512)
  if (cap > 0.0f) {
    const __m512 vcap = _mm512_set1_ps(cap), inv = _mm512_set1_ps(1.0f / cap);
    for (int64_t i = lo; i < hi; i += 16) {
      const __mmask16 m = first_lanes(hi - i);
      const __m512 x = _mm512_maskz_loadu_ps(m, s + i);
      _mm512_mask_storeu_ps(s + i, m, _mm512_mul_ps(vcap, tanh16(_mm512_mul_ps(x, inv))));
    }
  }
#else
  if (cap > 0.0f) {
    for (int64_t i = lo; i < hi; ++i) s[i] = cap * std::tanh(s[i] * (1.0f / cap));
  }
#endif
  const float mx = vec::max_f32(s + lo, hi - lo);
#if defined(MISTRALPY_AVX512) || defined(MISTRALPY_AVX2)
  exp_inplace(s + lo, hi - lo, -mx);
#else
  for (int64_t i = lo; i < hi; ++i) s[i] = std::exp(s[i] - mx);
#endif
  float sum = 0.0f;
  for (int64_t i = lo; i < hi; ++i) sum += s[i];
  return sum;
}

// Request the K rows of keys [i, i + kTile) into L1 and their V rows into L2 (they are cold: a step's weights have
// streamed through the caches since this layer last ran).
template <typename KV>
void prefetch_tile(const Context<KV>& c, int64_t i, int64_t end, int64_t D) {
  const int64_t bytes = std::is_same_v<KV, uint8_t> ? D + kv::kScaleBytes : D * static_cast<int64_t>(sizeof(KV));
  for (int64_t j = i; j < std::min(end, i + kTile); ++j) {
    const char* k = reinterpret_cast<const char*>(c.k + c.offsets[j]);
    const char* v = reinterpret_cast<const char*>(c.v + c.offsets[j]);
    for (int64_t b = 0; b < bytes; b += 64) prefetch_line(k + b), prefetch_line_l2(v + b);
  }
}

// One row's weights over keys [base, base + width): softmax weights on [lo, hi), 0 elsewhere, at w[i - base].
// `prefetch`: request the rows ahead (the first of rows that share the keys).
template <typename KV>
void row_weights(const Context<KV>& c, const Query& q, int64_t lo, int64_t hi, int64_t D, float cap, int64_t base,
                 int64_t width, float* w, bool prefetch) {
  float* s = w - base;  // s[i] for key i
  if (prefetch) prefetch_tile(c, lo, hi, D);
  for (int64_t i = lo; i < hi; i += kTile) {
    if (prefetch) prefetch_tile(c, i + kTile, hi, D);
    const float* k_scales = c.k_scales ? c.k_scales + i : nullptr;
    score_tile<KV>(c.k, c.offsets + i, std::min(kTile, hi - i), D, q, k_scales, s + i);
  }
  const float sum = exp_scores(s, lo, hi, cap);
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  std::fill(w, s + lo, 0.0f);
  for (int64_t i = lo; i < hi; ++i) s[i] = c.v_scales ? s[i] * inv * c.v_scales[i] : s[i] * inv;
  std::fill(s + hi, w + width, 0.0f);
}

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
  for (int v = 0; v < V; ++v) mask[v] = d0 + 16 * v < D ? first_lanes(D - d0 - 16 * v) : 0;
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t i = 0; i < width; ++i) {
    if (i + kAhead < width) prefetch_line(c.v + c.offsets[base + i + kAhead] + d0);
    const KV* row = c.v + c.offsets[base + i];
    __m512 x[V];
    for (int v = 0; v < V; ++v) x[v] = values16(row, d0 + 16 * v, mask[v]);
    for (int r = 0; r < R; ++r) {
      const __m512 wr = _mm512_set1_ps(w[r * width + i]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(wr, x[v], acc[r][v]);
    }
  }
  alignas(64) float tmp[16];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V && mask[v]; ++v) {
      _mm512_store_ps(tmp, acc[r][v]);
      const int64_t n = std::min<int64_t>(16, D - d0 - 16 * v);
      for (int64_t e = 0; e < n; ++e) rows[r].out[d0 + 16 * v + e] = static_cast<T>(tmp[e]);
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
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int64_t i = 0; i < width; ++i) {
    if (i + kAhead < width) prefetch_line(c.v + c.offsets[base + i + kAhead] + d0);
    const KV* row = c.v + c.offsets[base + i] + d0;
    __m256 x[V];
    for (int v = 0; v < V; ++v) x[v] = values8(row + 8 * v);
    for (int r = 0; r < R; ++r) {
      const __m256 wr = _mm256_set1_ps(w[r * width + i]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(wr, x[v], acc[r][v]);
    }
  }
  alignas(32) float tmp[8];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) {
      _mm256_store_ps(tmp, acc[r][v]);
      for (int e = 0; e < 8; ++e) rows[r].out[d0 + 8 * v + e] = static_cast<T>(tmp[e]);
    }
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
  switch (n) {
    case 1: return weighted_rows<1>(c, w, base, width, D, rows);
    case 2: return weighted_rows<2>(c, w, base, width, D, rows);
    case 3: return weighted_rows<3>(c, w, base, width, D, rows);
    case 4: return weighted_rows<4>(c, w, base, width, D, rows);
    case 5: return weighted_rows<5>(c, w, base, width, D, rows);
    case 6: return weighted_rows<6>(c, w, base, width, D, rows);
    case 7: return weighted_rows<7>(c, w, base, width, D, rows);
    default: return weighted_rows<8>(c, w, base, width, D, rows);
  }
}
#else
template <typename KV, typename T>
void weighted_sums(const Context<KV>& c, const float* w, int64_t base, int64_t width, int64_t D, const Row<T>* rows,
                   int64_t n) {
  weighted_scalar(c, w, base, width, D, rows, n);
}
#endif

// The query as the scores take it (see attention_scores.h); codes: padded_dim(D) bytes for int8 rows.
template <typename KV, typename T>
Query prepare(const T* q, int64_t D, float scale, int8_t* codes) {
  if constexpr (std::is_same_v<KV, uint8_t>) {
    return quantize_query(q, D, scale, codes);
  } else {
    static_assert(std::is_same_v<KV, T>, "bf16 and float rows take a query of their own dtype");
    return {nullptr, 0, q, scale};
  }
}

// rows[0..n) attend over the context; each row's output is independent of the others'.
template <typename KV, typename T>
void attend(const Context<KV>& c, const Row<T>* rows, int64_t n, int64_t D, float scale, float cap, Scratch& sc) {
  for (int64_t r0 = 0; r0 < n; r0 += kMaxRows) {
    const int64_t count = std::min(kMaxRows, n - r0);
    int64_t base = rows[r0].lo, end = rows[r0].hi;
    for (int64_t r = r0; r < r0 + count; ++r) base = std::min(base, rows[r].lo), end = std::max(end, rows[r].hi);
    const int64_t width = end - base;
    sc.weights.resize(count * width);
    sc.codes.resize(padded_dim(D));
    for (int64_t r = 0; r < count; ++r) {
      const Row<T>& row = rows[r0 + r];
      const Query q = prepare<KV>(row.q, D, scale, sc.codes.data());
      row_weights(c, q, row.lo, row.hi, D, cap, base, width, sc.weights.data() + r * width, r == 0);
    }
    weighted_sums(c, sc.weights.data(), base, width, D, rows + r0, count);
  }
}

}  // namespace attn
