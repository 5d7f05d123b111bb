// Structured output's token masks applied in place: the disallowed tokens of a step's constrained rows set to -inf,
// read straight from llguidance's int32 bitmasks (bit t % 32 of word t / 32 allows token t), where the torch path
// expands every bit into a bool first.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>

#include "ops.h"

namespace {

constexpr int64_t kGrain = 4;  // rows per task: a row is ~10 us of stores

void mask_row(float* logits, const int32_t* words, int64_t num_words, int64_t vocab) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t covered = std::min(vocab, num_words * 32);
  for (int64_t w = 0; w * 32 < covered; ++w) {
    const uint32_t bits = static_cast<uint32_t>(words[w]);
    const int64_t base = w * 32, len = std::min<int64_t>(32, covered - base);
    if (bits == 0xFFFFFFFFu) continue;  // the usual word of a free row, the rare one of a grammar's
    if (bits == 0) {
      std::fill(logits + base, logits + base + len, kNegInf);
      continue;
    }
    for (int64_t b = 0; b < len; ++b) {
      if (!((bits >> b) & 1u)) logits[base + b] = kNegInf;
    }
  }
  std::fill(logits + covered, logits + vocab, kNegInf);  // tokens past the mask's width are never allowed
}

}  // namespace

// logits: (R, V) float32, rows with a stride; bitmask: (M, W) int32; rows: (M,) int64, the logits row of each mask.
void apply_token_bitmask(torch::Tensor logits, torch::Tensor bitmask, torch::Tensor rows) {
  TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == torch::kFloat32 && logits.stride(1) == 1,
              "apply_token_bitmask: logits must be (rows, vocab) float32 with contiguous rows");
  TORCH_CHECK(bitmask.dim() == 2 && bitmask.scalar_type() == torch::kInt32 && bitmask.is_contiguous(),
              "apply_token_bitmask: bitmask must be a contiguous (masks, words) int32 tensor");
  TORCH_CHECK(rows.dim() == 1 && rows.scalar_type() == torch::kInt64 && rows.size(0) == bitmask.size(0),
              "apply_token_bitmask: rows must be int64, one per mask");
  rows = rows.contiguous();
  const int64_t* row_ids = rows.data_ptr<int64_t>();
  for (int64_t i = 0; i < rows.size(0); ++i) {
    TORCH_CHECK(0 <= row_ids[i] && row_ids[i] < logits.size(0), "apply_token_bitmask: row ", row_ids[i],
                " is outside the logits' ", logits.size(0), " rows");
  }
  float* lp = logits.data_ptr<float>();
  const int32_t* bp = bitmask.data_ptr<int32_t>();
  const int64_t words = bitmask.size(1), vocab = logits.size(1), stride = logits.stride(0);
  at::parallel_for(0, rows.size(0), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) mask_row(lp + row_ids[i] * stride, bp + i * words, words, vocab);
  });
}
