// Matmul against group-quantized weights kept quantized (layout: quant_common.h): y = x W^T for up to a few dozen rows
// of x (decode steps). x stays in bf16 (no activation quantization). Per panel of 16 weight rows, each 64-byte block
// of codes becomes four bf16 vectors of k pairs with one shift and one ternary-logic op each, and every x row takes
// one AVX-512 BF16 dot product per vector with the 16 rows in the lanes; per group, one multiply by the 16 rows'
// scales. 4-bit codes enter as 128 + q (exact), so per group sum_k (128 + q_k) x_k = S, and the row's result is
// sum_g a_g S_g + sum_g (b_g + a_g (c - 128)) X_g with X_g = sum_k x_k. 8-bit codes go through float32 (integers
// below 256 are exact in bf16): two vectors of k pairs per block, and no 128 to take back.
// An x row's sums are formed in the same order whatever the number of rows: results do not depend on the batch.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "quant_common.h"
#include "ops.h"

using quant::kGroup;
using quant::kPanel;

namespace {

#ifdef MISTRALPY_AVX512_BF16
constexpr bool kFast = true;
constexpr int kMaxRows = 8;  // x rows per pass over a panel: their sums stay in registers
constexpr int kChains = 2;   // independent dot-product chains per x row and group

// The inputs of one call. Per x row m and group g: xsum[m * groups + g] = X_g. x is read as u32 k pairs.
template <typename P>
struct Operands {
  const uint32_t* x;
  const float* xsum;
  const uint8_t* codes;
  const P* scale;
  const P* bias;
  int64_t K, groups, panel_bytes, N;
  float shift;
  c10::BFloat16* out;
};

// ((block >> 4s) & 0x000F000F) | 0x43004300 per u32 lane: a k pair of nibbles as the bf16 values 128 + nibble (exact:
// bits 0x4300 | q are the bf16 of 128 + q for q < 128), in one ternary-logic op after the shift.
template <int s>
inline __m512i nibble_pair(__m512i block) {
  const __m512i v = s == 0 ? block : _mm512_srli_epi32(block, 4 * s);
  return _mm512_ternarylogic_epi32(v, _mm512_set1_epi32(0x000F000F), _mm512_set1_epi32(0x43004300), 0xEA);
}
// Bytes 8 s and 16 + 8 s of each lane: the 8-bit codes of k pair s of a block, as bf16 (exact, through float32).
template <int s>
inline __m512i byte_pair(__m512i block) {
  const __m512i byte = _mm512_set1_epi32(0xFF);
  const __m512 lo = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(block, 8 * s), byte));
  const __m512 hi = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(block, 16 + 8 * s), byte));
  // the float32 of an integer below 256 has zero low 16 bits: its top half is its bf16
  return _mm512_ternarylogic_epi32((__m512i)hi, _mm512_srli_epi32((__m512i)lo, 16), _mm512_set1_epi32(0xFFFF0000),
                                   0xEC);
}

constexpr int vectors_per_block(int bits) { return bits == 4 ? 4 : 2; }  // k pairs of a 64-byte block of codes

// Block i of panel p's codes as bf16 vectors of k pairs (w[s]: pair s of the block's 16 rows).
template <int kBits>
inline void convert_block(const uint8_t* block_ptr, __m512i* w) {
  const __m512i block = _mm512_loadu_si512(block_ptr);
  if constexpr (kBits == 4) {
    w[0] = nibble_pair<0>(block), w[1] = nibble_pair<1>(block);
    w[2] = nibble_pair<2>(block), w[3] = nibble_pair<3>(block);
  } else {
    w[0] = byte_pair<0>(block), w[1] = byte_pair<1>(block);
  }
}

