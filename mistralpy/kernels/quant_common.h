// The layout of group-quantized weights in panels (quant_matmul.cpp multiplies them; quant/native_linear.py packs
// them), its argument checks, dispatch over the per-group parameters' dtype, prefetching and parameter loads.
//
// Weights W[n, k] = a[n, g] * (q[n, k] + c) + b[n, g] for groups g of 32 (or 16: the K-quants with 16-weight
// scales) weights along a row, stored in panels of 16 rows (the last one padded with zero rows). A panel's codes are
// 64-byte blocks along k, one u32 lane per row:
//   4 bits: a block holds 8 k of each row; its lane's nibbles are k0 k2 k4 k6 (low u16) and k1 k3 k5 k7 (high u16);
//   8 bits: a block holds 4 k of each row; its lane's bytes are k0 k2 k1 k3.
// So a lane's low nibbles (k0 k4 k1 k5), its high nibbles (k2 k6 k3 k7), or its bytes are four codes of one row: an
// operand of a u8 dot product, 16 rows at a time.
// codes: (panels, 16 * K * bits / 8) uint8; a and b: (panels, K / group, 16), float32 or float16 (b may be absent).
#pragma once
#include <torch/extension.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <initializer_list>

#include "isa.h"

namespace quant {

constexpr int64_t kGroup = 32;  // the largest group; K is a multiple of it
constexpr int64_t kPanel = 16;  // weight rows per panel: the lanes of one zmm of float32 sums

inline int64_t in_features(const torch::Tensor& codes, int64_t bits) { return codes.size(1) * 8 / (bits * kPanel); }

struct Shape {
  int64_t K, group;
};

// The arguments every kernel takes; the group size follows from the parameters' shape.
inline Shape check_params(const torch::Tensor& codes, const torch::Tensor& scale,
                          const c10::optional<torch::Tensor>& bias, int64_t bits, int64_t N) {
  TORCH_CHECK(bits == 4 || bits == 8, "codes must be 4 or 8 bits wide");
  TORCH_CHECK(codes.scalar_type() == torch::kUInt8 && codes.is_contiguous() && codes.dim() == 2, "codes: 2-D uint8");
  const int64_t K = in_features(codes, bits), panels = codes.size(0);
  TORCH_CHECK(K > 0 && K % kGroup == 0 && codes.size(1) == K * bits * kPanel / 8, "codes: 16 rows of K / 32 groups");
  TORCH_CHECK(N > (panels - 1) * kPanel && N <= panels * kPanel, "out_features does not match the panels");
  const int64_t groups = scale.dim() == 3 ? scale.size(1) : 0;
  TORCH_CHECK(scale.is_contiguous() && scale.dim() == 3 && scale.size(0) == panels && scale.size(2) == kPanel &&
                  (groups == K / 32 || groups == K / 16),
              "scale: (panels, K / 32 or K / 16, 16)");
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == scale.scalar_type() && bias->sizes() == scale.sizes() && bias->is_contiguous(),
                "bias must match scale");
  }
  return {K, K / groups};
}

template <typename F>
inline void with_param_type(const torch::Tensor& scale, F&& f) {
  if (scale.scalar_type() == torch::kFloat) {
    f(float{});
  } else if (scale.scalar_type() == torch::kHalf) {
    f(c10::Half{});
  } else {
    TORCH_CHECK(false, "scale must be float32 or float16");
  }
}

// Panel p's codes and each given per-group parameter array (a, b), requested into L1.
template <typename P>
inline void prefetch_panel(const uint8_t* codes, int64_t panel_bytes, std::initializer_list<const P*> params,
                           int64_t groups, int64_t p) {
  const char* c = reinterpret_cast<const char*>(codes + p * panel_bytes);
  for (int64_t b = 0; b < panel_bytes; b += 64) prefetch_line(c + b);
  for (const P* param : params) {
    if (param == nullptr) continue;
    const char* q = reinterpret_cast<const char*>(param + p * groups * kPanel);
    for (int64_t b = 0; b < groups * kPanel * static_cast<int64_t>(sizeof(P)); b += 64) prefetch_line(q + b);
  }
}

// The next panel's lines of group g's parameters (a, b), where g starts a line (a line holds 2 groups' float16
// parameters, or 1 group's float32).
template <typename P>
inline void prefetch_group_params(int64_t groups, std::initializer_list<const P*> params, int64_t g) {
  if (g % (64 / (kPanel * static_cast<int64_t>(sizeof(P)))) != 0) return;
  for (const P* param : params) {
    if (param != nullptr) prefetch_line(param + groups * kPanel + g * kPanel);
  }
}

#ifdef MISTRALPY_AVX512_BF16
// 16 per-group parameters (one per row of a panel) as float32 lanes.
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const c10::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

#endif

}  // namespace quant
