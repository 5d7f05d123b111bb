// Matmul against group-wise quantized weights, kept quantized: y = x W^T with W[n, i] = a[n, g] * (q[n, i] + c) + b[n, g]
// for groups g of 32 weights along a row. x stays in bf16 (no activation quantization): codes become bf16 with the
// exponent trick (bits 0x4300 | q is the bf16 of 128 + q, exactly, for q < 128) and meet x in AVX-512 BF16 dot products
// with float32 sums. Per group, sum_i (128 + q_i) x_i = S; the row's result is sum_g a_g S_g + sum_g (b_g + a_g (c - 128))
// X_g with X_g = sum_i x_i, so the codes' offset and the group's bias cost one short dot product per row.
// Codes (layout: quant_common.h) of 8 bits are split into nibbles lo + 16 hi: S = sum (128 + lo) x + sum (128 + hi) 16 x.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cstring>
#include <vector>

#include "quant_common.h"
#include "ops.h"

using quant::kGroup;
using quant::low_nibble_bf16;

// From this many x rows on, panels of unpacked codes (quant_panels.cpp) beat the register tiles here.
constexpr int64_t kPanelRows = 8;

namespace {

#ifdef MISTRALPY_AVX512_BF16
constexpr bool kFast = true;

inline __m512bh as_bh(__m512i v) { return (__m512bh)v; }

// 32 codes (u16 lanes holding 0..255) -> the bf16 vectors of 128 + low nibble and 128 + high nibble.
inline void nibbles(__m512i w16, __m512i& lo, __m512i& hi) {
  lo = low_nibble_bf16(w16);
  hi = low_nibble_bf16(_mm512_srli_epi16(w16, 4));
}

inline __m512 dot(__m512i codes, const uint16_t* x) {
  return _mm512_dpbf16_ps(_mm512_setzero_ps(), as_bh(codes), as_bh(_mm512_loadu_si512(x)));
}

// 16 per-group parameters (fewer under `mask`) as float32 lanes.
inline __m512 load16(const float* p, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, p); }
inline __m512 load16(const c10::Half* p, __mmask16 mask) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, reinterpret_cast<const uint16_t*>(p)));
}

// The inputs of one call. Per x row m and group g: xsum[m * groups + g] = X_g, and for 8-bit codes x16 = 16 x.
template <typename P>
struct Operands {
  const uint16_t* x;
  const uint16_t* x16;
  const float* xsum;
  const uint8_t* codes;
  const P* scale;
  const P* bias;
  int64_t K, groups, row_bytes, N;
  float shift;
  c10::BFloat16* out;
};

