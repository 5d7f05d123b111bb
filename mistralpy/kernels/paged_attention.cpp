// Decode attention over the paged KV cache, read in place: one query token per sequence, K/V taken from the cache
// blocks listed in the sequence's block table (no gather copy). Grouped-query heads, an optional sliding window and an
// optional soft-cap on the scores. The arithmetic is attention_rows.h's, shared with prefill attention.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "attention_rows.h"
#include "kv_cache.h"
#include "ops.h"

namespace {

// One task per sequence, or per (sequence, KV head) when there are too few sequences to keep the threads busy.
// T: the query's dtype; KV: the cache's rows (T, or uint8_t for int8 rows).
template <typename T, typename KV>
void decode(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& tables, const torch::Tensor& lens,
            torch::Tensor& out, float scale, int64_t window, float cap) {
  const int64_t num_seqs = q.size(0), num_heads = q.size(1), D = q.size(2);
  const int64_t block_size = kv.size(2), num_kv_heads = kv.size(3);
  const int64_t group = num_heads / num_kv_heads, max_blocks = tables.size(1);
  const int64_t v_plane = kv.stride(0), block_stride = kv.stride(1), slot_stride = kv.stride(2);
  const int64_t head_stride = kv.stride(3);
  const int64_t task_heads = num_seqs >= 2 * at::get_num_threads() ? num_kv_heads : 1;
  const int64_t tasks_per_seq = num_kv_heads / task_heads;
  const T* q_ptr = q.data_ptr<T>();
  const KV* kv_ptr = static_cast<const KV*>(kv.data_ptr());
  const int64_t* table_ptr = tables.data_ptr<int64_t>();
  const int64_t* len_ptr = lens.data_ptr<int64_t>();
  T* out_ptr = out.data_ptr<T>();
  constexpr bool kInt8 = std::is_same_v<KV, uint8_t>;

  at::parallel_for(0, num_seqs * tasks_per_seq, 1, [&](int64_t begin, int64_t end) {
    attn::Scratch scratch;
    std::vector<int64_t> offsets;
    std::vector<float> k_scales, v_scales;
    std::vector<attn::Row<T>> rows(group);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t seq = task / tasks_per_seq, head0 = task % tasks_per_seq * task_heads;
      const int64_t len = len_ptr[seq];
      const int64_t first = window > 0 ? std::max<int64_t>(0, len - window) : 0, span = len - first;
      offsets.resize(span);
      for (int64_t i = 0; i < span; ++i) {
        const int64_t pos = first + i;
        offsets[i] = table_ptr[seq * max_blocks + pos / block_size] * block_stride + pos % block_size * slot_stride;
      }
      for (int64_t h = head0; h < head0 + task_heads; ++h) {
        attn::Context<KV> c{kv_ptr + h * head_stride, kv_ptr + v_plane + h * head_stride, offsets.data()};
        if constexpr (kInt8) {
          k_scales.resize(span), v_scales.resize(span);
          for (int64_t i = 0; i < span; ++i) {
            k_scales[i] = kv::row_scale(c.k + offsets[i], D), v_scales[i] = kv::row_scale(c.v + offsets[i], D);
          }
          c.k_scales = k_scales.data(), c.v_scales = v_scales.data();
        }
        for (int64_t g = 0; g < group; ++g) {
          const int64_t head = h * group + g;
          rows[g] = {q_ptr + seq * q.stride(0) + head * q.stride(1), out_ptr + (seq * num_heads + head) * D, 0, span};
        }
        attn::attend(c, rows.data(), group, D, scale, cap, scratch);
      }
    }
  });
}

}  // namespace

bool attention_supports(const torch::Tensor& q, const torch::Tensor& kv) {
  const auto qt = q.scalar_type();
  if (kv::is_int8(kv)) return qt == torch::kBFloat16 || qt == torch::kFloat;
  return (qt == torch::kBFloat16 || qt == torch::kFloat) && kv.scalar_type() == qt;
}

// q: (S, Hq, D); kv: (2, blocks, block_size, Hkv, row) contiguous, rows of D values in q's dtype or int8 rows
// (kv_cache.h); tables: (S, max_blocks) int64; lens: (S,) int64.
torch::Tensor decode_attention(torch::Tensor q, torch::Tensor kv, torch::Tensor tables, torch::Tensor lens,
                               double scale, int64_t window, double softcap) {
  TORCH_CHECK(kv.dim() == 5 && kv.is_contiguous() && tables.is_contiguous() && lens.is_contiguous(),
              "inputs must be contiguous");
  TORCH_CHECK(attention_supports(q, kv), "decode_attention takes bf16 or float32 queries over a cache of their dtype "
              "or of int8 rows");
  TORCH_CHECK(q.dim() == 3 && q.stride(2) == 1 && q.size(2) == kv::head_dim(kv), "q's head_dim and the cache's");
  TORCH_CHECK(q.size(1) % kv.size(3) == 0, "query heads must be a multiple of the KV heads");
  TORCH_CHECK(tables.scalar_type() == torch::kLong && lens.scalar_type() == torch::kLong, "tables, lens: int64");
  auto out = torch::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  const float fscale = static_cast<float>(scale), cap = static_cast<float>(softcap);
  const bool bf16 = q.scalar_type() == torch::kBFloat16;
  if (kv::is_int8(kv) && bf16) {
    decode<c10::BFloat16, uint8_t>(q, kv, tables, lens, out, fscale, window, cap);
  } else if (kv::is_int8(kv)) {
    decode<float, uint8_t>(q, kv, tables, lens, out, fscale, window, cap);
  } else if (bf16) {
    decode<c10::BFloat16, c10::BFloat16>(q, kv, tables, lens, out, fscale, window, cap);
  } else {
    decode<float, float>(q, kv, tables, lens, out, fscale, window, cap);
  }
  return out;
}
