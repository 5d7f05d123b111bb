// Prefill attention over the paged KV cache: the new tokens of one sequence (a prompt, or a chunk of one whose earlier
// tokens are cached) attend causally to its K/V, read in place from the cache blocks in its block table. A task takes
// up to 8 query rows (positions x the query heads sharing a KV head) of one KV head, the last positions first. The
// arithmetic is attention_rows.h's, shared with decode attention: a token's output is the same bits either way.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "attention_rows.h"
#include "kv_cache.h"
#include "ops.h"

namespace {

template <typename T, typename KV>
void prefill(const torch::Tensor& q, const torch::Tensor& kv, const torch::Tensor& table, int64_t ctx,
             torch::Tensor& out, float scale, int64_t window, float cap) {
  const int64_t n = q.size(0), heads = q.size(1), D = q.size(2), block_size = kv.size(2), kv_heads = kv.size(3);
  const int64_t group = heads / kv_heads, head_stride = kv.stride(3), v_plane = kv.stride(0);
  // keys [first, ctx): the ones some query row sees
  const int64_t first = window > 0 ? std::max<int64_t>(0, ctx - n - window + 1) : 0, keys = ctx - first;
  const int64_t* blocks = table.data_ptr<int64_t>();
  std::vector<int64_t> offsets(keys);
  for (int64_t i = 0; i < keys; ++i) {
    const int64_t pos = first + i;
    offsets[i] = blocks[pos / block_size] * kv.stride(1) + pos % block_size * kv.stride(2);
  }
  const KV* kv_ptr = static_cast<const KV*>(kv.data_ptr());
  std::vector<attn::Context<KV>> contexts(kv_heads);
  std::vector<float> scales;  // int8 rows: per KV head, the K scales of its keys, then the V scales
  if constexpr (std::is_same_v<KV, uint8_t>) scales.resize(kv_heads * 2 * keys);
  for (int64_t h = 0; h < kv_heads; ++h) {
    attn::Context<KV>& c = contexts[h];
    c = {kv_ptr + h * head_stride, kv_ptr + v_plane + h * head_stride, offsets.data()};
    if constexpr (std::is_same_v<KV, uint8_t>) {
      float* ks = scales.data() + h * 2 * keys;
      for (int64_t i = 0; i < keys; ++i) {
        ks[i] = kv::row_scale(c.k + offsets[i], D), ks[keys + i] = kv::row_scale(c.v + offsets[i], D);
      }
      c.k_scales = ks, c.v_scales = ks + keys;
    }
  }
  const T* q_ptr = q.data_ptr<T>();
  T* out_ptr = out.data_ptr<T>();
  const int64_t rows_per_head = n * group, row_tasks = (rows_per_head + attn::kMaxRows - 1) / attn::kMaxRows;
#pragma omp parallel num_threads(at::get_num_threads())
  {
    attn::Scratch scratch;
    attn::Row<T> rows[attn::kMaxRows];
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < kv_heads * row_tasks; ++task) {  // the longest rows (the last positions) first
      const int64_t h = task % kv_heads, row0 = (row_tasks - 1 - task / kv_heads) * attn::kMaxRows;
      const int64_t count = std::min(attn::kMaxRows, rows_per_head - row0);
      for (int64_t r = 0; r < count; ++r) {
        const int64_t token = (row0 + r) / group, head = h * group + (row0 + r) % group;
        const int64_t pos = ctx - n + token;
        const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) - first : 0;
        rows[r] = {q_ptr + token * q.stride(0) + head * q.stride(1), out_ptr + (token * heads + head) * D, lo,
                   pos + 1 - first};
      }
      attn::attend(contexts[h], rows, count, D, scale, cap, scratch);
    }
  }
}

}  // namespace

// q: (n, Hq, D), the sequence's last n positions; kv: (2, blocks, block_size, Hkv, row) contiguous, rows of D values
// in q's dtype or int8 rows (kv_cache.h); table: (blocks of the sequence,) int64; context_len: cached + new positions.
torch::Tensor prefill_attention(torch::Tensor q, torch::Tensor kv, torch::Tensor table, int64_t context_len,
                                double scale, int64_t window, double softcap) {
  TORCH_CHECK(attention_supports(q, kv), "prefill_attention takes bf16 or float32 queries over a cache of their "
              "dtype or of int8 rows");
  TORCH_CHECK(kv.is_contiguous() && table.is_contiguous() && table.scalar_type() == torch::kLong, "kv, table layout");
  TORCH_CHECK(q.dim() == 3 && q.stride(2) == 1 && kv.dim() == 5 && q.size(2) == kv::head_dim(kv), "q, kv shapes");
  TORCH_CHECK(q.size(1) % kv.size(3) == 0, "query heads must be a multiple of the KV heads");
  const int64_t n = q.size(0);
  TORCH_CHECK(n >= 1 && n <= context_len && table.size(0) * kv.size(2) >= context_len, "context_len, table");
  auto out = torch::empty({n, q.size(1), q.size(2)}, q.options());
  const float fscale = static_cast<float>(scale), cap = static_cast<float>(softcap);
  const bool bf16 = q.scalar_type() == torch::kBFloat16;
  if (kv::is_int8(kv) && bf16) {
    prefill<c10::BFloat16, uint8_t>(q, kv, table, context_len, out, fscale, window, cap);
  } else if (kv::is_int8(kv)) {
    prefill<float, uint8_t>(q, kv, table, context_len, out, fscale, window, cap);
  } else if (bf16) {
    prefill<c10::BFloat16, c10::BFloat16>(q, kv, table, context_len, out, fscale, window, cap);
  } else {
    prefill<float, float>(q, kv, table, context_len, out, fscale, window, cap);
  }
  return out;
}
