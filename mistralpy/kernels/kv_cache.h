// The KV cache's row formats (layers/kv_cache.py is the torch side). A layer's cache is (2, blocks, block_size, Hkv,
// row): the K plane, then the V plane; a row is one token's K or V for one KV head. In the model's dtype a row is its
// D values. In an int8 cache (a uint8 tensor) a row is D int8 codes followed by the row's float32 scale:
// x[d] ~ scale * code[d], with scale = max|x| / 127 and code = round-half-even(x * (1 / scale)).
#pragma once
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "vec_max.h"

namespace kv {

constexpr int64_t kScaleBytes = sizeof(float);

inline bool is_int8(const torch::Tensor& cache) { return cache.scalar_type() == torch::kUInt8; }

inline int64_t head_dim(const torch::Tensor& cache) {
  return is_int8(cache) ? cache.size(-1) - kScaleBytes : cache.size(-1);
}

inline float row_scale(const uint8_t* row, int64_t D) {
  float scale;
  std::memcpy(&scale, row + D, sizeof scale);
  return scale;
}

template <typename T>
inline void quantize_row(const T* x, int64_t D, uint8_t* row) {
  const float scale = vec::max_abs_f32(x, D) / 127.0f, inv = scale > 0.0f ? 1.0f / scale : 0.0f;
  for (int64_t d = 0; d < D; ++d) {
    const float code = std::nearbyint(std::clamp(static_cast<float>(x[d]) * inv, -127.0f, 127.0f));
    row[d] = static_cast<uint8_t>(static_cast<int8_t>(code));
  }
  std::memcpy(row + D, &scale, sizeof scale);
}

}  // namespace kv
