// Decode attention over the paged KV cache, read in place: one query token per sequence, K/V taken from the cache
// blocks listed in the sequence's block table (no gather copy). Softmax in float32; grouped-query heads,
// an optional sliding window and an optional soft-cap on the scores. The cache holds rows in the query's dtype or
// int8 rows (kv_cache.h), whose scale multiplies a row's scores and weights.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "decode_tiles.h"
#include "isa.h"
#include "kv_cache.h"
#include "ops.h"
#ifdef __AVX512F__
#include "vec_exp.h"
#endif

namespace {

constexpr int64_t kAhead = 8;  // K/V rows requested ahead of their use

// Rows of K/V to float32. bf16 is the top half of a float32: shifting the raw bits lets the compiler vectorise it.
template <typename T>
inline void to_float(const T* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

template <>
inline void to_float<c10::BFloat16>(const c10::BFloat16* src, float* dst, int64_t n) {
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(src);
  uint32_t* out = reinterpret_cast<uint32_t*>(dst);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<uint32_t>(bits[i]) << 16;
}

// Scores of the `group` query heads against one K row (scores[g * stride]), and the V row added into their
// accumulators with weights p[g * stride]. q and the accumulators are float32, group x D.
template <typename T>
inline void score_row(const T* k, const float* q, int64_t group, int64_t D, float* row, float* scores, int64_t stride) {
  to_float(k, row, D);
  for (int64_t g = 0; g < group; ++g) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int64_t d = 0; d < D; ++d) s += q[g * D + d] * row[d];
    scores[g * stride] = s;
  }
}

template <typename T>
inline void add_row(const T* v, const float* p, int64_t stride, int64_t group, int64_t D, float* row, float* acc) {
  to_float(v, row, D);
  for (int64_t g = 0; g < group; ++g) {
    const float w = p[g * stride];
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) acc[g * D + d] += w * row[d];
  }
}

