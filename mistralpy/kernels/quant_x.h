// x quantized per weight group to int8 for the quantized matmul (quant_matmul.cpp), as llama.cpp quantizes its
// activations: per row and group of kG values, d = max |x| / 127, q_k = round(x_k * (127 / max |x|)) (half to even),
// Q = sum q_k. The codes are stored in the weight lanes' k order (quant_common.h), four to a u32: a 4-bit lane's low
// nibbles are k0 k4 k1 k5 and its high nibbles k2 k6 k3 k7 (per 8 k); an 8-bit lane's bytes are k0 k2 k1 k3.
// For float32 rows on every level and bf16 rows below avx512 (which has its own bf16 quantizer): 8-lane vectors on
// the avx2 levels (their quantized matmul's x), plain C++ otherwise; the same bits everywhere: every quantizer
// computes the same float32 operations.
#pragma once
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "isa.h"
#ifdef MISTRALPY_AVX2
#include <immintrin.h>

#include "vec_avx2.h"
#endif

namespace quant {

// x quantized per group: each row's kG s8 codes of the group (four to a u32, in the weight lanes' order), and d, d Q
// and Q. Group-major (at): a pass finds its rows' codes and numbers of a group side by side, at one pointer and
// constant offsets (row-major, the avx2 pass kept a pointer a row, spilled them, and ran ~9% slower).
struct QuantizedX {
  int64_t rows;
  std::vector<uint32_t> q;
  std::vector<float> d, dq;
  std::vector<int32_t> sum;

  int64_t at(int64_t m, int64_t g) const { return g * rows + m; }
  // row m's codes of group g (kG of them)
  template <int kG>
  const uint32_t* codes(int64_t m, int64_t g) const {
    return q.data() + at(m, g) * (kG / 4);
  }
  void set(int64_t m, int64_t g, float d_g, int32_t sum_g) {
    d[at(m, g)] = d_g;
    dq[at(m, g)] = d_g * static_cast<float>(sum_g);
    if (!sum.empty()) sum[at(m, g)] = sum_g;
  }
};

// Where code i of 16 consecutive k goes in the lanes' order (k = order[i]; a byte shuffle's control).
inline const int8_t* lane_order16(int bits) {
  static constexpr int8_t kFour[16] = {0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15};
  static constexpr int8_t kEight[16] = {0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15};
  return bits == 4 ? kFour : kEight;
}

#ifdef MISTRALPY_AVX2
// One group of kG values quantized as the scalar loop below does, with the same float32 operations (one multiply by
// 127 / max |x|, rounding half to even: vcvtps2dq under the default rounding mode); returns max |x| and the codes'
// sum. The codes of each 16 go to q in the lanes' order (a byte shuffle by lane_order16).
template <int kG, typename T>
float quantize_group_avx2(const T* x, const __m128i order, int8_t* q, int32_t& sum) {
  constexpr int kVecs = kG / 8;
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 v[kVecs], m = _mm256_setzero_ps();
  for (int i = 0; i < kVecs; ++i) {
    v[i] = vec::load8_f32(x + 8 * i);
    m = _mm256_max_ps(m, _mm256_and_ps(v[i], magnitude));
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
  const __m256 inv = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
  __m256i total = _mm256_setzero_si256();
  for (int i = 0; i < kVecs; i += 2) {
    const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));
    const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(v[i + 1], inv));
    total = _mm256_add_epi32(total, _mm256_add_epi32(a, b));
    const __m256i pairs = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);  // a0-7, b0-7 as s16
    const __m128i codes = _mm_packs_epi16(_mm256_castsi256_si128(pairs), _mm256_extracti128_si256(pairs, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 8 * i), _mm_shuffle_epi8(codes, order));
  }
  sum = vec::sum8_epi32(total);
  return amax;
}
#endif

// Rows [begin, end) of x (float32, or bf16: converted exactly) quantized into `out`.
template <int kG, typename T>
void quantize_rows_f32(const T* x, int64_t begin, int64_t end, int64_t K, int bits, QuantizedX& out) {
  const int64_t groups = K / kG;
  auto* q = reinterpret_cast<int8_t*>(out.q.data());
  const int8_t* order = lane_order16(bits);
#ifdef MISTRALPY_AVX2
  const __m128i shuffle = _mm_loadu_si128(reinterpret_cast<const __m128i*>(order));
  for (int64_t i = begin * groups; i < end * groups; ++i) {
    int32_t sum = 0;
    const int64_t m = i / groups, g = i % groups;
    const float d = quantize_group_avx2<kG>(x + i * kG, shuffle, q + out.at(m, g) * kG, sum) / 127.0f;
    out.set(m, g, d, sum);
  }
#else
  for (int64_t i = begin * groups; i < end * groups; ++i) {
    float v[kG];
    for (int k = 0; k < kG; ++k) v[k] = static_cast<float>(x[i * kG + k]);
    float amax = 0.0f;
    for (int k = 0; k < kG; ++k) amax = std::max(amax, std::fabs(v[k]));
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    int8_t codes[kG];
    int32_t sum = 0;
    for (int k = 0; k < kG; ++k) {
      const float scaled = v[k] * inv;
      codes[k] = static_cast<int8_t>(std::nearbyint(scaled));
      sum += codes[k];
    }
    const int64_t m = i / groups, g = i % groups;
    for (int base = 0; base < kG; base += 16)
      for (int k = 0; k < 16; ++k) q[out.at(m, g) * kG + base + k] = codes[base + order[k]];
    out.set(m, g, amax / 127.0f, sum);
  }
#endif
}

template <int kG, typename T>
QuantizedX quantize_x_f32(const T* x, int64_t M, int64_t K, int bits) {
  const int64_t groups = K / kG;
  QuantizedX out{M, std::vector<uint32_t>(M * K / 4), std::vector<float>(M * groups), std::vector<float>(M * groups),
                 std::vector<int32_t>(M * groups)};
  at::parallel_for(0, M, std::max<int64_t>(1, 256 / groups),
                   [&](int64_t begin, int64_t end) { quantize_rows_f32<kG, T>(x, begin, end, K, bits, out); });
  return out;
}

}  // namespace quant
