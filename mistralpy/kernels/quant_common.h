// What the quantized-weight kernels share (quant_matmul.cpp, quant_dequantize.cpp): the layout of the codes, the
// argument checks, and dispatch over the per-group parameters' dtype.
//
// Weights W[n, i] = a[n, g] * (q[n, i] + c) + b[n, g] for groups g of 32 weights along a row.
// Codes: 4 bits: (N, K / 2) bytes, 16 per group, groups packed four at a time: in 64 bytes read as 32 u16 lanes, lane i
// holds weight i of each group in bits 0-3, 4-7, 8-11 and 12-15. Two groups left over share 32 bytes (byte j: weight
// j low, 32 + j high); one left over takes 16 (byte j: weights j and 16 + j).
// 8 bits: (N, K) bytes, weight i in byte i.
// a and b: (N, K / 32), float32 or float16 (b may be absent).
#pragma once
#include <torch/extension.h>

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#define MISTRALPY_AVX512_BF16 1
#endif

namespace quant {

constexpr int64_t kGroup = 32;

inline void check_params(const torch::Tensor& codes, const torch::Tensor& scale, const c10::optional<torch::Tensor>& bias,
                  int64_t bits, int64_t K) {
  TORCH_CHECK(bits == 4 || bits == 8, "codes must be 4 or 8 bits wide");
  TORCH_CHECK(K % kGroup == 0, "in_features must be a multiple of 32");
  TORCH_CHECK(codes.scalar_type() == torch::kUInt8 && codes.is_contiguous() && codes.dim() == 2, "codes: 2-D uint8");
  TORCH_CHECK(codes.size(1) == K * bits / 8, "codes do not match in_features");
  TORCH_CHECK(scale.is_contiguous() && scale.size(0) == codes.size(0) && scale.size(1) == K / kGroup, "scale shape");
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == scale.scalar_type() && bias->sizes() == scale.sizes() && bias->is_contiguous(),
                "bias must match scale");
  }
}

template <typename F>
inline void with_param_type(const torch::Tensor& scale, F&& f) {
  if (scale.scalar_type() == torch::kFloat) {
    f(float{});
  } else if (scale.scalar_type() == torch::kHalf) {
    f(c10::Half{});
  } else {
    TORCH_CHECK(false, "scale must be float32 or float16");
  }
}

}  // namespace quant
