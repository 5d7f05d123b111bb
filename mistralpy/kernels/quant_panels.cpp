// Matmul against group-quantized weights for batches of x rows (decode steps of several sequences). Per panel of 16
// weight rows, a thread's buffer takes the codes as bf16 (exact: integers below 256; 4-bit ones as 128 + q) in
// k-pair-major order (panel[p] holds codes 2p and 2p + 1 of the 16 rows), with the rows' group parameters side by side. Every x row then
// takes one AVX-512 BF16 dot product per k pair with the 16 rows in the lanes, and per group one multiply by the 16
// rows' scales: the weights stay exact as in quant_matmul.cpp, at a fraction of its instructions once several x rows
// share each unpacked code, and without the dense copy of the whole weight that qdequantize + GEMM writes.
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <vector>

#include "quant_common.h"
#include "ops.h"

using quant::kGroup;

namespace {

#ifdef MISTRALPY_AVX512_BF16
constexpr int64_t kPanel = 16;  // weight rows per panel: one zmm of float32 outputs
constexpr int kMaxRows = 8;     // x rows per pass over a panel: sums and accumulators held in registers

// 16 rows of 16 u32 (bf16 pairs) -> 16 columns: r[i] lane j -> out[j] lane i.
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

// Per-group parameters of the panel: scale[g * 16 + i] = a, shift[g * 16 + i] = b + a c of row n + i.
struct Panel {
  std::vector<c10::BFloat16> dense;  // the codes of 16 rows, row-major (before the transpose)
  std::vector<uint32_t> codes;       // k-pair-major: codes[p * 16 + i] = codes 2p, 2p + 1 of row i
  std::vector<float> scale, shift;
  explicit Panel(int64_t K)
      : dense(kPanel * K), codes(kPanel * K / 2), scale(K / kGroup * kPanel), shift(K / kGroup * kPanel) {}
};

// Weight rows [n, n + rows) into the panel (rows past `rows` are zero).
template <int kBits, typename P>
void fill_panel(const uint8_t* codes, int64_t K, const P* scale, const P* bias, float offset, int64_t n, int64_t rows,
                Panel& panel) {
  const int64_t G = K / kGroup;
  for (int64_t i = 0; i < kPanel; ++i) {
    c10::BFloat16* d = panel.dense.data() + i * K;
    if (i >= rows) {
      std::fill(d, d + K, c10::BFloat16(0.0f));
      for (int64_t g = 0; g < G; ++g) panel.scale[g * kPanel + i] = panel.shift[g * kPanel + i] = 0.0f;
      continue;
    }
    const uint8_t* row = codes + (n + i) * K * kBits / 8;
    if (kBits == 4) {  // 128 + q, through the exponent bits
      quant::row4_bf16(row, K, reinterpret_cast<uint16_t*>(d));
    } else {  // q itself (a byte each): integers below 256 are exact in bf16
      for (int64_t k = 0; k < K; k += 32) {
        _mm512_storeu_si512(d + k, (__m512i)_mm512_cvtne2ps_pbh(quant::u8x16(row + k + 16), quant::u8x16(row + k)));
      }
    }
    const float c = kBits == 4 ? offset - 128.0f : offset;
    for (int64_t g = 0; g < G; ++g) {
      const float a = static_cast<float>(scale[(n + i) * G + g]);
      const float b = bias != nullptr ? static_cast<float>(bias[(n + i) * G + g]) : 0.0f;
      panel.scale[g * kPanel + i] = a;
      panel.shift[g * kPanel + i] = b + a * c;
    }
  }
  for (int64_t k = 0; k < K; k += 32) {
    __m512i r[16];
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(panel.dense.data() + i * K + k);
    transpose16(r);
    for (int j = 0; j < 16; ++j) _mm512_storeu_si512(panel.codes.data() + (k / 2 + j) * kPanel, r[j]);
  }
}

// out[m + j, n..n+16) for j < MR: per group, one dot product per k pair and x row, then the 16 rows' a and b + a c
// (times the x row's group sum xsum[m + j][g]).
template <int MR>
void panel_rows(const Panel& panel, const uint32_t* x, const float* xsum, int64_t K, int64_t m, c10::BFloat16* out,
                int64_t N, int64_t n, int64_t cols) {
  const int64_t G = K / kGroup, pairs = K / 2;
  __m512 acc[MR];
  for (int j = 0; j < MR; ++j) acc[j] = _mm512_setzero_ps();
  const uint32_t* xm = x + m * pairs;
  for (int64_t g = 0; g < G; ++g) {
    __m512 dot[MR];
    for (int j = 0; j < MR; ++j) dot[j] = _mm512_setzero_ps();
    for (int64_t p = g * kGroup / 2; p < (g + 1) * kGroup / 2; ++p) {
      const __m512bh w = (__m512bh)_mm512_loadu_si512(panel.codes.data() + p * kPanel);
      for (int j = 0; j < MR; ++j) {
        dot[j] = _mm512_dpbf16_ps(dot[j], w, (__m512bh)_mm512_set1_epi32(static_cast<int>(xm[j * pairs + p])));
      }
    }
    const __m512 a = _mm512_loadu_ps(panel.scale.data() + g * kPanel);
    const __m512 z = _mm512_loadu_ps(panel.shift.data() + g * kPanel);
    for (int j = 0; j < MR; ++j) {
      acc[j] = _mm512_fmadd_ps(z, _mm512_set1_ps(xsum[(m + j) * G + g]), _mm512_fmadd_ps(a, dot[j], acc[j]));
    }
  }
  const __mmask16 mask = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  for (int j = 0; j < MR; ++j) {
    _mm256_mask_storeu_epi16(out + (m + j) * N + n, mask, (__m256i)_mm512_cvtneps_pbh(acc[j]));
  }
}

void panel_all_rows(const Panel& panel, const uint32_t* x, const float* xsum, int64_t K, int64_t M,
                    c10::BFloat16* out, int64_t N, int64_t n, int64_t cols) {
  int64_t m = 0;
  for (; m + kMaxRows <= M; m += kMaxRows) panel_rows<kMaxRows>(panel, x, xsum, K, m, out, N, n, cols);
  if (M - m >= 4) panel_rows<4>(panel, x, xsum, K, m, out, N, n, cols), m += 4;
  if (M - m >= 2) panel_rows<2>(panel, x, xsum, K, m, out, N, n, cols), m += 2;
  if (M - m >= 1) panel_rows<1>(panel, x, xsum, K, m, out, N, n, cols);
}

template <int kBits, typename P>
void qmatmul_panels_impl(const torch::Tensor& x, const uint8_t* codes, const P* scale, const P* bias, float offset,
                         torch::Tensor& out) {
  const int64_t M = x.size(0), K = x.size(1), N = out.size(1), G = K / kGroup;
  const auto* xp = reinterpret_cast<const uint32_t*>(x.data_ptr<c10::BFloat16>());
  // X_g per x row and group: the part of each group's sum that the codes' offset and the bias multiply
  const auto xsum = x.view({M, G, kGroup}).sum(-1, false, torch::kFloat).contiguous();
  const float* xs = xsum.data_ptr<float>();
  auto* op = out.data_ptr<c10::BFloat16>();
  at::parallel_for(0, (N + kPanel - 1) / kPanel, 1, [&](int64_t begin, int64_t end) {
    Panel panel(K);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n = b * kPanel, cols = std::min(kPanel, N - n);
      fill_panel<kBits, P>(codes, K, scale, bias, offset, n, cols, panel);
      if (b + 1 < end) {  // the next panel's codes and group parameters, while this one is multiplied
        const int64_t next_rows = std::min(kPanel, N - n - kPanel);
        quant::prefetch_weight_rows(codes, K * kBits / 8, {scale, bias}, G, n + kPanel, next_rows);
      }
      panel_all_rows(panel, xp, xs, K, M, op, N, n, cols);
    }
  });
}
#endif

}  // namespace

// x: (M, K) bf16 contiguous, out: (M, N) bf16; the arguments checked by qmatmul.
void qmatmul_panels(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& scale,
                    const c10::optional<torch::Tensor>& bias, int64_t bits, double offset, torch::Tensor& out) {
#ifdef MISTRALPY_AVX512_BF16
  quant::with_param_type(scale, [&](auto tag) {
    using P = decltype(tag);
    const P* bp = bias.has_value() ? bias->data_ptr<P>() : nullptr;
    const float c = static_cast<float>(offset);
    if (bits == 4) {
      qmatmul_panels_impl<4, P>(x, codes.data_ptr<uint8_t>(), scale.data_ptr<P>(), bp, c, out);
    } else {
      qmatmul_panels_impl<8, P>(x, codes.data_ptr<uint8_t>(), scale.data_ptr<P>(), bp, c, out);
    }
  });
#else
  TORCH_CHECK(false, "qmatmul_panels needs AVX-512 BF16 (built without it)");
#endif
}
