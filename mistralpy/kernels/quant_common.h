// What the quantized-weight kernels share (quant_matmul.cpp, quant_panels.cpp, quant_dequantize.cpp): the layout of the
// codes, the argument checks, dispatch over the per-group parameters' dtype, and rows of codes to bf16.
//
// Weights W[n, i] = a[n, g] * (q[n, i] + c) + b[n, g] for groups g of 32 weights along a row.
// Codes: 4 bits: (N, K / 2) bytes, 16 per group, groups packed four at a time: in 64 bytes read as 32 u16 lanes, lane i
// holds weight i of each group in bits 0-3, 4-7, 8-11 and 12-15. Two groups left over share 32 bytes (byte j: weight
// j low, 32 + j high); one left over takes 16 (byte j: weights j and 16 + j).
// 8 bits: (N, K) bytes, weight i in byte i.
// a and b: (N, K / 32), float32 or float16 (b may be absent).
#pragma once
#include <torch/extension.h>
#include <immintrin.h>

#include <initializer_list>
#include <vector>

#include "isa.h"

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

// Weight rows [n, n + rows): their codes and each given per-group parameter array (a, b), requested into L1.
template <typename P>
inline void prefetch_weight_rows(const uint8_t* codes, int64_t row_bytes, std::initializer_list<const P*> params,
                                 int64_t groups, int64_t n, int64_t rows) {
  const char* c = reinterpret_cast<const char*>(codes + n * row_bytes);
  for (int64_t b = 0; b < rows * row_bytes; b += 64) prefetch_line(c + b);
  for (const P* param : params) {
    if (param == nullptr) continue;
    const char* p = reinterpret_cast<const char*>(param + n * groups);
    for (int64_t b = 0; b < rows * groups * static_cast<int64_t>(sizeof(P)); b += 64) prefetch_line(p + b);
  }
}

#ifdef MISTRALPY_AVX512_BF16
// One row of K codes to u8 values q (nibbles split); 8-bit codes are returned in place.
template <int kBits>
inline const uint8_t* unpack_row(const uint8_t* row, int64_t K, uint8_t* q) {
  if (kBits == 8) return row;
  const int64_t G = K / kGroup;
  const __m256i low = _mm256_set1_epi8(0x0F);
  int64_t g = 0;
  for (; g + 4 <= G; g += 4) {  // 64 bytes, 32 u16 lanes: nibble k of lane i is weight i of group g + k
    const __m512i w = _mm512_loadu_si512(row + g * 16);
    for (int k = 0; k < 4; ++k) {
      const __m512i v = _mm512_and_si512(_mm512_srli_epi16(w, 4 * k), _mm512_set1_epi16(0x0F));
      _mm256_storeu_si256((__m256i*)(q + (g + k) * kGroup), _mm512_cvtepi16_epi8(v));
    }
  }
  for (; g + 2 <= G; g += 2) {  // 32 bytes: low nibbles are weights 0..31, high ones 32..63
    const __m256i w = _mm256_loadu_si256((const __m256i*)(row + g * 16));
    _mm256_storeu_si256((__m256i*)(q + g * kGroup), _mm256_and_si256(w, low));
    _mm256_storeu_si256((__m256i*)(q + g * kGroup + 32), _mm256_and_si256(_mm256_srli_epi16(w, 4), low));
  }
  if (g < G) {
    const __m128i w = _mm_loadu_si128((const __m128i*)(row + g * 16));
    _mm_storeu_si128((__m128i*)(q + g * kGroup), _mm_and_si128(w, _mm_set1_epi8(0x0F)));
    _mm_storeu_si128((__m128i*)(q + g * kGroup + 16), _mm_and_si128(_mm_srli_epi16(w, 4), _mm_set1_epi8(0x0F)));
  }
  return q;
}

// (v & 0x0F) | 0x4300 per u16 lane: the bf16 of 128 + the low nibble (exact), in one ternary-logic op.
inline __m512i low_nibble_bf16(__m512i v) {
  return _mm512_ternarylogic_epi32(v, _mm512_set1_epi16(0x0F), _mm512_set1_epi16(0x4300), 0xEA);
}

// One row of 4-bit codes to the bf16 values of 128 + q, in weight order.
inline void row4_bf16(const uint8_t* row, int64_t K, uint16_t* out) {
  const int64_t G = K / kGroup;
  const auto bf16_of = low_nibble_bf16;
  int64_t g = 0;
  for (; g + 4 <= G; g += 4) {
    const __m512i w = _mm512_loadu_si512(row + g * 16);
    for (int k = 0; k < 4; ++k) _mm512_storeu_si512(out + (g + k) * kGroup, bf16_of(_mm512_srli_epi16(w, 4 * k)));
  }
  for (; g + 2 <= G; g += 2) {
    const __m512i w = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(row + g * 16)));
    _mm512_storeu_si512(out + g * kGroup, bf16_of(w));
    _mm512_storeu_si512(out + (g + 1) * kGroup, bf16_of(_mm512_srli_epi16(w, 4)));
  }
  if (g < G) {
    const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(row + g * 16)));
    _mm512_storeu_si512(out + g * kGroup, bf16_of(_mm512_inserti64x4(_mm512_castsi256_si512(w), _mm256_srli_epi16(w, 4), 1)));
  }
}

// 16 u8 values as float32 lanes.
inline __m512 u8x16(const uint8_t* q) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)q))); }

// Rows [begin, end) of the weight to bf16: a * (q + c) + b, 16 lanes at a time.
template <int kBits, typename P>
inline void dequantize_rows(const uint8_t* codes, int64_t K, const P* scale, const P* bias, float offset,
                            c10::BFloat16* out, int64_t begin, int64_t end) {
  const int64_t G = K / kGroup, row_bytes = K * kBits / 8;
  std::vector<uint8_t> q(K);
  for (int64_t n = begin; n < end; ++n) {
    const uint8_t* qn = unpack_row<kBits>(codes + n * row_bytes, K, q.data());
    for (int64_t g = 0; g < G; ++g) {
      const __m512 a = _mm512_set1_ps(static_cast<float>(scale[n * G + g]));
      const __m512 b = _mm512_set1_ps(bias != nullptr ? static_cast<float>(bias[n * G + g]) : 0.0f);
      const __m512 c = _mm512_set1_ps(offset);
      __m512 w[2];
      for (int h = 0; h < 2; ++h) w[h] = _mm512_fmadd_ps(a, _mm512_add_ps(u8x16(qn + g * kGroup + 16 * h), c), b);
      _mm512_storeu_si512(out + n * K + g * kGroup, (__m512i)_mm512_cvtne2ps_pbh(w[1], w[0]));
    }
  }
}
#endif

}  // namespace quant
