// LoRA deltas of a step's tokens, each token by its own adapter slot (lora/layer.py's LoRALinear): y[t] +=
// (x[t] @ A[s]) @ B[s], in float32, added to y's bf16 row once (rounded to nearest even). A slot's ranks are spans:
// a fused projection's parts (q, k, v of qkv) each have their own ranks and output columns, so B is block-diagonal
// and only the spans' blocks are multiplied. A token's delta depends on its own row and slot only, so a row comes
// out the same in any batch. Tokens are taken slot by slot, a few at a time, so that one pass over a slot's A and B
// serves several tokens; the sums of a tile of tokens x columns stay in registers.
#include <algorithm>
#include <cstring>
#include <vector>

#include "isa.h"
#include "ops.h"

namespace {

constexpr int64_t kTokens = 4;    // tokens of one slot sharing a pass over its A and B

inline float bf16_float(uint16_t v) {
  const uint32_t u = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

struct Block {
  int64_t slot, first, count;  // tokens order[first .. first + count) of this slot
};

struct Shapes {
  int64_t in, out, room, parts;  // room: the slots' rank capacity R (a: (L, in, R), b: (L, R, out))
};

struct Span {
  int64_t k0, k1, c0, c1;  // ranks k0 .. k1 of a slot write output columns c0 .. c1
};

// 16 float32 lanes as a GCC/Clang vector: one zmm at the avx512 level, two ymm at avx2, scalar code at portable;
// tiles of them stay in registers (plain float arrays of the same size were spilled to the stack)
typedef float f32x16 __attribute__((vector_size(64)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));

inline f32x16 load_bf16(const uint16_t* p) {
  u16x16 v;
  std::memcpy(&v, p, sizeof v);
  return reinterpret_cast<f32x16>(__builtin_convertvector(v, u32x16) << 16);
}

// p[0 .. 16) (bf16) += acc, rounded to nearest even as c10::BFloat16 rounds (NaN: 0x7FC0)
inline void add_bf16(uint16_t* p, f32x16 acc) {
  const f32x16 f = load_bf16(p) + acc;
  const u32x16 u = reinterpret_cast<u32x16>(f);
  u32x16 r = (u + ((u >> 16) & 1) + 0x7FFF) >> 16;
  r = f != f ? u32x16{} + 0x7FC0 : r;
  const u16x16 out = __builtin_convertvector(r, u16x16);
  std::memcpy(p, &out, sizeof out);
}

// h[t][k0 .. k0 + 16V) = x[t] (in, as float) @ at (in, R)[:, k0 .. k0 + 16V)
template <int T, int V>
void shrink_tile(const float* x, const uint16_t* at, int64_t k0, const Shapes& s, float* h) {
  f32x16 acc[T][V] = {};
  for (int64_t i = 0; i < s.in; ++i) {
    f32x16 w[V];
    for (int v = 0; v < V; ++v) w[v] = load_bf16(at + i * s.room + k0 + 16 * v);
    for (int t = 0; t < T; ++t) {
      const float xi = x[t * s.in + i];
      for (int v = 0; v < V; ++v) acc[t][v] += xi * w[v];
    }
  }
  for (int t = 0; t < T; ++t) std::memcpy(h + t * s.room + k0, acc[t], sizeof acc[t]);
}

// h[t] (r) = x[t] (in) @ at (in, R)[:, :r] for the block's T tokens (x as float rows)
template <int T>
void shrink(const float* x, const uint16_t* at, int64_t r, const Shapes& s, float* h) {
  int64_t k0 = 0;
  for (; k0 + 32 <= r; k0 += 32) shrink_tile<T, 2>(x, at, k0, s, h);
  for (; k0 < r && k0 + 16 <= s.room; k0 += 16) {  // the room past r: zeros or another rank's, read, never used
    shrink_tile<T, 1>(x, at, k0, s, h);
  }
  for (int64_t k = k0; k < r; ++k) {  // a room that is not a multiple of 16
    for (int t = 0; t < T; ++t) {
      float sum = 0.f;
      for (int64_t i = 0; i < s.in; ++i) sum += x[t * s.in + i] * bf16_float(at[i * s.room + k]);
      h[t * s.room + k] = sum;
    }
  }
}

// acc (T x 32) = h[t][k0 .. k1) @ bt[k0 .. k1, j0 .. j0 + 32), added to y's bf16 rows once
template <int T>
void expand_tile(uint16_t* y, const uint16_t* bt, const int64_t* tokens, const Span& p, int64_t j0, const Shapes& s,
                 const float* h) {
  f32x16 acc[T][2] = {};
  for (int64_t k = p.k0; k < p.k1; ++k) {
    const f32x16 w[2] = {load_bf16(bt + k * s.out + j0), load_bf16(bt + k * s.out + j0 + 16)};
    for (int t = 0; t < T; ++t) {
      const float hk = h[t * s.room + k];
      acc[t][0] += hk * w[0];
      acc[t][1] += hk * w[1];
    }
  }
  for (int t = 0; t < T; ++t) {
    add_bf16(y + tokens[t] * s.out + j0, acc[t][0]);
    add_bf16(y + tokens[t] * s.out + j0 + 16, acc[t][1]);
  }
}

// the columns j0 .. c1 (< 32) left after the tiles
template <int T>
void expand_tail(uint16_t* y, const uint16_t* bt, const int64_t* tokens, const Span& p, int64_t j0, const Shapes& s,
                 const float* h) {
  for (int t = 0; t < T; ++t) {
    uint16_t* yt = y + tokens[t] * s.out;
    for (int64_t j = j0; j < p.c1; ++j) {
      float sum = 0.f;
      for (int64_t k = p.k0; k < p.k1; ++k) sum += h[t * s.room + k] * bf16_float(bt[k * s.out + j]);
      yt[j] = c10::BFloat16(bf16_float(yt[j]) + sum).x;
    }
  }
}

template <int T>
void expand(uint16_t* y, const uint16_t* bt, const int64_t* tokens, const Span* spans, const Shapes& s,
            const float* h) {
  for (int64_t q = 0; q < s.parts; ++q) {
    const Span& p = spans[q];
    if (p.k0 == p.k1) continue;
    int64_t j0 = p.c0;
    for (; j0 + 32 <= p.c1; j0 += 32) expand_tile<T>(y, bt, tokens, p, j0, s, h);
    expand_tail<T>(y, bt, tokens, p, j0, s, h);
  }
}

// The block's tokens' deltas, its T tokens' x rows converted to float once.
template <int T>
void add_block(uint16_t* y, const uint16_t* x, const uint16_t* at, const uint16_t* bt, const int64_t* tokens,
               const Span* spans, int64_t r, const Shapes& s, float* xf, float* h) {
  for (int t = 0; t < T; ++t) {
    for (int64_t i = 0; i < s.in; ++i) xf[t * s.in + i] = bf16_float(x[tokens[t] * s.in + i]);
  }
  shrink<T>(xf, at, r, s, h);
  expand<T>(y, bt, tokens, spans, s, h);
}

// The step's tokens with an adapter, slot by slot, cut into blocks of up to kTokens.
std::vector<Block> blocks_of(const int64_t* slots, int64_t S, int64_t L, const int64_t* ranks,
                             std::vector<int64_t>& order) {
  std::vector<Block> blocks;
  for (int64_t slot = 0; slot < L; ++slot) {
    const int64_t first = static_cast<int64_t>(order.size());
    for (int64_t t = 0; t < S; ++t) {
      if (slots[t] == slot) order.push_back(t);
    }
    if (ranks[slot] == 0) continue;
    for (int64_t b = first; b < static_cast<int64_t>(order.size()); b += kTokens) {
      blocks.push_back({slot, b, std::min(kTokens, static_cast<int64_t>(order.size()) - b)});
    }
  }
  return blocks;
}

// A slot's rank: the end of its last span (0: its adapter does not target this projection).
std::vector<int64_t> ranks_of(const Span* spans, int64_t L, const Shapes& s) {
  std::vector<int64_t> ranks(L, 0);
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t q = 0; q < s.parts; ++q) {
      const Span& p = spans[l * s.parts + q];
      TORCH_CHECK(0 <= p.k0 && p.k0 <= p.k1 && p.k1 <= s.room && 0 <= p.c0 && p.c0 <= p.c1 && p.c1 <= s.out,
                  "lora_add: a span out of range");
      ranks[l] = std::max(ranks[l], p.k1);
    }
  }
  return ranks;
}

