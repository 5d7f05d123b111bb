// x quantized per weight group to int8 for the quantized matmul (quant_matmul.cpp), as llama.cpp quantizes its
// activations: per row and group of kG values, d = max |x| / 127, q_k = round(x_k * (127 / max |x|)) (half to even),
// Q = sum q_k. The codes are stored in the weight lanes' k order (quant_common.h), four to a u32: a 4-bit lane's low
// nibbles are k0 k4 k1 k5 and its high nibbles k2 k6 k3 k7 (per 8 k); an 8-bit lane's bytes are k0 k2 k1 k3.
// Plain C++ for float32 rows (every level; the avx512 level has its own bf16 quantizer): the same bits as the
// vector quantizer, which computes the same float32 operations.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace quant {

// x quantized, per row: K / 4 u32 of four s8 codes each, in the weight lanes' order; per row and group: d, d Q, Q.
struct QuantizedX {
  std::vector<uint32_t> q;
  std::vector<float> d, dq;
  std::vector<int32_t> sum;
};

// Where code i of 16 consecutive k goes in the lanes' order (k = order[i]).
inline const int* lane_order16(int bits) {
  static constexpr int kFour[16] = {0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15};
  static constexpr int kEight[16] = {0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15};
  return bits == 4 ? kFour : kEight;
}

// Rows [begin, end) of x (float32, or bf16: converted exactly) quantized into `out`.
template <int kG, typename T>
void quantize_rows_f32(const T* x, int64_t begin, int64_t end, int64_t K, int bits, QuantizedX& out) {
  const int64_t groups = K / kG;
  const int* order = lane_order16(bits);
  auto* q = reinterpret_cast<int8_t*>(out.q.data());
  for (int64_t i = begin * groups; i < end * groups; ++i) {
    float v[kG];
    for (int k = 0; k < kG; ++k) v[k] = static_cast<float>(x[i * kG + k]);
    float amax = 0.0f;
    for (int k = 0; k < kG; ++k) amax = std::max(amax, std::fabs(v[k]));
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    int8_t codes[kG];
    int32_t sum = 0;
    for (int k = 0; k < kG; ++k) {
      const float scaled = v[k] * inv;
      codes[k] = static_cast<int8_t>(std::nearbyint(scaled));
      sum += codes[k];
    }
    for (int base = 0; base < kG; base += 16)
      for (int k = 0; k < 16; ++k) q[i * kG + base + k] = codes[base + order[k]];
    const float d = amax / 127.0f;
    out.d[i] = d;
    out.dq[i] = d * static_cast<float>(sum);
    out.sum[i] = sum;
  }
}

template <int kG, typename T>
QuantizedX quantize_x_f32(const T* x, int64_t M, int64_t K, int bits) {
  const int64_t groups = K / kG;
  QuantizedX out{std::vector<uint32_t>(M * K / 4), std::vector<float>(M * groups), std::vector<float>(M * groups),
                 std::vector<int32_t>(M * groups)};
  at::parallel_for(0, M, std::max<int64_t>(1, 256 / groups),
                   [&](int64_t begin, int64_t end) { quantize_rows_f32<kG, T>(x, begin, end, K, bits, out); });
  return out;
}

}  // namespace quant