// A tile of NR weight rows (from n) by MR x rows (from m): out[m + j, n + i] for i < NR, j < MR. Each unpacked code
// vector serves MR dot products, each x load NR; the NR * MR accumulators are independent chains.
template <int kBits, int NR, int MR, typename P>
void tile(const Operands<P>& o, int64_t n, int64_t m, float* a) {
  const int64_t G = o.groups, K = o.K;
  __m512 acc[NR][MR];
  const __m512 shift = _mm512_set1_ps(o.shift);
  for (int i = 0; i < NR; ++i) {  // scales to float32 in `a`; accumulators start at sum_g (b_g + a_g shift) X_g
    for (int j = 0; j < MR; ++j) acc[i][j] = _mm512_setzero_ps();
    for (int64_t g = 0; g < G; g += 16) {
      const __mmask16 mask = G - g >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (G - g)) - 1);
      const __m512 va = load16(o.scale + (n + i) * G + g, mask);
      _mm512_mask_storeu_ps(a + i * G + g, mask, va);
      const __m512 vb = o.bias != nullptr ? load16(o.bias + (n + i) * G + g, mask) : _mm512_setzero_ps();
      const __m512 z = _mm512_fmadd_ps(va, shift, vb);
      for (int j = 0; j < MR; ++j)
        acc[i][j] = _mm512_fmadd_ps(z, _mm512_maskz_loadu_ps(mask, o.xsum + (m + j) * G + g), acc[i][j]);
    }
  }
  const uint16_t* x = o.x + m * K;
  if (kBits == 4) {
    int64_t g = 0;
    for (; g + 4 <= G; g += 4) {
      for (int i = 0; i < NR; ++i) {
        const __m512i w = _mm512_loadu_si512(o.codes + (n + i) * o.row_bytes + g * 16);
        const __m512i c[4] = {low_nibble_bf16(w), low_nibble_bf16(_mm512_srli_epi16(w, 4)),
                              low_nibble_bf16(_mm512_srli_epi16(w, 8)),
                              _mm512_or_si512(_mm512_srli_epi16(w, 12), _mm512_set1_epi16(0x4300))};
        const float* ai = a + i * G + g;
        for (int j = 0; j < MR; ++j) {
          const uint16_t* xj = x + j * K + g * kGroup;
          __m512 s = _mm512_fmadd_ps(dot(c[0], xj), _mm512_set1_ps(ai[0]), acc[i][j]);
          s = _mm512_fmadd_ps(dot(c[1], xj + kGroup), _mm512_set1_ps(ai[1]), s);
          s = _mm512_fmadd_ps(dot(c[2], xj + 2 * kGroup), _mm512_set1_ps(ai[2]), s);
          acc[i][j] = _mm512_fmadd_ps(dot(c[3], xj + 3 * kGroup), _mm512_set1_ps(ai[3]), s);
        }
      }
    }
    for (; g + 2 <= G; g += 2) {
      for (int i = 0; i < NR; ++i) {
        const uint8_t* row = o.codes + (n + i) * o.row_bytes;
        __m512i lo, hi;
        nibbles(_mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(row + g * 16))), lo, hi);
        const __m512 sa = _mm512_set1_ps(a[i * G + g]), sb = _mm512_set1_ps(a[i * G + g + 1]);
        for (int j = 0; j < MR; ++j) {
          const uint16_t* xj = x + j * K + g * kGroup;
          acc[i][j] = _mm512_fmadd_ps(dot(hi, xj + kGroup), sb, _mm512_fmadd_ps(dot(lo, xj), sa, acc[i][j]));
        }
      }
    }
    if (g < G) {  // the odd last group: weights j and 16 + j share byte j
      for (int i = 0; i < NR; ++i) {
        const uint8_t* row = o.codes + (n + i) * o.row_bytes;
        const __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i*)(row + g * 16)));
        const __m256i lo = _mm256_and_si256(w, _mm256_set1_epi16(0x0F)), hi = _mm256_srli_epi16(w, 4);
        const __m512i v =
            _mm512_or_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), _mm512_set1_epi16(0x4300));
        const __m512 s = _mm512_set1_ps(a[i * G + g]);
        for (int j = 0; j < MR; ++j) acc[i][j] = _mm512_fmadd_ps(dot(v, x + j * K + g * kGroup), s, acc[i][j]);
      }
    }
  } else {
    const uint16_t* x16 = o.x16 + m * K;
    for (int64_t g = 0; g < G; ++g) {
      for (int i = 0; i < NR; ++i) {
        const uint8_t* row = o.codes + (n + i) * o.row_bytes;
        __m512i lo, hi;
        nibbles(_mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i*)(row + g * kGroup))), lo, hi);
        const __m512 s = _mm512_set1_ps(a[i * G + g]);
        for (int j = 0; j < MR; ++j) {
          const int64_t off = j * K + g * kGroup;
          const __m512 d = _mm512_dpbf16_ps(dot(lo, x + off), as_bh(hi), as_bh(_mm512_loadu_si512(x16 + off)));
          acc[i][j] = _mm512_fmadd_ps(d, s, acc[i][j]);
        }
      }
    }
  }
  for (int i = 0; i < NR; ++i)
    for (int j = 0; j < MR; ++j) o.out[(m + j) * o.N + n + i] = c10::BFloat16(_mm512_reduce_add_ps(acc[i][j]));
}

// Weight bytes this far ahead of the tile being computed are requested from memory: the hardware prefetchers alone
// leave a one-row matmul waiting on memory (+20-25% tokens/s decoding the embedded model, with 4 KB ahead).
constexpr int64_t kAheadBytes = 4096;

template <typename P>
inline void prefetch_rows(const Operands<P>& o, int64_t n, int64_t rows) {
  if (n + rows <= o.N) quant::prefetch_weight_rows(o.codes, o.row_bytes, {o.scale}, o.groups, n, rows);
}

// Rows [n, n + NR) against every x row: tiles of 4 x rows, then the remainder.
template <int kBits, int NR, typename P>
void row_tiles(const Operands<P>& o, int64_t M, int64_t n, float* a) {
  int64_t m = 0;
  for (; m + 4 <= M; m += 4) tile<kBits, NR, 4>(o, n, m, a);
  switch (M - m) {
    case 3: tile<kBits, NR, 3>(o, n, m, a); break;
    case 2: tile<kBits, NR, 2>(o, n, m, a); break;
    case 1: tile<kBits, NR, 1>(o, n, m, a); break;
    default: break;
  }
}

