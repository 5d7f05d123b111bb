// Attention of query rows over one KV head's cached keys, read in place: the one arithmetic decode attention
// (paged_attention.cpp) and prefill attention (prefill_attention.cpp) share. A token's attention output, and so every
// later layer's K/V, is then the same bits however the scheduler ran it: alone or in a batch, as a decode step, in a
// prompt chunk, over a cached prefix or recomputed after preemption.
//
// Per query row, over its keys [lo, hi): scores as attention_scores.h computes them (attention_key_tiles.h shares
// the work among rows, not the arithmetic); an optional soft-cap, cap * tanh(score * (1 / cap)); the softmax: the
// maximum, exp(score - max) by one lane-independent routine, their sum in key order, and the weights
// (e * (1 / sum)) [* v_scale for int8 rows]; then attention_values.h's out = fma(w_j, v_j, out) over the keys in
// order from 0, rounded to the output dtype at the end. Rows that share a pass over V give the keys they do
// not attend weight 0: fma(0, v, out) leaves out unchanged, bit for bit.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "attention_key_tiles.h"
#include "attention_scores.h"
#include "attention_values.h"
#include "vec_exp.h"
#include "vec_max.h"

namespace attn {

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

// s[i] (i in [lo, hi)) -> exp(s[i] - max) after the soft-cap.
inline void exp_scores(float* s, int64_t lo, int64_t hi, float cap) {
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
}

// sums[r] = the sum of row r's w[r * width + i] over i in [0, width), in key order. The R rows' running sums advance
// together, a key at a time: each row's sum is still one chain of dependent adds, but the R chains overlap instead of
// taking turns (a row at a time, the adds' latency was most of the softmax's time). A row's keys outside its range
// hold 0: adding 0 to a sum of non-negative terms changes no bit.
template <int R>
void row_sums(const float* w, int64_t width, float* sums) {
  float acc[R];
  MISTRALPY_UNROLL for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  for (int64_t i = 0; i < width; ++i) {
    MISTRALPY_UNROLL for (int r = 0; r < R; ++r) acc[r] += w[r * width + i];
  }
  MISTRALPY_UNROLL for (int r = 0; r < R; ++r) sums[r] = acc[r];
}

inline void row_sums(const float* w, int64_t n, int64_t width, float* sums) {
  with_count<kMaxRows>(n, [&](auto R) { row_sums<R()>(w, width, sums); });
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

// The scores of rows r < count over keys [base, base + width), at w[r * width + i - base]: at least each row's keys
// [lo, hi). Int8 rows where the build has key tiles: every row's score of a tile's keys at once; else row by row.
// The first row's pass requests the K and V rows ahead.
template <typename KV, typename T>
void scores(const Context<KV>& c, const Query* qs, const Row<T>* rows, int64_t count, int64_t D, int64_t base,
            int64_t width, float* w) {
#if defined(MISTRALPY_KEY_TILES)
  if constexpr (std::is_same_v<KV, uint8_t>) {
    const int64_t end = base + width;
    prefetch_tile(c, base, end, D);
    for (int64_t i = base; i < end; i += kTile) {
      prefetch_tile(c, i + kTile, end, D);
      score_key_tile(c.k, c.offsets + i, std::min(kTile, end - i), D, qs, count, c.k_scales + i, w + i - base, width);
    }
    return;
  }
#endif
  for (int64_t r = 0; r < count; ++r) {
    const int64_t lo = rows[r].lo, hi = rows[r].hi;
    float* s = w + r * width - base;  // s[i] for key i
    if (r == 0) prefetch_tile(c, lo, hi, D);
    for (int64_t i = lo; i < hi; i += kTile) {
      if (r == 0) prefetch_tile(c, i + kTile, hi, D);
      const float* k_scales = c.k_scales ? c.k_scales + i : nullptr;
      score_tile<KV>(c.k, c.offsets + i, std::min(kTile, hi - i), D, qs[r], k_scales, s + i);
    }
  }
}

// One row's scores over keys [base, base + width) at w[i - base] -> exp(score - max) on [lo, hi), 0 elsewhere.
inline void row_exps(int64_t lo, int64_t hi, float cap, int64_t base, int64_t width, float* w) {
  float* s = w - base;  // s[i] for key i
  exp_scores(s, lo, hi, cap);
  std::fill(w, s + lo, 0.0f);
  std::fill(s + hi, w + width, 0.0f);
}

// Those exps, whose sum is `sum`, -> the softmax weights (e * (1 / sum)) [* v_scale for int8 rows] on [lo, hi).
template <typename KV>
void softmax_weights(const Context<KV>& c, int64_t lo, int64_t hi, float sum, int64_t base, float* w) {
  float* s = w - base;
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  for (int64_t i = lo; i < hi; ++i) s[i] = c.v_scales ? s[i] * inv * c.v_scales[i] : s[i] * inv;
}


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
  Query qs[kMaxRows];
  for (int64_t r0 = 0; r0 < n; r0 += kMaxRows) {
    const int64_t count = std::min(kMaxRows, n - r0);
    int64_t base = rows[r0].lo, end = rows[r0].hi;
    for (int64_t r = r0; r < r0 + count; ++r) base = std::min(base, rows[r].lo), end = std::max(end, rows[r].hi);
    const int64_t width = end - base;
    sc.weights.resize(count * width);
    sc.codes.resize(count * padded_dim(D));
    for (int64_t r = 0; r < count; ++r) {
      qs[r] = prepare<KV>(rows[r0 + r].q, D, scale, sc.codes.data() + r * padded_dim(D));
    }
    float* w = sc.weights.data();
    scores(c, qs, rows + r0, count, D, base, width, w);
    for (int64_t r = 0; r < count; ++r) row_exps(rows[r0 + r].lo, rows[r0 + r].hi, cap, base, width, w + r * width);
    float sums[kMaxRows];
    row_sums(w, count, width, sums);
    for (int64_t r = 0; r < count; ++r) {
      softmax_weights(c, rows[r0 + r].lo, rows[r0 + r].hi, sums[r], base, w + r * width);
    }
    weighted_sums(c, w, base, width, D, rows + r0, count);
  }
}

}  // namespace attn