#ifdef __AVX512F__
inline __m512 bf16x16(const c10::BFloat16* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

// bf16 rows with D a multiple of 16: 16 lanes at a time, no conversion buffer
template <>
__attribute__((always_inline)) inline void score_row<c10::BFloat16>(const c10::BFloat16* k, const float* q, int64_t group, int64_t D, float* row,
                                     float* scores, int64_t stride) {
  if (D % 16 != 0) {
    to_float(k, row, D);
    return score_row<float>(row, q, group, D, row, scores, stride);
  }
  for (int64_t g = 0; g < group; ++g) {
    __m512 s = _mm512_setzero_ps();
    for (int64_t d = 0; d < D; d += 16) s = _mm512_fmadd_ps(_mm512_loadu_ps(q + g * D + d), bf16x16(k + d), s);
    scores[g * stride] = _mm512_reduce_add_ps(s);
  }
}

template <>
__attribute__((always_inline)) inline void add_row<c10::BFloat16>(const c10::BFloat16* v, const float* p, int64_t stride, int64_t group, int64_t D,
                                   float* row, float* acc) {
  if (D % 16 != 0) {
    to_float(v, row, D);
    return add_row<float>(row, p, stride, group, D, row, acc);
  }
  for (int64_t d = 0; d < D; d += 16) {
    const __m512 x = bf16x16(v + d);
    for (int64_t g = 0; g < group; ++g) {
      float* a = acc + g * D + d;
      _mm512_storeu_ps(a, _mm512_fmadd_ps(_mm512_set1_ps(p[g * stride]), x, _mm512_loadu_ps(a)));
    }
  }
}
#endif

// int8 rows: the codes are exact in float32; the row's scale multiplies its scores and its weights
#ifdef __AVX512F__
inline __m512 int8x16(const uint8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
#endif

template <>
inline void score_row<uint8_t>(const uint8_t* k, const float* q, int64_t group, int64_t D, float* row, float* scores,
                               int64_t stride) {
  const float scale = kv::row_scale(k, D);
#ifdef __AVX512F__
  if (D % 16 == 0) {
    for (int64_t g = 0; g < group; ++g) {
      __m512 s = _mm512_setzero_ps();
      for (int64_t d = 0; d < D; d += 16) s = _mm512_fmadd_ps(_mm512_loadu_ps(q + g * D + d), int8x16(k + d), s);
      scores[g * stride] = _mm512_reduce_add_ps(s) * scale;
    }
    return;
  }
#endif
  for (int64_t d = 0; d < D; ++d) row[d] = static_cast<int8_t>(k[d]);
  score_row<float>(row, q, group, D, row, scores, stride);
  for (int64_t g = 0; g < group; ++g) scores[g * stride] *= scale;
}

template <>
inline void add_row<uint8_t>(const uint8_t* v, const float* p, int64_t stride, int64_t group, int64_t D, float* row,
                             float* acc) {
  const float scale = kv::row_scale(v, D);
#ifdef __AVX512F__
  if (D % 16 == 0) {
    for (int64_t d = 0; d < D; d += 16) {
      const __m512 x = int8x16(v + d);
      for (int64_t g = 0; g < group; ++g) {
        float* a = acc + g * D + d;
        _mm512_storeu_ps(a, _mm512_fmadd_ps(_mm512_set1_ps(p[g * stride] * scale), x, _mm512_loadu_ps(a)));
      }
    }
    return;
  }
#endif
  for (int64_t d = 0; d < D; ++d) row[d] = static_cast<int8_t>(v[d]) * scale;
  add_row<float>(row, p, stride, group, D, row, acc);
}

#ifdef MISTRALPY_AVX512_BF16
constexpr bool kTiles = true;
using decode_tiles::score_tiles;
using decode_tiles::value_tiles;
#else
constexpr bool kTiles = false;
template <typename... A>
void score_tiles(A&&...) {}
template <typename... A>
void value_tiles(A&&...) {}
#endif

// One task per sequence, or per (sequence, KV head) when there are too few sequences to keep the threads busy. A task
// reads each position's K/V rows for its KV heads once, for the `group` query heads that share each of them; a task
// over all heads reads whole cache slots, contiguous in memory. T: the query's dtype; KV: the cache's rows (T, or
// uint8_t for int8 rows).
template <typename T, typename KV>
void decode_attention_impl(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& tables,
                           const torch::Tensor& lens, torch::Tensor& out, double scale, int64_t window,
                           double softcap) {
  const int64_t num_seqs = q.size(0), num_heads = q.size(1), head_dim = q.size(2);
  const int64_t block_size = kv.size(2), num_kv_heads = kv.size(3);
  const int64_t group = num_heads / num_kv_heads, max_blocks = tables.size(1);
  const int64_t kv_plane = kv.stride(0), block_stride = kv.stride(1), slot_stride = kv.stride(2);
  const int64_t head_stride = kv.stride(3);
  const int64_t task_heads = num_seqs >= 2 * at::get_num_threads() ? num_kv_heads : 1;
  const int64_t tasks_per_seq = num_kv_heads / task_heads, rows = task_heads * group;  // query heads of a task
  const T* q_ptr = q.data_ptr<T>();
  const KV* kv_ptr = static_cast<const KV*>(kv.data_ptr());
  const int64_t* table_ptr = tables.data_ptr<int64_t>();
  const int64_t* len_ptr = lens.data_ptr<int64_t>();
  T* out_ptr = out.data_ptr<T>();
  const float fscale = static_cast<float>(scale), cap = static_cast<float>(softcap);
  const int64_t row_bytes = task_heads * head_stride * static_cast<int64_t>(sizeof(KV));
  constexpr bool kBf16 = std::is_same_v<T, c10::BFloat16> && std::is_same_v<KV, c10::BFloat16>;
  constexpr bool kInt8 = std::is_same_v<KV, uint8_t>;
  const bool tiled_scores = kTiles && (kBf16 || kInt8) && (head_dim == 64 || head_dim == 128);
  const bool tiled_values = kTiles && (kBf16 || kInt8) && head_dim % 64 == 0;
  const bool float_q = !(tiled_scores && kBf16);  // the bf16 tiles take q as it is

  at::parallel_for(0, num_seqs * tasks_per_seq, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qf(rows * head_dim), acc(rows * head_dim), row(head_dim), scores;
    std::vector<int64_t> offsets;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t seq = task / tasks_per_seq, head0 = task % tasks_per_seq * task_heads;
      const int64_t len = len_ptr[seq];
      const int64_t first = window > 0 ? std::max<int64_t>(0, len - window) : 0, span = len - first;
      for (int64_t r = 0; r < rows && float_q; ++r) {
        const T* qh = q_ptr + seq * q.stride(0) + (head0 * group + r) * q.stride(1);
        to_float(qh, qf.data() + r * head_dim, head_dim);
        for (int64_t d = 0; d < head_dim; ++d) qf[r * head_dim + d] *= fscale;
      }
      scores.assign(rows * span, 0.0f);
      // each position's offset (of the task's first KV head), one table lookup per block
      offsets.resize(span);
      for (int64_t i = 0; i < span;) {
        const int64_t pos = first + i, within = pos % block_size;
        const int64_t base = table_ptr[seq * max_blocks + pos / block_size] * block_stride + head0 * head_stride;
        for (int64_t j = within; j < block_size && i < span; ++j, ++i) offsets[i] = base + j * slot_stride;
      }
      // K/V rows are cold (the step's weights have streamed through the caches since this layer last ran): fetch
      // them a few positions ahead, for the K pass and then for the V pass
      auto prefetch = [&](int64_t plane, int64_t i, bool into_l2 = false) {
        if (i < 0 || i >= span) return;
        const char* p = reinterpret_cast<const char*>(kv_ptr + plane + offsets[i]);
        for (int64_t b = 0; b < row_bytes; b += 64) into_l2 ? prefetch_line_l2(p + b) : prefetch_line(p + b);
      };
      const T* q_task = q_ptr + seq * q.stride(0) + head0 * group * q.stride(1);
      if (tiled_scores) {
        score_tiles(kv_ptr, offsets.data(), span, q_task, q.stride(1), qf.data(), task_heads, group, head_dim,
                    head_stride, fscale, scores.data(), prefetch, kv_plane);
      } else {
        for (int64_t i = 0; i < kAhead; ++i) prefetch(0, i);
        for (int64_t i = 0; i < span; ++i) {
          prefetch(0, i + kAhead);
          prefetch(kv_plane, i + kAhead - span);  // the V pass's first rows, while the K pass ends
          for (int64_t h = 0; h < task_heads; ++h) {
            score_row(kv_ptr + offsets[i] + h * head_stride, qf.data() + h * group * head_dim, group, head_dim,
                      row.data(), scores.data() + h * group * span + i, span);
          }
        }
      }
      if (cap > 0.0f) {
        for (float& s : scores) s = cap * std::tanh(s / cap);
      }
      for (int64_t r = 0; r < rows; ++r) {  // softmax over the window, per query head
        float* sr = scores.data() + r * span;
        float mx = -std::numeric_limits<float>::infinity(), sum = 0.0f;
        for (int64_t i = 0; i < span; ++i) mx = std::max(mx, sr[i]);
#ifdef __AVX512F__
        exp_inplace(sr, span, -mx);
#else
        for (int64_t i = 0; i < span; ++i) sr[i] = std::exp(sr[i] - mx);
#endif
        for (int64_t i = 0; i < span; ++i) sum += sr[i];
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        for (int64_t i = 0; i < span; ++i) sr[i] *= inv;
      }
      if (tiled_values) {
        value_tiles(kv_ptr + kv_plane, offsets.data(), span, scores.data(), task_heads, group, head_dim, head_stride,
                    acc.data());
      } else {
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t i = 0; i < span; ++i) {
          prefetch(kv_plane, i + kAhead);
          for (int64_t h = 0; h < task_heads; ++h) {
            add_row(kv_ptr + kv_plane + offsets[i] + h * head_stride, scores.data() + h * group * span + i, span, group,
                    head_dim, row.data(), acc.data() + h * group * head_dim);
          }
        }
      }
      T* o = out_ptr + (seq * num_heads + head0 * group) * head_dim;
      for (int64_t e = 0; e < rows * head_dim; ++e) o[e] = static_cast<T>(acc[e]);
    }
  });
}

}  // namespace

