// The avx512 level's quantized matmul (quant_matmul.cpp dispatches to it): x rows quantized from bf16 with AVX-512,
// then vpdpbusd over the panels, 16 weight rows in the lanes of a zmm. Its arithmetic: quant_matmul.cpp's header.
#pragma once
#include "isa.h"
#ifdef MISTRALPY_AVX512_VNNI
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "balanced_for.h"
#include "qmatmul_amx.h"
#include "quant_common.h"
#include "quant_x.h"

namespace avx512 {

using quant::kPanel;
constexpr int kMaxRows = 8;  // x rows per pass over a panel: their sums stay in registers

using quant::QuantizedX;

// Where the codes of a group's k sit in the lanes of its 64-byte blocks (quant_common.h), per 8 k: a 4-bit lane's
// low nibbles are k0 k4 k1 k5 and its high nibbles k2 k6 k3 k7; an 8-bit lane's bytes are k0 k2 k1 k3.
inline __m128i lane_order(int bits) {
  return bits == 4 ? _mm_setr_epi8(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15)
                   : _mm_setr_epi8(0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15);
}

// 16 bf16 as float32 (exact).
inline __m512 load_bf16(const uint16_t* x) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x))), 16));
}

// Rows [begin, end) of x quantized into `out`, per group of kG (16 or 32: one or two zmm of 16 values).
template <int kG>
void quantize_rows(const uint16_t* x, int64_t begin, int64_t end, int64_t K, int bits, QuantizedX& out) {
  constexpr int kParts = kG / 16;
  const int64_t groups = K / kG;
  const __m128i order = lane_order(bits);
  auto* q = reinterpret_cast<__m128i*>(out.q.data());
  for (int64_t i = begin * groups; i < end * groups; ++i) {
    __m512 v[kParts];
    __m512 amax16 = _mm512_setzero_ps();
    for (int h = 0; h < kParts; ++h) {
      v[h] = load_bf16(x + i * kG + 16 * h);
      amax16 = _mm512_max_ps(amax16, _mm512_abs_ps(v[h]));
    }
    const float amax = _mm512_reduce_max_ps(amax16);
    const __m512 inv = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    __m512i sum = _mm512_setzero_si512();
    for (int h = 0; h < kParts; ++h) {
      const __m512i codes = _mm512_cvtps_epi32(_mm512_mul_ps(v[h], inv));
      sum = _mm512_add_epi32(sum, codes);
      _mm_storeu_si128(q + kParts * out.at(i / groups, i % groups) + h,
                       _mm_shuffle_epi8(_mm512_cvtepi32_epi8(codes), order));
    }
    out.set(i / groups, i % groups, amax / 127.0f, _mm512_reduce_add_epi32(sum));
  }
}

template <int kG>
QuantizedX quantize_x(const uint16_t* x, int64_t M, int64_t K, int bits) {
  const int64_t groups = K / kG;
  QuantizedX out{M, std::vector<uint32_t>(M * K / 4), std::vector<float>(M * groups),
                 std::vector<float>(M * groups), {}};
  // a group takes ~6 ns: threads start to pay from a few hundred groups on
  at::parallel_for(0, M, std::max<int64_t>(1, 512 / groups),
                   [&](int64_t begin, int64_t end) { quantize_rows<kG>(x, begin, end, K, bits, out); });
  return out;
}

// The inputs of one call: x quantized, and the weights.
template <typename P, typename O>
struct Operands {
  const QuantizedX& x;
  const uint8_t* codes;
  const P* scale;
  const P* bias;
  int64_t K, groups, panel_bytes, N;
  float offset;
  O* out;
};

// out[m + j, 16 p .. 16 p + 16) = acc[j] for j < rows (fewer columns in a last, partial panel).
template <typename P, typename O>
void store_rows(const Operands<P, O>& o, int64_t p, int64_t m, int rows, const __m512* acc) {
  const int64_t cols = std::min(kPanel, o.N - p * kPanel);
  const __mmask16 mask = cols >= kPanel ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  for (int j = 0; j < rows; ++j) {
    O* out = o.out + (m + j) * o.N + p * kPanel;
    if constexpr (std::is_same_v<O, float>) {
      _mm512_mask_storeu_ps(out, mask, acc[j]);
    } else {
      _mm256_mask_storeu_epi16(out, mask, (__m256i)_mm512_cvtneps_pbh(acc[j]));
    }
  }
}