// Rows [m, m + MR) of x times panel p: out[m + j, 16 p .. 16 p + 16). The panel's codes are converted as they are
// read, or (kConverted) read already converted from `converted`, which holds the panel's vectors in order.
template <int kBits, int MR, bool kConverted, typename P>
void panel_pass(const Operands<P>& o, int64_t p, int64_t m, const __m512i* converted) {
  constexpr int kBlocks = kBits == 4 ? 4 : 8;  // 64-byte blocks of codes per group
  constexpr int kVectors = vectors_per_block(kBits);
  const int64_t G = o.groups, pairs = o.K / 2;
  const uint8_t* codes = o.codes + p * o.panel_bytes;
  const P* scale = o.scale + p * G * kPanel;
  const P* bias = o.bias != nullptr ? o.bias + p * G * kPanel : nullptr;
  const __m512 shift = _mm512_set1_ps(o.shift);
  __m512 acc[MR];
  const uint32_t* x[MR];  // row j's k pairs of group g
  for (int j = 0; j < MR; ++j) acc[j] = _mm512_setzero_ps(), x[j] = o.x + (m + j) * pairs;
  for (int64_t g = 0; g < G; ++g) {
    __m512 dot[kChains][MR];
    for (int c = 0; c < kChains; ++c)
      for (int j = 0; j < MR; ++j) dot[c][j] = _mm512_setzero_ps();
    for (int b = 0; b < kBlocks; ++b) {
      __m512i w[kVectors];
      if constexpr (kConverted) {
        for (int s = 0; s < kVectors; ++s) w[s] = _mm512_load_si512(converted + (g * kBlocks + b) * kVectors + s);
      } else {
        convert_block<kBits>(codes + (g * kBlocks + b) * 64, w);
      }
      for (int s = 0; s < kVectors; ++s) {
        for (int j = 0; j < MR; ++j) {
          const __m512i xp = _mm512_set1_epi32(static_cast<int>(x[j][b * kVectors + s]));
          dot[s % kChains][j] = _mm512_dpbf16_ps(dot[s % kChains][j], (__m512bh)w[s], (__m512bh)xp);
        }
      }
    }
    const __m512 a = quant::load16(scale + g * kPanel);
    const __m512 z = _mm512_fmadd_ps(a, shift, bias != nullptr ? quant::load16(bias + g * kPanel) : _mm512_setzero_ps());
    for (int j = 0; j < MR; ++j) {
      __m512 d = dot[0][j];
      for (int c = 1; c < kChains; ++c) d = _mm512_add_ps(d, dot[c][j]);
      acc[j] = _mm512_fmadd_ps(z, _mm512_set1_ps(o.xsum[(m + j) * G + g]), _mm512_fmadd_ps(a, d, acc[j]));
      x[j] += kGroup / 2;
    }
  }
  const int64_t cols = std::min(kPanel, o.N - p * kPanel);
  const __mmask16 mask = cols >= kPanel ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  for (int j = 0; j < MR; ++j) {
    _mm256_mask_storeu_epi16(o.out + (m + j) * o.N + p * kPanel, mask, (__m256i)_mm512_cvtneps_pbh(acc[j]));
  }
}

// Rows [m, M) of x times panel p, kMaxRows at a time, then passes of 4, 2 and 1 rows.
template <int kBits, bool kConverted, typename P>
void panel_passes(const Operands<P>& o, int64_t M, int64_t p, int64_t m, const __m512i* converted) {
  for (; m + kMaxRows <= M; m += kMaxRows) panel_pass<kBits, kMaxRows, kConverted>(o, p, m, converted);
  if (M - m >= 4) panel_pass<kBits, 4, kConverted>(o, p, m, converted), m += 4;
  if (M - m >= 2) panel_pass<kBits, 2, kConverted>(o, p, m, converted), m += 2;
  if (M - m >= 1) panel_pass<kBits, 1, kConverted>(o, p, m, converted);
}

