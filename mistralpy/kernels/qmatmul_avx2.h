// The avx2 level's pass of the quantized matmul (qmatmul_rows.h), llama.cpp's AVX2 integer dot products on this
// project's panels: a 64-byte block is two ymm of 8 lanes (rows 0-7, 8-15), each lane four u8 codes of its row.
// vpmaddubsw multiplies them by four s8 codes of x (broadcast) into two s16 pair sums a lane, vpmaddwd with ones adds
// the pair into one s32: vpdpbusd in two steps.
//   4 bits: a pair sum is at most 2 * 15 * 127 = 3810, so a group's 8 (or 4) products add up in s16 without overflow
//     (30480 < 32767) before one vpmaddwd.
//   8 bits: codes up to 255 would overflow a pair (2 * 255 * 127); the weight is taken signed, w = code - 128, and
//     |w| (u8, up to 128) multiplies x times w's sign (x is in [-127, 127]: pairs at most 2 * 128 * 127), as
//     llama.cpp's sign trick; S = S' + 128 Q after.
// With AVX-VNNI (the avx2_vnni level) vpdpbusd does each lane's four products and their sum into s32 in one
// instruction: 4-bit sums need no vpmaddwd, 8-bit codes go in as u8 (S directly, no sign trick). The integer sums
// are the same numbers either way, so every variant stays bit-exact with qmatmul_reference.
// Then per group, as every level: acc = fma(a c + b, d Q, acc), acc = fma(a d, float(S), acc).
// The pass requests the next panel's lines itself, one a block as it reads the block one panel before (kPrefetches):
// a whole panel requested at once (qmatmul_rows.h's prefetch_panel) stalled on the few misses a core keeps in flight
// (a quarter of a decode step's matmul time at 1 thread); spread out, the layers' matmuls at batch 1 took ~12% less.
#pragma once
#include "isa.h"
#ifdef MISTRALPY_AVX2
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "qmatmul_rows.h"

