// Which vector instructions this build may use (-march=native decides).
#pragma once

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#define MISTRALPY_AVX512_BF16 1  // AVX-512 with bf16 dot products (vdpbf16ps)
#endif
#if defined(MISTRALPY_AVX512_BF16) && defined(__AVX512VNNI__)
#define MISTRALPY_AVX512_VNNI 1  // and u8 x s8 dot products (vpdpbusd)
#endif

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
