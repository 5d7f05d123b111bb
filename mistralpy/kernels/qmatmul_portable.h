// The portable level's pass of the quantized matmul (qmatmul_rows.h): plain C++ over a panel's 16 lanes, which the
// compiler vectorises for its target (the integer sums; the fused multiply-adds are std::fma, one rounding each, as
// the reference's). A block's lane r holds four bytes of row r (quant_common.h); x's codes are in the same order.
#pragma once
#include <cmath>
#include <cstdint>

#include "qmatmul_rows.h"

namespace quant {

struct PortablePass {
  static constexpr int kMaxRows = 4;
  static constexpr bool kPrefetches = false;  // qmatmul_rows.h requests each next panel

  template <int kBits, int kG, int MR, typename P>
  static void run(const PanelArgs<P>& o, int64_t p, int64_t m, float (*out)[kPanel]) {
    constexpr int kBlocks = kG * kBits / 32;  // 64-byte blocks of codes per group
    const int64_t G = o.groups;
    const uint8_t* codes = o.codes + p * o.panel_bytes;
    const P* scale = o.scale + p * G * kPanel;
    const P* bias = o.bias != nullptr ? o.bias + p * G * kPanel : nullptr;
    for (int j = 0; j < MR; ++j) {
      for (int r = 0; r < kPanel; ++r) out[j][r] = 0.0f;
    }
    for (int64_t g = 0; g < G; ++g) {
      int32_t sums[MR][kPanel] = {};
      for (int b = 0; b < kBlocks; ++b) {
        const uint8_t* block = codes + (g * kBlocks + b) * 64;
        for (int j = 0; j < MR; ++j) {
          // 8 codes a block (4 bits), 4 (8 bits)
          const int8_t* xq = reinterpret_cast<const int8_t*>(o.x.template codes<kG>(m + j, g)) + b * 32 / kBits;
          for (int r = 0; r < kPanel; ++r) {
            int32_t s = 0;
            for (int i = 0; i < 4; ++i) {
              const int32_t byte = block[4 * r + i];
              s += kBits == 4 ? (byte & 0x0F) * xq[i] + (byte >> 4) * xq[4 + i] : byte * xq[i];
            }
            sums[j][r] += s;
          }
        }
      }
      for (int r = 0; r < kPanel; ++r) {
        const float a = static_cast<float>(scale[g * kPanel + r]);
        const float z = std::fma(a, o.offset, bias != nullptr ? static_cast<float>(bias[g * kPanel + r]) : 0.0f);
        for (int j = 0; j < MR; ++j) {
          const int64_t i = o.x.at(m + j, g);
          const float ad = a * o.x.d[i];
          out[j][r] = std::fma(z, o.x.dq[i], out[j][r]);
          out[j][r] = std::fma(ad, static_cast<float>(sums[j][r]), out[j][r]);
        }
      }
    }
  }
};

}  // namespace quant