namespace quant {

// A group's integer sums of 4-bit codes (u8, < 16) times x's s8 codes, 4-byte lanes: s16 pair sums (at most 8 a
// group) without AVX-VNNI, s32 with it.
struct Dot4 {
#ifdef MISTRALPY_AVX2_VNNI
  static __m256i add(__m256i s, __m256i w, __m256i x) { return _mm256_dpbusd_avx_epi32(s, w, x); }
  static __m256i first(__m256i w, __m256i x) { return add(_mm256_setzero_si256(), w, x); }
  static __m256i total(__m256i s) { return s; }
#else
  static __m256i add(__m256i s, __m256i w, __m256i x) { return _mm256_add_epi16(s, _mm256_maddubs_epi16(w, x)); }
  static __m256i first(__m256i w, __m256i x) { return _mm256_maddubs_epi16(w, x); }
  static __m256i total(__m256i s) { return _mm256_madd_epi16(s, _mm256_set1_epi16(1)); }
#endif
};

// The same for 8-bit codes: S = sum(code x) in s32. Without AVX-VNNI the products are taken of w = code - 128
// (|w| as u8, x with w's sign) and total() adds 128 sum(x).
struct Dot8 {
#ifdef MISTRALPY_AVX2_VNNI
  using Codes = __m256i;
  static Codes codes(__m256i w) { return w; }
  static __m256i add(__m256i s, Codes w, __m256i x) { return _mm256_dpbusd_avx_epi32(s, w, x); }
  static __m256i total(__m256i s, int32_t) { return s; }
#else
  struct Codes {
    __m256i magnitude, sign;
  };
  static Codes codes(__m256i w) {
    const __m256i signed_w = _mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80)));  // code - 128 as s8
    return {_mm256_abs_epi8(signed_w), signed_w};  // |w| up to 128: as u8
  }
  static __m256i add(__m256i s, Codes w, __m256i x) {
    const __m256i pairs = _mm256_maddubs_epi16(w.magnitude, _mm256_sign_epi8(x, w.sign));
    return _mm256_add_epi32(s, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
  static __m256i total(__m256i s, int32_t x_sum) { return _mm256_add_epi32(s, _mm256_set1_epi32(128 * x_sum)); }
#endif
};

// An empty asm that takes the sum in a register and gives it back: GCC cannot move the sum's additions across it.
// Without it, with a group's blocks unrolled, GCC formed the group's products first and kept them on the stack.
inline void in_register(__m256i& s) { asm("" : "+x"(s)); }

struct Avx2Pass {
  static constexpr int kMaxRows = 8;
  static constexpr bool kPrefetches = true;
#ifdef MISTRALPY_AVX2_VNNI
  static constexpr bool kVnni = true;
#else
  static constexpr bool kVnni = false;
#endif

  static __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
  static __m256 load8(const c10::Half* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }

  template <int kBits, int kG, int MR, typename P>
  static void run(const PanelArgs<P>& o, int64_t p, int64_t m, float (*out)[kPanel]) {
    // Measured (thread time): halves are faster for 4 bits without VNNI and 8 bits with it; two passes of 4 rows
    // for 8 bits without VNNI (~4%) and for 4 bits with it (3-9%: each broadcast of x serves both halves).
    if constexpr ((kBits == 4) != kVnni && MR >= 4) {
      run_halves<kBits, kG, MR>(o, p, m, out);
    } else if constexpr (MR > 4) {
      run_both<kBits, kG, 4>(o, p, m, out);
      run_both<kBits, kG, MR - 4>(o, p, m + 4, out + 4);
    } else {
      run_both<kBits, kG, MR>(o, p, m, out);
    }
  }

  // Both halves of a block as it streams by (few rows; 4 at a time for 4 bits with VNNI), the next panel requested a
  // line a block.
  template <int kBits, int kG, int MR, typename P>
  static void run_both(const PanelArgs<P>& o, int64_t p, int64_t m, float (*out)[kPanel]) {
    constexpr int kBlocks = kG * kBits / 32;
    const int64_t G = o.groups;
    const uint8_t* codes = o.codes + p * o.panel_bytes;
    const P* scale = o.scale + p * G * kPanel;
    const P* bias = o.bias != nullptr ? o.bias + p * G * kPanel : nullptr;
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    const __m256 offset = _mm256_set1_ps(o.offset);
    __m256 acc[MR][2];
    MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
      prefetch_group_params(G, {scale, bias}, g);
      const uint32_t* x = o.x.template codes<kG>(m, g);  // row j's at x + j kG / 4
      __m256i s[MR][2];
      MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) s[j][0] = s[j][1] = _mm256_setzero_si256();
      for (int b = 0; b < kBlocks; ++b) {
        const uint8_t* block = codes + (g * kBlocks + b) * 64;
        prefetch_line(block + o.panel_bytes);  // never faults, past the last panel too
        MISTRALPY_UNROLL for (int h = 0; h < 2; ++h) {
          const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32 * h));
          if constexpr (kBits == 4) {
            const __m256i low = _mm256_and_si256(w, nibble);
            const __m256i high = _mm256_and_si256(_mm256_srli_epi16(w, 4), nibble);
            MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) {
              const uint32_t* x_j = x + j * (kG / 4);
              s[j][h] = Dot4::add(s[j][h], low, _mm256_set1_epi32(static_cast<int>(x_j[2 * b])));
              s[j][h] = Dot4::add(s[j][h], high, _mm256_set1_epi32(static_cast<int>(x_j[2 * b + 1])));
            }
          } else {
            const Dot8::Codes c = Dot8::codes(w);
            MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) {
              const uint32_t* x_j = x + j * (kG / 4);
              s[j][h] = Dot8::add(s[j][h], c, _mm256_set1_epi32(static_cast<int>(x_j[b])));
            }
          }
        }
      }
      MISTRALPY_UNROLL for (int h = 0; h < 2; ++h) {
        const __m256 a = load8(scale + g * kPanel + 8 * h);
        const __m256 b_g = bias != nullptr ? load8(bias + g * kPanel + 8 * h) : _mm256_setzero_ps();
        const __m256 z = _mm256_fmadd_ps(a, offset, b_g);  // a c + b
        MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) {
          const int64_t i = o.x.at(m + j, g);
          const __m256i sum = kBits == 4 ? Dot4::total(s[j][h]) : Dot8::total(s[j][h], o.x.sum[i]);
          acc[j][h] = _mm256_fmadd_ps(z, _mm256_set1_ps(o.x.dq[i]), acc[j][h]);
          acc[j][h] = _mm256_fmadd_ps(_mm256_mul_ps(a, _mm256_set1_ps(o.x.d[i])), _mm256_cvtepi32_ps(sum), acc[j][h]);
        }
      }
    }
    MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) {
      _mm256_storeu_ps(out[j], acc[j][0]);
      _mm256_storeu_ps(out[j] + 8, acc[j][1]);
    }
  }

  // Many rows (batches, prefill): one half of the panel (8 weight rows, one ymm) at a time, so that each weight
  // vector loaded serves MR rows of x and a group's integer sums (MR ymm) stay in registers (both halves' sums of 4
  // rows spilled to the stack); the float sums wait in `out` (L1) from group to group. A lane's float operations are
  // run_both's, in the same order; the panel's codes, read twice, stay in L1 (at most 16 x 1536 bytes).
  template <int kBits, int kG, int MR, typename P>
  static void run_halves(const PanelArgs<P>& o, int64_t p, int64_t m, float (*out)[kPanel]) {
    for (int j = 0; j < MR; ++j) {
      _mm256_storeu_ps(out[j], _mm256_setzero_ps());
      _mm256_storeu_ps(out[j] + 8, _mm256_setzero_ps());
    }
    run_half<kBits, kG, MR, 0>(o, p, m, out);
    run_half<kBits, kG, MR, 1>(o, p, m, out);
  }

  // Half h of the panel for MR rows of x, added to out; the first half also requests the next panel's lines.
  template <int kBits, int kG, int MR, int h, typename P>
  static void run_half(const PanelArgs<P>& o, int64_t p, int64_t m, float (*out)[kPanel]) {
    constexpr int kBlocks = kG * kBits / 32;
    const int64_t G = o.groups;
    const uint8_t* codes = o.codes + p * o.panel_bytes;
    const P* scale = o.scale + p * G * kPanel;
    const P* bias = o.bias != nullptr ? o.bias + p * G * kPanel : nullptr;
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    const __m256 offset = _mm256_set1_ps(o.offset);
    // x's numbers through locals: read through o, they were loaded again after every store to out
    const int64_t rows = o.x.rows;
    const int* x = reinterpret_cast<const int*>(o.x.q.data()) + m * (kG / 4);
    const float* d = o.x.d.data() + m;
    const float* dq = o.x.dq.data() + m;
    const int32_t* q_sum = o.x.sum.data() + m;
    for (int64_t g = 0; g < G; ++g) {
      const uint8_t* group = codes + g * kBlocks * 64;
      if constexpr (h == 0) prefetch_next(o, group, scale, bias, g, kBlocks);
      const int* xg = x + g * rows * (kG / 4);  // o.x.codes<kG>(m + j, g) = xg + j kG / 4
      __m256i s[MR];
      MISTRALPY_UNROLL for (int b = 0; b < kBlocks; ++b) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(group + b * 64 + 32 * h));
        if constexpr (kBits == 4) {
          // the low nibbles for every row, then the high: with one of the two live at a time GCC keeps two more sums
          // in registers; the first block's products need no adding to zeros (one vpaddw fewer)
          const __m256i low = _mm256_and_si256(w, nibble);
          MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) {
            const __m256i x_low = _mm256_set1_epi32(xg[j * (kG / 4) + 2 * b]);
            s[j] = b == 0 ? Dot4::first(low, x_low) : Dot4::add(s[j], low, x_low);
            in_register(s[j]);
          }
          const __m256i high = _mm256_and_si256(_mm256_srli_epi16(w, 4), nibble);
          MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) {
            s[j] = Dot4::add(s[j], high, _mm256_set1_epi32(xg[j * (kG / 4) + 2 * b + 1]));
            in_register(s[j]);
          }
        } else {
          const Dot8::Codes c = Dot8::codes(w);
          MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) {
            s[j] = Dot8::add(b == 0 ? _mm256_setzero_si256() : s[j], c, _mm256_set1_epi32(xg[j * (kG / 4) + b]));
            in_register(s[j]);
          }
        }
      }
      const __m256 a = load8(scale + g * kPanel + 8 * h);
      const __m256 z = _mm256_fmadd_ps(a, offset, bias != nullptr ? load8(bias + g * kPanel + 8 * h)
                                                                   : _mm256_setzero_ps());
      MISTRALPY_UNROLL for (int j = 0; j < MR; ++j) {
        const int64_t i = g * rows + j;  // o.x.at(m + j, g) - m
        const __m256i sum = kBits == 4 ? Dot4::total(s[j]) : Dot8::total(s[j], q_sum[i]);
        __m256 acc = _mm256_loadu_ps(out[j] + 8 * h);
        acc = _mm256_fmadd_ps(z, _mm256_set1_ps(dq[i]), acc);
        acc = _mm256_fmadd_ps(_mm256_mul_ps(a, _mm256_set1_ps(d[i])), _mm256_cvtepi32_ps(sum), acc);
        _mm256_storeu_ps(out[j] + 8 * h, acc);
      }
    }
  }

  // The next panel's lines of group g (codes, and the parameters a line at a time), requested one pass ahead.
  template <typename P>
  static void prefetch_next(const PanelArgs<P>& o, const uint8_t* group, const P* scale, const P* bias, int64_t g,
                            int blocks) {
    for (int b = 0; b < blocks; ++b) prefetch_line(group + b * 64 + o.panel_bytes);
    prefetch_group_params(o.groups, {scale, bias}, g);
  }
};

}  // namespace quant
#endif
