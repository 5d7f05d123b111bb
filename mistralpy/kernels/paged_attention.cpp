// Decode attention over the paged KV cache, read in place: one query token per sequence, K/V taken from the cache
// blocks listed in the sequence's block table (no gather copy). Softmax in float32; grouped-query heads,
// an optional sliding window and an optional soft-cap on the scores.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cmath>
#include <limits>
#include <vector>

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

// One task per (sequence, KV head): the `group` query heads that share a KV head read each K/V row once.
template <typename T>
void decode_attention_impl(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& tables,
                           const torch::Tensor& lens, torch::Tensor& out, double scale, int64_t window,
                           double softcap) {
  const int64_t num_seqs = q.size(0), num_heads = q.size(1), head_dim = q.size(2);
  const int64_t block_size = kv.size(2), num_kv_heads = kv.size(3);
  const int64_t group = num_heads / num_kv_heads, max_blocks = tables.size(1);
  const int64_t kv_plane = kv.stride(0), block_stride = kv.stride(1), slot_stride = kv.stride(2);
  const T* q_ptr = q.data_ptr<T>();
  const T* kv_ptr = kv.data_ptr<T>();
  const int64_t* table_ptr = tables.data_ptr<int64_t>();
  const int64_t* len_ptr = lens.data_ptr<int64_t>();
  T* out_ptr = out.data_ptr<T>();
  const float fscale = static_cast<float>(scale), cap = static_cast<float>(softcap);

  at::parallel_for(0, num_seqs * num_kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qf(group * head_dim), acc(group * head_dim), row(head_dim), scores;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t seq = task / num_kv_heads, kv_head = task % num_kv_heads;
      const int64_t len = len_ptr[seq];
      const int64_t first = window > 0 ? std::max<int64_t>(0, len - window) : 0, span = len - first;
      for (int64_t g = 0; g < group; ++g) {
        const T* qh = q_ptr + seq * q.stride(0) + (kv_head * group + g) * q.stride(1);
        to_float(qh, qf.data() + g * head_dim, head_dim);
        for (int64_t d = 0; d < head_dim; ++d) qf[g * head_dim + d] *= fscale;
      }
      scores.assign(group * span, 0.0f);
      auto slot = [&](int64_t pos) {
        const int64_t block = table_ptr[seq * max_blocks + pos / block_size];
        return block * block_stride + (pos % block_size) * slot_stride + kv_head * head_dim;
      };
      // K/V rows are cold (the step's weights have streamed through the caches since this layer last ran) and
      // strided by the KV heads: fetch them a few positions ahead, for the K pass and then for the V pass
      auto prefetch = [&](int64_t plane, int64_t i) {
        if (i < 0 || i >= span) return;
        const char* p = reinterpret_cast<const char*>(kv_ptr + plane + slot(first + i));
        for (int64_t b = 0; b < head_dim * static_cast<int64_t>(sizeof(T)); b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
      };
      for (int64_t i = 0; i < kAhead; ++i) prefetch(0, i);
      for (int64_t i = 0; i < span; ++i) {
        prefetch(0, i + kAhead);
        prefetch(kv_plane, i + kAhead - span);  // the V pass's first rows, while the K pass ends
        to_float(kv_ptr + slot(first + i), row.data(), head_dim);
        for (int64_t g = 0; g < group; ++g) {
          const float* qg = qf.data() + g * head_dim;
          float s = 0.0f;
#pragma omp simd reduction(+ : s)
          for (int64_t d = 0; d < head_dim; ++d) s += qg[d] * row[d];
          scores[g * span + i] = cap > 0.0f ? cap * std::tanh(s / cap) : s;
        }
      }
      for (int64_t g = 0; g < group; ++g) {  // softmax over the window, per query head
        float* sg = scores.data() + g * span;
        float mx = -std::numeric_limits<float>::infinity(), sum = 0.0f;
        for (int64_t i = 0; i < span; ++i) mx = std::max(mx, sg[i]);
        for (int64_t i = 0; i < span; ++i) sum += (sg[i] = std::exp(sg[i] - mx));
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        for (int64_t i = 0; i < span; ++i) sg[i] *= inv;
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t i = 0; i < span; ++i) {
        prefetch(kv_plane, i + kAhead);
        to_float(kv_ptr + kv_plane + slot(first + i), row.data(), head_dim);
        for (int64_t g = 0; g < group; ++g) {
          const float p = scores[g * span + i];
          float* ag = acc.data() + g * head_dim;
          for (int64_t d = 0; d < head_dim; ++d) ag[d] += p * row[d];
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        T* oh = out_ptr + (seq * num_heads + kv_head * group + g) * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) oh[d] = static_cast<T>(acc[g * head_dim + d]);
      }
    }
  });
}

}  // namespace

// q: (S, Hq, D); kv: (2, blocks, block_size, Hkv, D) contiguous; tables: (S, max_blocks) int64; lens: (S,) int64.
torch::Tensor decode_attention(torch::Tensor q, torch::Tensor kv, torch::Tensor tables, torch::Tensor lens,
                               double scale, int64_t window, double softcap) {
  TORCH_CHECK(kv.is_contiguous() && tables.is_contiguous() && lens.is_contiguous(), "inputs must be contiguous");
  TORCH_CHECK(q.scalar_type() == kv.scalar_type(), "q and the KV cache must share a dtype");
  TORCH_CHECK(q.stride(2) == 1, "q's last dimension must be contiguous");
  auto out = torch::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  if (q.scalar_type() == torch::kFloat) {
    decode_attention_impl<float>(q, kv, tables, lens, out, scale, window, softcap);
  } else if (q.scalar_type() == torch::kBFloat16) {
    decode_attention_impl<c10::BFloat16>(q, kv, tables, lens, out, scale, window, softcap);
  } else if (q.scalar_type() == torch::kHalf) {
    decode_attention_impl<c10::Half>(q, kv, tables, lens, out, scale, window, softcap);
  } else {
    TORCH_CHECK(false, "unsupported dtype for decode_attention");
  }
  return out;
}