template <int kBits, typename P>
void qmatmul_impl(const uint16_t* x, int64_t M, int64_t K, const uint8_t* codes, const P* scale, const P* bias,
                  double offset, c10::BFloat16* out, int64_t N) {
  const int64_t groups = K / kGroup;
  std::vector<float> xsum(M * groups);
  std::vector<uint16_t> x16(kBits == 8 ? M * K : 0);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t g = 0; g < groups; ++g) {
      float s = 0.0f;
      for (int64_t i = 0; i < kGroup; ++i) {
        const uint32_t bits = static_cast<uint32_t>(x[m * K + g * kGroup + i]) << 16;
        float f;
        std::memcpy(&f, &bits, 4);
        s += f;
        if (kBits == 8) {  // times 16 is exact in bf16: the high nibbles' weight, moved onto x
          const float f16 = f * 16.0f;
          uint32_t b16;
          std::memcpy(&b16, &f16, 4);
          x16[m * K + g * kGroup + i] = static_cast<uint16_t>(b16 >> 16);
        }
      }
      xsum[m * groups + g] = s;
    }
  }
  // sum (128 + lo) + 16 sum (128 + hi) counts 128 * 17 per weight for 8-bit codes, 128 for nibbles
  const float shift = static_cast<float>(offset) - (kBits == 8 ? 2176.0f : 128.0f);
  const Operands<P> o{x, x16.data(), xsum.data(), codes, scale, bias, K, groups, K * kBits / 8, N, shift, out};
  // one x row: 4 weight rows at a time (independent chains); more: 2 weight rows by 4 x rows
  constexpr int64_t kChunk = 16;
  const int64_t ahead = std::max<int64_t>(4, kAheadBytes / o.row_bytes);  // rows
  at::parallel_for(0, (N + kChunk - 1) / kChunk, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> a(4 * groups + 16);
    for (int64_t n = begin * kChunk; n < std::min(N, end * kChunk);) {
      const int64_t left = std::min(N, end * kChunk) - n;
      if (M == 1 && left >= 4) {
        prefetch_rows(o, n + ahead, 4);
        tile<kBits, 4, 1>(o, n, 0, a.data());
        n += 4;
      } else if (left >= 2) {
        prefetch_rows(o, n + ahead, 2);
        row_tiles<kBits, 2>(o, M, n, a.data());
        n += 2;
      } else {
        row_tiles<kBits, 1>(o, M, n, a.data());
        n += 1;
      }
    }
  });
}
#else
constexpr bool kFast = false;
#endif

}  // namespace

bool has_qmatmul() { return kFast; }

int64_t qmatmul_panel_rows() { return kPanelRows; }

// x: (M, K) bf16 -> (M, N) bf16, N = codes.size(0). offset: c, added to every code before the scale.
torch::Tensor qmatmul(torch::Tensor x, torch::Tensor codes, torch::Tensor scale, c10::optional<torch::Tensor> bias,
                      int64_t bits, double offset) {
  return qmatmul_path(x, codes, scale, bias, bits, offset, x.size(0) >= kPanelRows);
}

torch::Tensor qmatmul_path(torch::Tensor x, torch::Tensor codes, torch::Tensor scale,
                           c10::optional<torch::Tensor> bias, int64_t bits, double offset, bool panels) {
  TORCH_CHECK(kFast, "qmatmul needs AVX-512 BF16 (built without it)");
  TORCH_CHECK(x.scalar_type() == torch::kBFloat16 && x.dim() == 2, "x must be 2-D bf16");
  const int64_t M = x.size(0), K = x.size(1), N = codes.size(0);
  quant::check_params(codes, scale, bias, bits, K);
  x = x.contiguous();
  auto out = torch::empty({M, N}, x.options());
  if (panels) {
    qmatmul_panels(x, codes, scale, bias, bits, offset, out);
    return out;
  }
#ifdef MISTRALPY_AVX512_BF16
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<c10::BFloat16>());
  quant::with_param_type(scale, [&](auto tag) {
    using P = decltype(tag);
    const P* bp = bias.has_value() ? bias->data_ptr<P>() : nullptr;
    if (bits == 4) {
      qmatmul_impl<4, P>(xp, M, K, codes.data_ptr<uint8_t>(), scale.data_ptr<P>(), bp, offset,
                         out.data_ptr<c10::BFloat16>(), N);
    } else {
      qmatmul_impl<8, P>(xp, M, K, codes.data_ptr<uint8_t>(), scale.data_ptr<P>(), bp, offset,
                         out.data_ptr<c10::BFloat16>(), N);
    }
  });
#endif
  return out;
}
