// The quantized matmul of the avx2 and portable levels (quant_matmul.cpp dispatches to it): x (float32 or bf16) is
// quantized per group (quant_x.h), then each panel of 16 weight rows (shared among threads by balanced_for.h) is
// multiplied by passes of up to Pass::kMaxRows rows of x (Pass: qmatmul_avx2.h or qmatmul_portable.h), which leave
// 16 float32 sums per x row for this file to store. The arithmetic is the avx512 level's (quant_matmul.cpp's
// header), in the same order: a row's results do not depend on the batch, and equal quant/qmatmul_reference.py's bit
// for bit.
#pragma once
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>

#include "balanced_for.h"
#include "quant_common.h"
#include "quant_x.h"

namespace quant {

// The inputs of one call's passes (per x row m and group g: x.d[x.at(m, g)], ...).
template <typename P>
struct PanelArgs {
  const QuantizedX& x;
  const uint8_t* codes;
  const P* scale;
  const P* bias;  // may be null
  int64_t K, groups, panel_bytes;
  float offset;
};

inline void store_row(const float* sums, float* out, int64_t cols) { std::copy(sums, sums + cols, out); }
inline void store_row(const float* sums, c10::BFloat16* out, int64_t cols) {
  for (int64_t c = 0; c < cols; ++c) out[c] = c10::BFloat16(sums[c]);  // round to nearest even
}

template <typename Pass, int kBits, int kG, typename P, typename O>
void panel_rows(const PanelArgs<P>& o, int64_t m, int64_t M, int64_t p, O* out, int64_t N) {
  constexpr int kMax = Pass::kMaxRows;
  float sums[kMax][kPanel];
  const int64_t cols = std::min(kPanel, N - p * kPanel);
  auto store = [&](int rows) {
    for (int j = 0; j < rows; ++j) store_row(sums[j], out + (m + j) * N + p * kPanel, cols);
    m += rows;
  };
  for (; m + kMax <= M; ) Pass::template run<kBits, kG, kMax>(o, p, m, sums), store(kMax);
  if constexpr (kMax > 4) {
    if (M - m >= 4) Pass::template run<kBits, kG, 4>(o, p, m, sums), store(4);
  }
  if constexpr (kMax > 2) {
    if (M - m >= 2) Pass::template run<kBits, kG, 2>(o, p, m, sums), store(2);
  }
  if (M - m >= 1) Pass::template run<kBits, kG, 1>(o, p, m, sums), store(1);
}

// x (M, K) float32 or bf16 times the panels -> out (M, N).
template <typename Pass, int kBits, int kG, typename P, typename O, typename T>
void qmatmul_rows(const T* x, int64_t M, int64_t K, const uint8_t* codes, const P* scale, const P* bias,
                  double offset, O* out, int64_t N) {
  const int64_t groups = K / kG, panels = (N + kPanel - 1) / kPanel, panel_bytes = kPanel * K * kBits / 8;
  const QuantizedX qx = quantize_x_f32<kG>(x, M, K, kBits);
  const PanelArgs<P> o{qx, codes, scale, bias, K, groups, panel_bytes, static_cast<float>(offset)};
  for_row_blocks_and_panels(M, panels, [&](int64_t m, int64_t m_end, int64_t p) {
    if (!Pass::kPrefetches && p + 1 < panels) prefetch_panel(codes, panel_bytes, {scale, bias}, groups, p + 1);
    panel_rows<Pass, kBits, kG>(o, m, m_end, p, out, N);
  });
}

}  // namespace quant