// Rows [m, m + MR) of x times panel p: out[m + j, 16 p .. 16 p + 16). Groups of kG weights. With kAhead, the pass
// also requests the next panel's lines, one a block as it reads the block, and the parameters' lines a group at a
// time (as the avx2 level's pass does).
template <int kBits, int kG, int MR, bool kAhead, typename P, typename O>
void panel_pass(const Operands<P, O>& o, int64_t p, int64_t m) {
  constexpr int kBlocks = kG * kBits / 32;  // 64-byte blocks of codes per group: 8 (4 bits) or 4 (8 bits) k each
  constexpr int kChains = MR <= 2 ? 2 : 1;     // independent dot-product chains per x row
  const int64_t G = o.groups;
  const uint8_t* codes = o.codes + p * o.panel_bytes;
  const P* scale = o.scale + p * G * kPanel;
  const P* bias = o.bias != nullptr ? o.bias + p * G * kPanel : nullptr;
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  const __m512 offset = _mm512_set1_ps(o.offset);
  __m512 acc[MR];
  MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    if constexpr (kAhead) quant::prefetch_group_params(G, {scale, bias}, g);
    const uint32_t* x = o.x.template codes<kG>(m, g);  // row j's at x + j kG / 4
    __m512i dot[kChains][MR];
    MISTRALPY_UNROLL for (int c = 0; c < kChains; ++c) {
      MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) dot[c][j] = _mm512_setzero_si512();
    }
    for (int b = 0; b < kBlocks; ++b) {
      const uint8_t* line = codes + (g * kBlocks + b) * 64;
      if constexpr (kAhead) prefetch_line(line + o.panel_bytes);  // never faults, past the last panel too
      const __m512i block = _mm512_loadu_si512(line);
      if constexpr (kBits == 4) {
        const __m512i low = _mm512_and_si512(block, nibble);
        const __m512i high = _mm512_and_si512(_mm512_srli_epi32(block, 4), nibble);
        MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) {
          const uint32_t* x_j = x + j * (kG / 4);
          dot[0][j] = _mm512_dpbusd_epi32(dot[0][j], low, _mm512_set1_epi32(static_cast<int>(x_j[2 * b])));
          dot[kChains - 1][j] =
              _mm512_dpbusd_epi32(dot[kChains - 1][j], high, _mm512_set1_epi32(static_cast<int>(x_j[2 * b + 1])));
        }
      } else {
        MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) {
          const uint32_t* x_j = x + j * (kG / 4);
          dot[b % kChains][j] =
              _mm512_dpbusd_epi32(dot[b % kChains][j], block, _mm512_set1_epi32(static_cast<int>(x_j[b])));
        }
      }
    }
    const __m512 a = quant::load16(scale + g * kPanel);
    const __m512 b_g = bias != nullptr ? quant::load16(bias + g * kPanel) : _mm512_setzero_ps();
    const __m512 z = _mm512_fmadd_ps(a, offset, b_g);  // a c + b
    MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) {
      const __m512i s = kChains == 2 ? _mm512_add_epi32(dot[0][j], dot[kChains - 1][j]) : dot[0][j];
      const int64_t i = o.x.at(m + j, g);
      acc[j] = _mm512_fmadd_ps(z, _mm512_set1_ps(o.x.dq[i]), acc[j]);
      acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(a, _mm512_set1_ps(o.x.d[i])), _mm512_cvtepi32_ps(s), acc[j]);
    }
  }
  store_rows(o, p, m, MR, acc);
}

template <int kBits, int kG, int MR, typename P, typename O>
void panel_pass(const Operands<P, O>& o, int64_t p, int64_t m, bool ahead) {
  if (ahead) {
    panel_pass<kBits, kG, MR, true>(o, p, m);
  } else {
    panel_pass<kBits, kG, MR, false>(o, p, m);
  }
}

// Rows [m, M) of x times panel p, kMaxRows at a time, then passes of 4, 2 and 1 rows; with `ahead`, the first pass
// requests the next panel.
template <int kBits, int kG, typename P, typename O>
void panel_passes(const Operands<P, O>& o, int64_t m, int64_t M, int64_t p, bool ahead) {
  for (; m + kMaxRows <= M; m += kMaxRows, ahead = false) panel_pass<kBits, kG, kMaxRows>(o, p, m, ahead);
  if (M - m >= 4) panel_pass<kBits, kG, 4>(o, p, m, ahead), m += 4, ahead = false;
  if (M - m >= 2) panel_pass<kBits, kG, 2>(o, p, m, ahead), m += 2, ahead = false;
  if (M - m >= 1) panel_pass<kBits, kG, 1>(o, p, m, ahead);
}

