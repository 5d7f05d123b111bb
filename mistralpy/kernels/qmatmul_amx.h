// AMX int8 tiles for the avx512 level's quantized matmul (qmatmul_avx512.h's tile_pass): 16 rows of x against a
// panel's 16 weight rows, one tile product per group of kG k. A: the 16 rows' s8 codes of the group (kG bytes a row,
// in the lane order quantize_x wrote them); B: the panel's u8 codes of the group, kG / 4 rows of 16 x 4 bytes (a
// 64-byte block of 8-bit codes is one such row; a 4-bit block gives two, its low and its high nibbles); C: the 16 x 16
// int32 sums, tdpbsud's, the same integers vpdpbusd forms (exact in any order), so the results keep their bits.
// Linux gives a process the tiles' state only when asked (arch_prctl ARCH_REQ_XCOMP_PERM); if it refuses, the VNNI
// passes run.
#pragma once
#include "isa.h"
#ifdef MISTRALPY_AMX
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

namespace amx {

// Whether this process may use the tiles: asked once.
inline bool available() {
  constexpr int kReqXcompPerm = 0x1023, kXtileData = 18;  // arch_prctl's request, the tile data's state component
  static const bool granted = syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
  return granted;
}

// The tile shapes of one group of kG k. Tiles 0 and 3: C; 1 and 4: A; 2 and 5: B (two sets, so that consecutive
// groups overlap). A constant in memory: GCC dropped the stores into a local copy as dead before ldtilecfg read it.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t bytes[16];
  uint8_t rows[16];
  constexpr explicit TileConfig(int g)
      : bytes{64, static_cast<uint16_t>(g), 64, 64, static_cast<uint16_t>(g), 64},
        rows{16, 16, static_cast<uint8_t>(g / 4), 16, 16, static_cast<uint8_t>(g / 4)} {}
};

// This thread's tile configuration for groups of kG (other code, oneDNN's, may have loaded its own since).
template <int kG>
void configure() {
  static constexpr TileConfig config(kG);
  _tile_loadconfig(&config);
}

// A panel's codes (groups x kG k) as B tiles, group after group: kG / 4 rows of 64 bytes each.
template <int kBits, int kG>
void unpack_panel(const uint8_t* codes, int64_t groups, uint8_t* b) {
  if constexpr (kBits == 8) {
    std::memcpy(b, codes, groups * kG * 16);
  } else {
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    for (int64_t i = 0; i < groups * kG / 8; ++i) {
      const __m512i block = _mm512_loadu_si512(codes + i * 64);
      _mm512_storeu_si512(b + i * 128, _mm512_and_si512(block, nibble));
      _mm512_storeu_si512(b + i * 128 + 64, _mm512_and_si512(_mm512_srli_epi32(block, 4), nibble));
    }
  }
}

// sums[i][n] = group g's integer sum of x row i (16 rows' codes of the group at x, kG bytes a row: QuantizedX's
// group-major layout) with the panel's weight row n. Groups alternate between the two tile sets, so that a group's
// product runs while the one before is stored.
template <int kG>
void group_sums(const uint8_t* x, const uint8_t* b, int64_t g, int32_t (*sums)[16]) {
  if (g % 2 == 0) {
    _tile_zero(0);
    _tile_loadd(1, x, kG);
    _tile_loadd(2, b + g * kG * 16, 64);
    _tile_dpbsud(0, 1, 2);
    _tile_stored(0, sums, 64);
  } else {
    _tile_zero(3);
    _tile_loadd(4, x, kG);
    _tile_loadd(5, b + g * kG * 16, 64);
    _tile_dpbsud(3, 4, 5);
    _tile_stored(3, sums, 64);
  }
}

}  // namespace amx
#endif
