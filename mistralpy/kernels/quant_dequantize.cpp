// Group-quantized weight panels (layout: quant_common.h) to a dense (N, K) bf16 weight, for large batches of rows:
// one bf16 GEMM over the dequantized weight beats many quantized dot products there. Per panel and group, the 16 k
// pairs of the 16 rows are dequantized in float32 (each element rounded once to bf16), then transposed to rows.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include "quant_common.h"
#include "ops.h"

using quant::kGroup;
using quant::kPanel;

namespace {

#ifdef MISTRALPY_AVX512_BF16
// 16 rows of 16 u32 (bf16 pairs) -> 16 columns: r[i] lane j -> r[j] lane i.
inline void transpose16(__m512i r[16]) {
  __m512i a[16], b[16];
  for (int i = 0; i < 16; i += 2) {
    a[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    a[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    b[i] = _mm512_unpacklo_epi64(a[i], a[i + 2]);
    b[i + 1] = _mm512_unpackhi_epi64(a[i], a[i + 2]);
    b[i + 2] = _mm512_unpacklo_epi64(a[i + 1], a[i + 3]);
    b[i + 3] = _mm512_unpackhi_epi64(a[i + 1], a[i + 3]);
  }
  // b[4q + c], 128-bit lane L: column 4L + c of rows 4q..4q+3; a 4x4 transpose of 128-bit lanes finishes it
  for (int c = 0; c < 4; ++c) {
    const __m512i e0 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0x44), e1 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0xEE);
    const __m512i e2 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0x44);
    const __m512i e3 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0xEE);
    r[c] = _mm512_shuffle_i32x4(e0, e2, 0x88);
    r[4 + c] = _mm512_shuffle_i32x4(e0, e2, 0xDD);
    r[8 + c] = _mm512_shuffle_i32x4(e1, e3, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(e1, e3, 0xDD);
  }
}

// a (q + c) + b of 16 rows' codes (u32 lanes), rounded to bf16 in the low 16 bits of each lane.
inline __m512i weight_bf16(__m512i q, __m512 a, __m512 c, __m512 b) {
  const __m512 w = _mm512_fmadd_ps(a, _mm512_add_ps(_mm512_cvtepi32_ps(q), c), b);
  return _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(w));
}

template <int kBits, typename P>
void dequantize_panel(const uint8_t* codes, int64_t K, const P* scale, const P* bias, float offset, int64_t p,
                      int64_t rows, c10::BFloat16* out) {
  constexpr int kBlocks = kBits == 4 ? 4 : 8, kPairs = 16 / kBits;  // blocks per group, k pairs per block
  const int64_t G = K / kGroup;
  const uint8_t* panel = codes + p * kPanel * K * kBits / 8;
  const __m512i mask = _mm512_set1_epi32((1 << kBits) - 1);
  const __m512 c = _mm512_set1_ps(offset);
  for (int64_t g = 0; g < G; ++g) {
    const __m512 a = quant::load16(scale + (p * G + g) * kPanel);
    const __m512 b = bias != nullptr ? quant::load16(bias + (p * G + g) * kPanel) : _mm512_setzero_ps();
    __m512i r[16];
    for (int blk = 0; blk < kBlocks; ++blk) {
      const __m512i v = _mm512_loadu_si512(panel + (g * kBlocks + blk) * 64);
      for (int s = 0; s < kPairs; ++s) {  // k pair s of the block: bits kBits * s and 16 + kBits * s of each lane
        const __m512i lo = _mm512_and_si512(_mm512_srli_epi32(v, kBits * s), mask);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi32(v, 16 + kBits * s), mask);
        r[blk * kPairs + s] =
            _mm512_or_si512(weight_bf16(lo, a, c, b), _mm512_slli_epi32(weight_bf16(hi, a, c, b), 16));
      }
    }
    transpose16(r);  // r[i]: the 32 weights of row i in group g
    for (int64_t i = 0; i < rows; ++i) _mm512_storeu_si512(out + (p * kPanel + i) * K + g * kGroup, r[i]);
  }
}
#endif

}  // namespace

// The weight as (N, K) bf16.
torch::Tensor qdequantize(torch::Tensor codes, torch::Tensor scale, c10::optional<torch::Tensor> bias, int64_t bits,
                          double offset, int64_t N) {
#ifndef MISTRALPY_AVX512_BF16
  TORCH_CHECK(false, "qdequantize needs AVX-512 BF16 (built without it)");
#endif
  const int64_t K = quant::check_params(codes, scale, bias, bits, N);
  auto out = torch::empty({N, K}, torch::TensorOptions().dtype(torch::kBFloat16));
#ifdef MISTRALPY_AVX512_BF16
  quant::with_param_type(scale, [&](auto tag) {
    using P = decltype(tag);
    const P* bp = bias.has_value() ? bias->data_ptr<P>() : nullptr;
    const uint8_t* cp = codes.data_ptr<uint8_t>();
    auto* op = out.data_ptr<c10::BFloat16>();
    const float c = static_cast<float>(offset);
    at::parallel_for(0, codes.size(0), 4, [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t rows = std::min(kPanel, N - p * kPanel);
        if (bits == 4) {
          dequantize_panel<4>(cp, K, scale.data_ptr<P>(), bp, c, p, rows, op);
        } else {
          dequantize_panel<8>(cp, K, scale.data_ptr<P>(), bp, c, p, rows, op);
        }
      }
    });
  });
#endif
  return out;
}