void check(const torch::Tensor& y, const torch::Tensor& x, const torch::Tensor& a, const torch::Tensor& b,
           const torch::Tensor& spans, const torch::Tensor& slots) {
  const auto bf16 = torch::kBFloat16;
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && a.dim() == 3 && b.dim() == 3, "lora_add: x, y (S, n); a, b (L, n, r)");
  TORCH_CHECK(x.scalar_type() == bf16 && y.scalar_type() == bf16 && a.scalar_type() == bf16 &&
                  b.scalar_type() == bf16,
              "lora_add: x, y, a and b must be bf16");
  TORCH_CHECK(x.is_contiguous() && y.is_contiguous() && a.is_contiguous() && b.is_contiguous(),
              "lora_add: contiguous tensors");
  const int64_t S = x.size(0), L = a.size(0);
  TORCH_CHECK(y.size(0) == S && a.size(1) == x.size(1) && b.size(0) == L && b.size(1) == a.size(2) &&
                  b.size(2) == y.size(1),
              "lora_add: shapes do not match");
  TORCH_CHECK(spans.scalar_type() == torch::kLong && spans.dim() == 3 && spans.size(0) == L && spans.size(2) == 4 &&
                  spans.is_contiguous(),
              "lora_add: spans (L, parts, 4) int64");
  TORCH_CHECK(slots.scalar_type() == torch::kLong && slots.dim() == 1 && slots.size(0) == S && slots.is_contiguous(),
              "lora_add: slots (S,) int64");
}

}  // namespace

