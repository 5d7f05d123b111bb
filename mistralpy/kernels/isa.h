// Which vector instructions this build may use (-march=native decides).
#pragma once

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#define MISTRALPY_AVX512_BF16 1  // AVX-512 with bf16 dot products (vdpbf16ps)
#endif
