// Fused bf16 elementwise ops of the decode step, each one call instead of 3-10 torch ops. They round to bf16 where
// the torch code they replace does (mistralpy/layers: norm.py, activation.py, rotary.py), so results match it up to
// the last bit of float32 intermediates (a different summation order in the norm, another exp in silu).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "isa.h"
#include "ops.h"
#include "vec_avx2.h"
#include "vec_exp.h"

namespace {

using bf16 = c10::BFloat16;

inline float round_bf16(float v) { return static_cast<float>(bf16(v)); }

constexpr int64_t kGrain = 16;
constexpr int64_t kChunk = 256;  // rows per task: one decode row runs inline, no thread hand-off

// Llama: bf16(bf16(x * r) * w); Gemma: bf16(x * r * (1 + w)); r = 1 / sqrt(mean(x^2) + eps), in float32.
void rms_norm_rows(const bf16* x, int64_t x_stride, const bf16* w, bf16* out, int64_t n, int64_t begin, int64_t end,
                   float eps, bool gemma) {
  for (int64_t row = begin; row < end; ++row) {
    const bf16* xr = x + row * x_stride;
    bf16* o = out + row * n;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < n; ++i) ss += static_cast<float>(xr[i]) * static_cast<float>(xr[i]);
    const float r = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
    if (gemma) {
      for (int64_t i = 0; i < n; ++i) o[i] = bf16(static_cast<float>(xr[i]) * r * (1.0f + static_cast<float>(w[i])));
    } else {
      for (int64_t i = 0; i < n; ++i) o[i] = bf16(round_bf16(static_cast<float>(xr[i]) * r) * static_cast<float>(w[i]));
    }
  }
}

// bf16(bf16(silu(gate)) * up) over [gate | up] rows.
void silu_mul_rows(const bf16* x, int64_t x_stride, bf16* out, int64_t n, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    const bf16* gate = x + row * x_stride;
    const bf16* up = gate + n;
    bf16* o = out + row * n;
    for (int64_t i0 = 0; i0 < n; i0 += kChunk) {  // exp in a vectorised loop of its own
      const int64_t len = std::min(kChunk, n - i0);
      float s[kChunk];
      for (int64_t i = 0; i < len; ++i) s[i] = static_cast<float>(gate[i0 + i]);
#ifdef MISTRALPY_AVX512
      for (int64_t i = 0; i < len; i += 16) {
        const __mmask16 m = len - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (len - i)) - 1);
        const __m512 v = _mm512_maskz_loadu_ps(m, s + i);
        const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), v));
        _mm512_mask_storeu_ps(s + i, m, _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
      }
#elif defined(MISTRALPY_AVX2)
      int64_t i = 0;
      for (; i + 8 <= len; i += 8) {  // scalar expf was ~5% of a batch-32 run at the avx2 level
        const __m256 v = _mm256_loadu_ps(s + i);
        const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), v));
        _mm256_storeu_ps(s + i, _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e)));
      }
      for (; i < len; ++i) s[i] = s[i] / (1.0f + std::exp(-s[i]));
#else
      for (int64_t i = 0; i < len; ++i) s[i] = s[i] / (1.0f + std::exp(-s[i]));
#endif
      for (int64_t i = 0; i < len; ++i) o[i0 + i] = bf16(round_bf16(s[i]) * static_cast<float>(up[i0 + i]));
    }
  }
}

// Half-split rotary of one head: [x1 * c - x2 * s, x2 * c + x1 * s], every product and sum rounded to bf16 (as the
// torch ops do; the products of two bf16 values are exact in float32). 8 lanes at a time where the level has AVX2
// (c10::BFloat16's rounding does not vectorise).
inline void rotate_head(const bf16* x, const bf16* cos, const bf16* sin, bf16* o, int64_t half) {
  int64_t i = 0;
#if defined(MISTRALPY_AVX2) || defined(MISTRALPY_AVX512)
  for (; i + 8 <= half; i += 8) {
    const __m256 x1 = vec::load8_f32(x + i), x2 = vec::load8_f32(x + half + i);
    const __m256 c = vec::load8_f32(cos + i), s = vec::load8_f32(sin + i);
    const __m256 r1 = _mm256_sub_ps(vec::round_bf16x8(_mm256_mul_ps(x1, c)), vec::round_bf16x8(_mm256_mul_ps(x2, s)));
    const __m256 r2 = _mm256_add_ps(vec::round_bf16x8(_mm256_mul_ps(x2, c)), vec::round_bf16x8(_mm256_mul_ps(x1, s)));
    vec::store_bf16x8(o + i, vec::round_bf16x8(r1));
    vec::store_bf16x8(o + half + i, vec::round_bf16x8(r2));
  }
#endif
  for (; i < half; ++i) {
    const float x1 = static_cast<float>(x[i]), x2 = static_cast<float>(x[half + i]);
    const float c = static_cast<float>(cos[i]), s = static_cast<float>(sin[i]);
    o[i] = bf16(round_bf16(x1 * c) - round_bf16(x2 * s));
    o[half + i] = bf16(round_bf16(x2 * c) + round_bf16(x1 * s));
  }
}

