// Group-quantized weight codes (layout: quant_common.h) to a dense bf16 weight, for large batches of rows: one bf16
// GEMM over the dequantized weight beats many quantized dot products there.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <vector>

#include "quant_common.h"

using quant::kGroup;

namespace {

#ifdef MISTRALPY_AVX512_BF16
// Rows [begin, end) of the weight to bf16: codes to u8 (nibbles split), then a * (q + c) + b, 16 lanes at a time.
template <int kBits, typename P>
void dequantize_rows(const uint8_t* codes, int64_t K, const P* scale, const P* bias, float offset,
                     c10::BFloat16* out, int64_t begin, int64_t end) {
  const int64_t G = K / kGroup, row_bytes = K * kBits / 8;
  std::vector<uint8_t> q(K);
  const __m256i low = _mm256_set1_epi8(0x0F);
  for (int64_t n = begin; n < end; ++n) {
    const uint8_t* row = codes + n * row_bytes;
    const uint8_t* qn = row;
    if (kBits == 4) {
      int64_t g = 0;
      for (; g + 4 <= G; g += 4) {  // 64 bytes, 32 u16 lanes: nibble k of lane i is weight i of group g + k
        const __m512i w = _mm512_loadu_si512(row + g * 16);
        for (int k = 0; k < 4; ++k) {
          const __m512i v = _mm512_and_si512(_mm512_srli_epi16(w, 4 * k), _mm512_set1_epi16(0x0F));
          _mm256_storeu_si256((__m256i*)(q.data() + (g + k) * kGroup), _mm512_cvtepi16_epi8(v));
        }
      }
      for (; g + 2 <= G; g += 2) {  // 32 bytes: low nibbles are weights 0..31, high ones 32..63
        const __m256i w = _mm256_loadu_si256((const __m256i*)(row + g * 16));
        _mm256_storeu_si256((__m256i*)(q.data() + g * kGroup), _mm256_and_si256(w, low));
        _mm256_storeu_si256((__m256i*)(q.data() + g * kGroup + 32), _mm256_and_si256(_mm256_srli_epi16(w, 4), low));
      }
      if (g < G) {
        const __m128i w = _mm_loadu_si128((const __m128i*)(row + g * 16));
        _mm_storeu_si128((__m128i*)(q.data() + g * kGroup), _mm_and_si128(w, _mm_set1_epi8(0x0F)));
        _mm_storeu_si128((__m128i*)(q.data() + g * kGroup + 16), _mm_and_si128(_mm_srli_epi16(w, 4), _mm_set1_epi8(0x0F)));
      }
      qn = q.data();
    }
    for (int64_t g = 0; g < G; ++g) {
      const __m512 a = _mm512_set1_ps(static_cast<float>(scale[n * G + g]));
      const __m512 b = _mm512_set1_ps(bias != nullptr ? static_cast<float>(bias[n * G + g]) : 0.0f);
      const __m512 c = _mm512_set1_ps(offset);
      __m512 w[2];
      for (int h = 0; h < 2; ++h) {
        const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(qn + g * kGroup + 16 * h)));
        w[h] = _mm512_fmadd_ps(a, _mm512_add_ps(_mm512_cvtepi32_ps(v), c), b);
      }
      _mm512_storeu_si512(out + n * K + g * kGroup, (__m512i)_mm512_cvtne2ps_pbh(w[1], w[0]));
    }
  }
}
#endif

}  // namespace

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
        dequantize_rows<4>(cp, in_features, scale.data_ptr<P>(), bp, c, op, begin, end);
      } else {
        dequantize_rows<8>(cp, in_features, scale.data_ptr<P>(), bp, c, op, begin, end);
      }
    });
  });
#endif
  return out;
}