// Up to this many x rows, the next panel is requested a line a block by the first pass over a panel (kAhead); above,
// all of it before the passes (prefetch_panel). Measured against prefetch_panel at every size on a Zen 4 EPYC, 1
// thread, the matmuls of a decode step of the embedded model's shapes (30 layers and the LM head, streamed from
// memory), same bits: 1 row within noise, 8 rows 30% faster, 16 rows 9-27%, 32 rows 12%, 64 rows 4-18%; 128 rows the
// same, 512 rows 5% slower.
constexpr int64_t kAheadRows = 64;

#ifdef MISTRALPY_AMX
// Rows [m, m + 16) of x times panel p with AMX tiles (qmatmul_amx.h), b: the panel's B tiles. Each group's sums go
// through panel_pass's float steps, in the same order: the same results, bit for bit. A group's steps run while the
// next group's tile product is formed.
template <int kG, typename P, typename O>
void tile_pass(const Operands<P, O>& o, int64_t p, int64_t m, const uint8_t* b) {
  const int64_t G = o.groups;
  const P* scale = o.scale + p * G * kPanel;
  const P* bias = o.bias != nullptr ? o.bias + p * G * kPanel : nullptr;
  const __m512 offset = _mm512_set1_ps(o.offset);
  alignas(64) int32_t sums[2][16][16];
  __m512 acc[16];
  for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t g = 0; g <= G; ++g) {
    if (g < G) {
      const uint32_t* x = o.x.template codes<kG>(m, g);  // the 16 rows' codes of group g, kG bytes a row
      amx::group_sums<kG>(reinterpret_cast<const uint8_t*>(x), b, g, sums[g % 2]);
    }
    if (g == 0) continue;
    const int64_t f = g - 1;  // the group whose float steps run now
    const __m512 a = quant::load16(scale + f * kPanel);
    const __m512 b_g = bias != nullptr ? quant::load16(bias + f * kPanel) : _mm512_setzero_ps();
    const __m512 z = _mm512_fmadd_ps(a, offset, b_g);  // a c + b
    for (int j = 0; j < 16; ++j) {
      const int64_t i = o.x.at(m + j, f);
      const __m512 s = _mm512_cvtepi32_ps(_mm512_load_si512(sums[f % 2][j]));
      acc[j] = _mm512_fmadd_ps(z, _mm512_set1_ps(o.x.dq[i]), acc[j]);
      acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(a, _mm512_set1_ps(o.x.d[i])), s, acc[j]);
    }
  }
  store_rows(o, p, m, 16, acc);
}
#endif

// x quantized (quantize_x, or quant_x.h for float32 rows) times the panels -> out (M, N).
template <int kBits, int kG, typename P, typename O>
void qmatmul_impl(const QuantizedX& qx, int64_t M, int64_t K, const uint8_t* codes, const P* scale, const P* bias,
                  double offset, O* out, int64_t N) {
  const int64_t groups = K / kG, panels = (N + kPanel - 1) / kPanel;
  const int64_t panel_bytes = kPanel * K * kBits / 8;
  const Operands<P, O> o{qx, codes, scale, bias, K, groups, panel_bytes, N, static_cast<float>(offset), out};
#ifdef MISTRALPY_AMX
  if (M >= 16 && amx::available()) {
    quant::for_row_blocks_and_panels(M, panels, [&](int64_t m, int64_t m_end, int64_t p) {
      thread_local std::vector<uint8_t> b;  // the panel's B tiles
      b.resize(groups * kG * 16);
      amx::configure<kG>();
      amx::unpack_panel<kBits, kG>(codes + p * panel_bytes, groups, b.data());
      for (; m + 16 <= m_end; m += 16) tile_pass<kG>(o, p, m, b.data());
      _tile_release();  // a thread holding no tile state does not make the kernel save it at every switch
      panel_passes<kBits, kG>(o, m, m_end, p, false);
    });
    return;
  }
#endif
  // the next panel's codes and group parameters are requested while this one is multiplied: the hardware
  // prefetchers alone leave a one-row matmul waiting on memory
  const bool ahead = M <= kAheadRows;
  quant::for_row_blocks_and_panels(M, panels, [&](int64_t m, int64_t m_end, int64_t p) {
    if (!ahead && p + 1 < panels) quant::prefetch_panel(codes, panel_bytes, {scale, bias}, groups, p + 1);
    panel_passes<kBits, kG>(o, m, m_end, p, ahead);
  });
}

}  // namespace avx512
#endif
