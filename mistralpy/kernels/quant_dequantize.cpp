// Group-quantized weight codes (layout: quant_common.h) to a dense bf16 weight, for large batches of rows: one bf16
// GEMM over the dequantized weight beats many quantized dot products there.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <vector>

#include "quant_common.h"
#include "ops.h"

using quant::kGroup;

// The weight as (N, K) bf16, for large batches of rows (one dense GEMM beats many quantized dot products there).
torch::Tensor qdequantize(torch::Tensor codes, torch::Tensor scale, c10::optional<torch::Tensor> bias, int64_t bits,
                          double offset, int64_t in_features) {
#ifndef MISTRALPY_AVX512_BF16
  TORCH_CHECK(false, "qdequantize needs AVX-512 BF16 (built without it)");
#endif
  quant::check_params(codes, scale, bias, bits, in_features);
  const int64_t N = codes.size(0);
  auto out = torch::empty({N, in_features}, torch::TensorOptions().dtype(torch::kBFloat16));
#ifdef MISTRALPY_AVX512_BF16
  quant::with_param_type(scale, [&](auto tag) {
    using P = decltype(tag);
    const P* bp = bias.has_value() ? bias->data_ptr<P>() : nullptr;
    const uint8_t* cp = codes.data_ptr<uint8_t>();
    auto* op = out.data_ptr<c10::BFloat16>();
    const float c = static_cast<float>(offset);
    at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
      if (bits == 4) {
        quant::dequantize_rows<4>(cp, in_features, scale.data_ptr<P>(), bp, c, op, begin, end);
      } else {
        quant::dequantize_rows<8>(cp, in_features, scale.data_ptr<P>(), bp, c, op, begin, end);
      }
    });
  });
#endif
  return out;
}