void lora_add(torch::Tensor y, torch::Tensor x, torch::Tensor a, torch::Tensor b, torch::Tensor spans,
              torch::Tensor slots) {
  check(y, x, a, b, spans, slots);
  const int64_t S = x.size(0), L = a.size(0);
  const Shapes s{x.size(1), y.size(1), a.size(2), spans.size(1)};
  const int64_t* slot = slots.data_ptr<int64_t>();
  const auto* span = reinterpret_cast<const Span*>(spans.data_ptr<int64_t>());
  for (int64_t t = 0; t < S; ++t) TORCH_CHECK(slot[t] >= -1 && slot[t] < L, "lora_add: a slot out of range");
  const std::vector<int64_t> rank = ranks_of(span, L, s);
  std::vector<int64_t> order;
  const std::vector<Block> blocks = blocks_of(slot, S, L, rank.data(), order);
  auto* yp = reinterpret_cast<uint16_t*>(y.data_ptr());
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr());
  const auto* ap = reinterpret_cast<const uint16_t*>(a.data_ptr());
  const auto* bp = reinterpret_cast<const uint16_t*>(b.data_ptr());
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> h(kTokens * s.room), xf(kTokens * s.in);
    for (int64_t i = begin; i < end; ++i) {
      const Block& blk = blocks[i];
      const int64_t* tokens = order.data() + blk.first;
      const uint16_t* at = ap + blk.slot * s.in * s.room;
      const uint16_t* bt = bp + blk.slot * s.room * s.out;
      const Span* spans_of = span + blk.slot * s.parts;
      with_count<kTokens>(blk.count, [&](auto R) {
        add_block<R()>(yp, xp, at, bt, tokens, spans_of, rank[blk.slot], s, xf.data(), h.data());
      });
    }
  });
}
