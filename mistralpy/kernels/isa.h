// Which vector instructions this build may use: its ISA level (kernels/isa_level.py passes -DMISTRALPY_LEVEL_*, and
// the level's target flags, which the compiler turns into the __AVX*__ macros checked here). The sources branch on
// the MISTRALPY_* macros below, never on the compiler's macros directly.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#if defined(MISTRALPY_LEVEL_AVX512) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define MISTRALPY_AVX512 1  // AVX-512 F, BW and VL: the attention and element-wise kernels' 16-lane paths
#endif
#if defined(MISTRALPY_AVX512) && defined(__AVX512BF16__)
#define MISTRALPY_AVX512_BF16 1  // AVX-512 with bf16 dot products (vdpbf16ps)
#endif
#if defined(MISTRALPY_AVX512_BF16) && defined(__AVX512VNNI__)
#define MISTRALPY_AVX512_VNNI 1  // and u8 x s8 dot products (vpdpbusd)
#endif
#if defined(MISTRALPY_AVX512_VNNI) && defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__linux__)
#define MISTRALPY_AMX 1  // and AMX int8 tile products (tdpbsud), where the kernel grants the process the tile state
#endif
#if (defined(MISTRALPY_LEVEL_AVX2) || defined(MISTRALPY_LEVEL_AVX2_VNNI)) && defined(__AVX2__) && defined(__FMA__) && \
    defined(__F16C__)
#define MISTRALPY_AVX2 1  // x86-64-v3: 8-lane float32 FMA, u8 x s8 pair products (vpmaddubsw), f16 conversions
#endif
#if defined(MISTRALPY_LEVEL_AVX2_VNNI) && defined(MISTRALPY_AVX2) && defined(__AVXVNNI__)
#define MISTRALPY_AVX2_VNNI 1  // and VEX u8 x s8 dot products (vpdpbusd on ymm)
#endif
#if !defined(MISTRALPY_LEVEL_AVX512) && !defined(MISTRALPY_LEVEL_AVX2) && !defined(MISTRALPY_LEVEL_AVX2_VNNI) && \
    !defined(MISTRALPY_LEVEL_PORTABLE)
#error "build with the flags of an ISA level (kernels/isa_level.py)"
#endif

// The level this build was made for, as isa_level.py names it.
inline const char* isa_level_name() {
#if defined(MISTRALPY_LEVEL_AVX512)
  return "avx512";
#elif defined(MISTRALPY_LEVEL_AVX2_VNNI)
  return "avx2_vnni";
#elif defined(MISTRALPY_LEVEL_AVX2)
  return "avx2";
#else
  return "portable";
#endif
}

// Unroll the next loop completely. Every loop over an array of vector registers (sums kept across a loop) needs it:
// GCC keeps such an array in registers only if each index into it is a constant by its scalar replacement pass, and
// it unrolls some of those loops (the ones setting the sums to zero, or storing them) only later or never. The array
// then stays in memory, and every update of a sum in the hot loop is stored too.
#define MISTRALPY_UNROLL _Pragma("GCC unroll 64")

// f(std::integral_constant<int, n>{}) for a run-time count n in [1, kMax] (below 1 as 1, above kMax as kMax): a kernel
// that keeps a register a row takes its row count as a template argument.
template <int kMax, typename F>
decltype(auto) with_count(int64_t n, F&& f) {
  if constexpr (kMax > 1) {
    if (n < kMax) return with_count<kMax - 1>(n, std::forward<F>(f));
  }
  return f(std::integral_constant<int, kMax>{});
}

// Request the cache line at p into L1. Not _mm_prefetch: GCC deletes a loop whose only statements are
// _mm_prefetch calls (it counts them as having no effect), and a volatile asm statement is never deleted.
inline void prefetch_line(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p);
#endif
}

// Request the cache line at p into L2 (data needed soon, but after what fills L1 first).
inline void prefetch_line_l2(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 2);
#endif
}