namespace {

template <typename T>
void decode_attention_rows(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& tables,
                           const torch::Tensor& lens, torch::Tensor& out, double scale, int64_t window,
                           double softcap) {
  if (kv::is_int8(kv)) {
    decode_attention_impl<T, uint8_t>(q, kv, tables, lens, out, scale, window, softcap);
  } else {
    decode_attention_impl<T, T>(q, kv, tables, lens, out, scale, window, softcap);
  }
}

}  // namespace

// q: (S, Hq, D); kv: (2, blocks, block_size, Hkv, row) contiguous, rows of D values in q's dtype or int8 rows
// (kv_cache.h); tables: (S, max_blocks) int64; lens: (S,) int64.
torch::Tensor decode_attention(torch::Tensor q, torch::Tensor kv, torch::Tensor tables, torch::Tensor lens,
                               double scale, int64_t window, double softcap) {
  TORCH_CHECK(kv.dim() == 5 && kv.is_contiguous() && tables.is_contiguous() && lens.is_contiguous(),
              "inputs must be contiguous");
  TORCH_CHECK(kv::is_int8(kv) || q.scalar_type() == kv.scalar_type(), "q and the KV cache must share a dtype");
  TORCH_CHECK(q.dim() == 3 && q.stride(2) == 1 && q.size(2) == kv::head_dim(kv), "q's head_dim and the cache's");
  TORCH_CHECK(q.size(1) % kv.size(3) == 0, "query heads must be a multiple of the KV heads");
  auto out = torch::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  if (q.scalar_type() == torch::kFloat) {
    decode_attention_rows<float>(q, kv, tables, lens, out, scale, window, softcap);
  } else if (q.scalar_type() == torch::kBFloat16) {
    decode_attention_rows<c10::BFloat16>(q, kv, tables, lens, out, scale, window, softcap);
  } else if (q.scalar_type() == torch::kHalf) {
    decode_attention_rows<c10::Half>(q, kv, tables, lens, out, scale, window, softcap);
  } else {
    TORCH_CHECK(false, "unsupported dtype for decode_attention");
  }
  return out;
}