// All rows of x times panel p. With more rows than one pass takes, the panel's codes are converted once into
// `converted` (K / 2 vectors), which the passes then read, instead of in every pass.
template <int kBits, typename P>
void panel_all_rows(const Operands<P>& o, int64_t M, int64_t p, __m512i* converted) {
  if (M <= kMaxRows) return panel_passes<kBits, false>(o, M, p, 0, nullptr);
  const uint8_t* codes = o.codes + p * o.panel_bytes;
  constexpr int kVectors = vectors_per_block(kBits);
  for (int64_t i = 0; i < o.panel_bytes / 64; ++i) convert_block<kBits>(codes + i * 64, converted + i * kVectors);
  panel_passes<kBits, true>(o, M, p, 0, converted);
}

// X_g (float32) per x row and group.
void group_sums(const uint16_t* x, int64_t M, int64_t K, float* xsum) {
  const int64_t groups = K / kGroup;
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t g = 0; g < groups; ++g) {
      float s = 0.0f;
      for (int64_t i = 0; i < kGroup; ++i) {
        const uint32_t bits = static_cast<uint32_t>(x[m * K + g * kGroup + i]) << 16;
        float f;
        std::memcpy(&f, &bits, 4);
        s += f;
      }
      xsum[m * groups + g] = s;
    }
  }
}

template <int kBits, typename P>
void qmatmul_impl(const uint16_t* x, int64_t M, int64_t K, const uint8_t* codes, const P* scale, const P* bias,
                  double offset, c10::BFloat16* out, int64_t N) {
  const int64_t groups = K / kGroup, panels = (N + kPanel - 1) / kPanel;
  std::vector<float> xsum(M * groups);
  group_sums(x, M, K, xsum.data());
  const float shift = static_cast<float>(offset) - (kBits == 4 ? 128.0f : 0.0f);  // nibbles enter as 128 + q
  const auto* xp = reinterpret_cast<const uint32_t*>(x);
  const int64_t panel_bytes = kPanel * K * kBits / 8;
  const Operands<P> o{xp, xsum.data(), codes, scale, bias, K, groups, panel_bytes, N, shift, out};
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    std::vector<__m512i> converted(M > kMaxRows ? K / 2 : 0);
    for (int64_t p = begin; p < end; ++p) {
      // the next panel's codes and group parameters are requested while this one is multiplied: the hardware
      // prefetchers alone leave a one-row matmul waiting on memory
      if (p + 1 < end) quant::prefetch_panel(codes, panel_bytes, {scale, bias}, groups, p + 1);
      panel_all_rows<kBits>(o, M, p, converted.data());
    }
  });
}
#else
constexpr bool kFast = false;
#endif

}  // namespace

bool has_qmatmul() { return kFast; }

// x: (M, K) bf16 -> (M, N) bf16. offset: c, added to every code before the scale.
torch::Tensor qmatmul(torch::Tensor x, torch::Tensor codes, torch::Tensor scale, c10::optional<torch::Tensor> bias,
                      int64_t bits, double offset, int64_t N) {
  TORCH_CHECK(kFast, "qmatmul needs AVX-512 BF16 (built without it)");
  TORCH_CHECK(x.scalar_type() == torch::kBFloat16 && x.dim() == 2, "x must be 2-D bf16");
  const int64_t M = x.size(0), K = quant::check_params(codes, scale, bias, bits, N);
  TORCH_CHECK(x.size(1) == K, "x has ", x.size(1), " features, the weight ", K);
  x = x.contiguous();
  auto out = torch::empty({M, N}, x.options());
#ifdef MISTRALPY_AVX512_BF16
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<c10::BFloat16>());
  quant::with_param_type(scale, [&](auto tag) {
    using P = decltype(tag);
    const P* bp = bias.has_value() ? bias->data_ptr<P>() : nullptr;
    auto* op = out.data_ptr<c10::BFloat16>();
    if (bits == 4) {
      qmatmul_impl<4, P>(xp, M, K, codes.data_ptr<uint8_t>(), scale.data_ptr<P>(), bp, offset, op, N);
    } else {
      qmatmul_impl<8, P>(xp, M, K, codes.data_ptr<uint8_t>(), scale.data_ptr<P>(), bp, offset, op, N);
    }
  });
#endif
  return out;
}
