// exp over 16 float32 lanes (AVX-512): glibc's vector exp is only declared under -ffast-math, and the scalar expf
// calls cost more than the rest of the softmax and SiLU loops. 2^(x log2 e) as 2^n * 2^f, |f| <= 1/2, with a
// degree-7 polynomial for 2^f: relative error ~1e-7 plus ~|x| * 6e-8 from rounding x log2 e.
#pragma once
#include "isa.h"
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#ifdef MISTRALPY_AVX512
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7f)), _mm512_set1_ps(-103.9f));
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  // ln(2)^k / k!
  __m512 p = _mm512_set1_ps(1.5252734e-5f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.5403530e-4f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022651e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// a[i] = exp(a[i] + add) for n floats.
inline void exp_inplace(float* a, int64_t n, float add) {
  const __m512 v = _mm512_set1_ps(add);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(a + i, exp16(_mm512_add_ps(_mm512_loadu_ps(a + i), v)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(a + i, m, exp16(_mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), v)));
  }
}
#endif

#ifdef MISTRALPY_AVX2
// exp over 8 float32 lanes (AVX2, for the SiLU and the softmax), exp16's polynomial; without scalef, 2^n is built in
// the exponent bits, so x is clamped to [-86, 88.7] (2^n normal: n in [-125, 128] as 2 * 2^(n-1)). Below e^-86
// (~4e-38) the result stays e^-86: nothing next to 1 (SiLU's 1 + e^-x; the softmax's largest term, e^0).
inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.7f)), _mm256_set1_ps(-86.0f));
  const __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f));
  const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(t, n);
  __m256 p = _mm256_set1_ps(1.5252734e-5f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.5403530e-4f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.3333558e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6181291e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5504109e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022651e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314718e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(126)), 23);
  return _mm256_mul_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), _mm256_set1_ps(2.0f));  // p 2^(n-1) 2
}

// a[i] = exp(a[i] + add) for n floats, the last few through masked loads: every lane by exp8, wherever it sits.
inline void exp_inplace(float* a, int64_t n, float add) {
  const __m256 v = _mm256_set1_ps(add);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(a + i, exp8(_mm256_add_ps(_mm256_loadu_ps(a + i), v)));
  if (i < n) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - i)), lanes);
    _mm256_maskstore_ps(a + i, m, exp8(_mm256_add_ps(_mm256_maskload_ps(a + i, m), v)));
  }
}
#endif