void check_bf16(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == torch::kBFloat16, name, " must be bf16");
  TORCH_CHECK(t.stride(-1) == 1, name, "'s last dimension must be contiguous");
}

}  // namespace

// x: (T, n) bf16, rows may be strided -> (T, n).
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps, bool gemma) {
  check_bf16(x, "x");
  check_bf16(weight, "weight");
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 1 && weight.size(0) == x.size(1), "rms_norm: x (T, n), weight (n,)");
  weight = weight.contiguous();
  auto out = torch::empty({x.size(0), x.size(1)}, x.options());
  const bf16* xp = x.data_ptr<bf16>();
  const bf16* wp = weight.data_ptr<bf16>();
  bf16* op = out.data_ptr<bf16>();
  at::parallel_for(0, x.size(0), kGrain, [&](int64_t begin, int64_t end) {
    rms_norm_rows(xp, x.stride(0), wp, op, x.size(1), begin, end, static_cast<float>(eps), gemma);
  });
  return out;
}

// gate_up: (T, 2n) bf16 -> (T, n).
torch::Tensor silu_and_mul(torch::Tensor gate_up) {
  check_bf16(gate_up, "gate_up");
  TORCH_CHECK(gate_up.dim() == 2 && gate_up.size(1) % 2 == 0, "silu_and_mul: gate_up (T, 2n)");
  const int64_t n = gate_up.size(1) / 2;
  auto out = torch::empty({gate_up.size(0), n}, gate_up.options());
  const bf16* xp = gate_up.data_ptr<bf16>();
  bf16* op = out.data_ptr<bf16>();
  at::parallel_for(0, gate_up.size(0), kGrain, [&](int64_t begin, int64_t end) {
    silu_mul_rows(xp, gate_up.stride(0), op, n, begin, end);
  });
  return out;
}

// q: (T, Hq, D), k: (T, Hkv, D) bf16 (strided views are fine), cos/sin: (T, D / 2) bf16 -> rotated copies.
std::vector<torch::Tensor> rotary(torch::Tensor q, torch::Tensor k, torch::Tensor cos, torch::Tensor sin) {
  check_bf16(q, "q");
  check_bf16(k, "k");
  TORCH_CHECK(q.dim() == 3 && k.dim() == 3 && q.size(0) == k.size(0) && q.size(2) == k.size(2), "rotary: q, k shapes");
  const int64_t T = q.size(0), D = q.size(2), half = D / 2;
  cos = cos.contiguous();
  sin = sin.contiguous();
  TORCH_CHECK(cos.scalar_type() == torch::kBFloat16 && sin.scalar_type() == torch::kBFloat16, "cos/sin must be bf16");
  TORCH_CHECK(cos.numel() == T * half && sin.numel() == T * half, "cos/sin: (T, head_dim / 2)");
  auto qo = torch::empty({T, q.size(1), D}, q.options()), ko = torch::empty({T, k.size(1), D}, k.options());
  const bf16* cp = cos.data_ptr<bf16>();
  const bf16* sp = sin.data_ptr<bf16>();
  at::parallel_for(0, T, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      for (const auto& [src, dst] : {std::pair{&q, &qo}, std::pair{&k, &ko}}) {
        for (int64_t h = 0; h < src->size(1); ++h) {
          rotate_head(src->data_ptr<bf16>() + t * src->stride(0) + h * src->stride(1), cp + t * half, sp + t * half,
                      dst->data_ptr<bf16>() + (t * dst->size(1) + h) * D, half);
        }
      }
    }
  });
  return {qo, ko};
}
