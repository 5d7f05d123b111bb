// Prefill attention over the paged KV cache: the new tokens of one sequence (a prompt, or a chunk of one whose earlier
// tokens are cached) attend causally to its K/V, read from the cache blocks in its block table. bf16 with AVX-512
// BF16 dot products. Each call first packs every KV head's visible keys once: K in tiles whose 16 lanes are 16 keys
// (for Q K^T), V in pairs of keys side by side (for P V, the lanes being 16 head dims). A task then takes 8 query rows
// (positions x the query heads sharing a KV head, so each K and V load serves them all) against every key they may
// see. Scores and softmax in float32; the probabilities are rounded to bf16 for P V, as in torch's flash kernel, and
// the sum they are divided by is taken in float32. Optional sliding window and soft-cap, as in decode attention.
// An int8 cache's rows (kv_cache.h) are dequantized to bf16 as they are packed.
#include <ATen/Parallel.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "isa.h"
#include "kv_cache.h"
#include "ops.h"
#ifdef MISTRALPY_AVX512_BF16
#include "vec_exp.h"
#endif

#ifdef MISTRALPY_AVX512_BF16
namespace {

constexpr int64_t kRows = 8;   // query rows of a task
constexpr int64_t kTile = 16;  // keys per K tile: one float32 lane each

struct Prefill {
  const uint16_t* q;  // (n, Hq, D) bf16 bits, rows strided
  int64_t q_token_stride, q_head_stride;
  uint16_t* out;  // (n, Hq, D) contiguous
  int64_t n, ctx, heads, kv_heads, group, D;
  int64_t first;        // position of packed key 0: keys before it are outside every query's window
  int64_t tiles;        // K tiles per head, even (the Q K^T loop takes two at a time)
  const uint16_t* kp;   // (kv_heads, tiles, D / 2, 16, 2)
  const uint16_t* vp;   // (kv_heads, tiles * 8, D, 2)
  float scale, cap;
  int64_t window;
};

inline __m512bh pair_at(const uint16_t* p) {  // two adjacent bf16, in every lane
  int32_t bits;
  std::memcpy(&bits, p, sizeof bits);
  return reinterpret_cast<__m512bh>(_mm512_set1_epi32(bits));
}

inline __m512bh load_bh(const uint16_t* p) { return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p)); }

// One cache row as bf16 bits: a bf16 row is used in place; an int8 row is dequantized into buf.
inline const uint16_t* bf16_row(const uint16_t* row, int64_t, uint16_t*) { return row; }

inline const uint16_t* bf16_row(const uint8_t* row, int64_t D, uint16_t* buf) {
  const float scale = kv::row_scale(row, D);
  for (int64_t d = 0; d < D; ++d) buf[d] = c10::BFloat16(static_cast<int8_t>(row[d]) * scale).x;
  return buf;
}

// Keys [first, ctx) of every KV head into the K tiles and V pairs; keys past ctx are zero (their scores are masked,
// and zeros keep 0 * garbage from making NaNs). kv: the cache's rows (bf16 bits, or int8 rows), head_stride apart.
template <typename KV>
void pack(const KV* kv, int64_t v_plane, int64_t head_stride, const std::vector<int64_t>& slot, const Prefill& c,
          uint16_t* kp, uint16_t* vp) {
  const int64_t D = c.D, keys = c.ctx - c.first, tile_elems = D * kTile;
  std::vector<uint16_t> kbuf(D), vbuf(D);
#pragma omp for collapse(2)
  for (int64_t h = 0; h < c.kv_heads; ++h) {
    for (int64_t t = 0; t < c.tiles; ++t) {
      uint16_t* kt = kp + (h * c.tiles + t) * tile_elems;
      uint16_t* vt = vp + (h * c.tiles + t) * tile_elems;
      for (int64_t k = 0; k < kTile; ++k) {
        const int64_t key = t * kTile + k;
        const KV* at = key < keys ? kv + slot[key] + h * head_stride : nullptr;
        const uint16_t* krow = at ? bf16_row(at, D, kbuf.data()) : nullptr;
        const uint16_t* vrow = at ? bf16_row(at + v_plane, D, vbuf.data()) : nullptr;
        for (int64_t d = 0; d < D; ++d) {
          kt[((d / 2) * kTile + k) * 2 + d % 2] = krow ? krow[d] : 0;
          vt[((k / 2) * D + d) * 2 + k % 2] = vrow ? vrow[d] : 0;
        }
      }
    }
  }
}

// scores[r][j] for K tiles [t0, t1) (t0 even), scaled.
void scores(const Prefill& c, int64_t h, const uint16_t* const* q, int64_t t0, int64_t t1, float* s, int64_t ld) {
  const int64_t pairs = c.D / 2;
  const uint16_t* kh = c.kp + h * c.tiles * c.D * kTile;
  const __m512 scale = _mm512_set1_ps(c.scale);
  for (int64_t t = t0; t < t1; t += 2) {
    __m512 acc[kRows][2];
    for (auto& a : acc) a[0] = a[1] = _mm512_setzero_ps();
    const uint16_t* k0 = kh + t * c.D * kTile;
    const uint16_t* k1 = k0 + c.D * kTile;
    for (int64_t p = 0; p < pairs; ++p) {
      const __m512bh a = load_bh(k0 + p * 2 * kTile), b = load_bh(k1 + p * 2 * kTile);
      for (int64_t r = 0; r < kRows; ++r) {
        const __m512bh x = pair_at(q[r] + 2 * p);
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, x);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], b, x);
      }
    }
    for (int64_t r = 0; r < kRows; ++r) {
      _mm512_storeu_ps(s + r * ld + (t - t0) * kTile, _mm512_mul_ps(acc[r][0], scale));
      _mm512_storeu_ps(s + r * ld + (t - t0 + 1) * kTile, _mm512_mul_ps(acc[r][1], scale));
    }
  }
}

inline __m512 tanh16(__m512 x) {  // 1 - 2 / (e^2x + 1)
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 e = exp16(_mm512_add_ps(x, x));
  return _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, one)));
}

// One row's scores over [0, width) -> bf16 probabilities (unnormalised, zero outside [lo, hi)); returns their sum.
float softmax_row(float* s, int64_t width, int64_t lo, int64_t hi, float cap, uint16_t* p) {
  if (cap > 0.0f) {
    const __m512 vcap = _mm512_set1_ps(cap), inv = _mm512_set1_ps(1.0f / cap);
    for (int64_t j = 0; j < width; j += 16) {
      _mm512_storeu_ps(s + j, _mm512_mul_ps(vcap, tanh16(_mm512_mul_ps(_mm512_loadu_ps(s + j), inv))));
    }
  }
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = lo; j < hi; ++j) mx = std::max(mx, s[j]);
  std::fill(s, s + lo, 0.0f);
  exp_inplace(s + lo, hi - lo, -mx);
  std::fill(s + hi, s + width, 0.0f);
  float sum = 0.0f;
  for (int64_t j = lo; j < hi; ++j) sum += s[j];
  for (int64_t j = 0; j < width; j += 16) {
    const __m256bh b = _mm512_cvtneps_pbh(_mm512_loadu_ps(s + j));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + j), reinterpret_cast<__m256i>(b));
  }
  return sum;
}

// out rows [r0, r0 + 4) of dims [d0, d0 + 16 kVecs) = P V over key pairs [pair0, pair1), times inv[r].
template <int kVecs>
void weighted_values(const Prefill& c, int64_t h, const uint16_t* p, int64_t ld, int64_t pair0, int64_t pair1,
                     int64_t d0, const float* inv, uint16_t* const* out) {
  const uint16_t* vh = c.vp + h * c.tiles * c.D * kTile;
  __m512 acc[4][kVecs];
  for (auto& a : acc) {
    for (auto& v : a) v = _mm512_setzero_ps();
  }
  for (int64_t pp = pair0; pp < pair1; ++pp) {
    __m512bh v[kVecs];
    for (int i = 0; i < kVecs; ++i) v[i] = load_bh(vh + (pp * c.D + d0 + 16 * i) * 2);
    for (int r = 0; r < 4; ++r) {
      const __m512bh w = pair_at(p + r * ld + 2 * (pp - pair0));
      for (int i = 0; i < kVecs; ++i) acc[r][i] = _mm512_dpbf16_ps(acc[r][i], v[i], w);
    }
  }
  for (int r = 0; r < 4; ++r) {
    if (out[r] == nullptr) continue;
    for (int i = 0; i < kVecs; ++i) {
      const __m256bh b = _mm512_cvtneps_pbh(_mm512_mul_ps(acc[r][i], _mm512_set1_ps(inv[r])));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[r] + d0 + 16 * i), reinterpret_cast<__m256i>(b));
    }
  }
}

// Query rows [row0, row0 + 8) of KV head h; row r is token r / group, query head h * group + r % group.
void attend(const Prefill& c, int64_t h, int64_t row0, std::vector<float>& s, std::vector<uint16_t>& p) {
  const int64_t rows = c.n * c.group, last = std::min(row0 + kRows, rows) - 1;
  const uint16_t* q[kRows];
  uint16_t* out[kRows];
  int64_t pos[kRows];
  for (int64_t r = 0; r < kRows; ++r) {
    const int64_t row = std::min(row0 + r, last), token = row / c.group, head = h * c.group + row % c.group;
    q[r] = c.q + token * c.q_token_stride + head * c.q_head_stride;
    out[r] = row0 + r <= last ? c.out + (token * c.heads + head) * c.D : nullptr;
    pos[r] = c.ctx - c.n + token - c.first;  // in packed keys
  }
  const int64_t lo_key = c.window > 0 ? std::max<int64_t>(0, pos[0] - c.window + 1) : 0;
  const int64_t t0 = lo_key / kTile / 2 * 2, t1 = std::min(c.tiles, (pos[kRows - 1] / kTile + 2) / 2 * 2);
  const int64_t width = (t1 - t0) * kTile, base = t0 * kTile;
  scores(c, h, q, t0, t1, s.data(), width);
  float inv[kRows];
  for (int64_t r = 0; r < kRows; ++r) {
    const int64_t lo = c.window > 0 ? std::max<int64_t>(0, pos[r] - c.window + 1) : 0;
    const float sum = softmax_row(s.data() + r * width, width, lo - base, pos[r] + 1 - base, c.cap, p.data() + r * width);
    inv[r] = 1.0f / sum;
  }
  for (int64_t r = 0; r < kRows; r += 4) {
    for (int64_t d0 = 0; d0 < c.D; d0 += 64) {
      const int64_t vecs = std::min<int64_t>(4, (c.D - d0) / 16);
      const uint16_t* pr = p.data() + r * width;
      const int64_t pair0 = base / 2, pair1 = (base + width) / 2;
      if (vecs == 4) weighted_values<4>(c, h, pr, width, pair0, pair1, d0, inv + r, out + r);
      if (vecs == 3) weighted_values<3>(c, h, pr, width, pair0, pair1, d0, inv + r, out + r);
      if (vecs == 2) weighted_values<2>(c, h, pr, width, pair0, pair1, d0, inv + r, out + r);
      if (vecs == 1) weighted_values<1>(c, h, pr, width, pair0, pair1, d0, inv + r, out + r);
    }
  }
}

}  // namespace
#endif

bool has_prefill_attention() {
#ifdef MISTRALPY_AVX512_BF16
  return true;
#else
  return false;
#endif
}

// q: (n, Hq, D) bf16, the sequence's last n positions; kv: (2, blocks, block_size, Hkv, row) contiguous, bf16 or int8
// rows (kv_cache.h);
// table: (blocks of the sequence,) int64; context_len: cached + new positions.
torch::Tensor prefill_attention(torch::Tensor q, torch::Tensor kv, torch::Tensor table, int64_t context_len,
                                double scale, int64_t window, double softcap) {
  TORCH_CHECK(has_prefill_attention(), "prefill_attention needs AVX-512 BF16");
  TORCH_CHECK(q.scalar_type() == torch::kBFloat16 && (kv.scalar_type() == torch::kBFloat16 || kv::is_int8(kv)),
              "q must be bf16, and the cache bf16 or int8");
  TORCH_CHECK(kv.is_contiguous() && table.is_contiguous() && table.scalar_type() == torch::kLong, "kv, table layout");
  TORCH_CHECK(q.dim() == 3 && q.stride(2) == 1 && kv.dim() == 5 && q.size(2) == kv::head_dim(kv), "q, kv shapes");
  const int64_t n = q.size(0), heads = q.size(1), D = q.size(2), block_size = kv.size(2), kv_heads = kv.size(3);
  TORCH_CHECK(D % 16 == 0 && heads % kv_heads == 0, "head_dim must be a multiple of 16");
  TORCH_CHECK(n >= 1 && n <= context_len && table.size(0) * block_size >= context_len, "context_len, table");
  auto out = torch::empty({n, heads, D}, q.options());
#ifdef MISTRALPY_AVX512_BF16
  Prefill c{};
  c.q = reinterpret_cast<const uint16_t*>(q.data_ptr<c10::BFloat16>());
  c.q_token_stride = q.stride(0), c.q_head_stride = q.stride(1);
  c.out = reinterpret_cast<uint16_t*>(out.data_ptr<c10::BFloat16>());
  c.n = n, c.ctx = context_len, c.heads = heads, c.kv_heads = kv_heads, c.group = heads / kv_heads, c.D = D;
  c.first = window > 0 ? std::max<int64_t>(0, context_len - n - window + 1) : 0;
  c.tiles = (context_len - c.first + 2 * kTile - 1) / (2 * kTile) * 2;
  c.scale = static_cast<float>(scale), c.cap = static_cast<float>(softcap), c.window = window;
  std::vector<int64_t> slot(context_len - c.first);
  const int64_t* blocks = table.data_ptr<int64_t>();
  for (int64_t i = 0; i < static_cast<int64_t>(slot.size()); ++i) {
    const int64_t pos = c.first + i;
    slot[i] = blocks[pos / block_size] * kv.stride(1) + pos % block_size * kv.stride(2);
  }
  // uninitialised: pack() writes every element, padding included
  const int64_t packed = kv_heads * c.tiles * kTile * D;
  std::unique_ptr<uint16_t[]> kp(new uint16_t[packed]), vp(new uint16_t[packed]);
  c.kp = kp.get(), c.vp = vp.get();
  const int64_t row_tasks = (n * c.group + kRows - 1) / kRows, tasks = kv_heads * row_tasks;
#pragma omp parallel num_threads(at::get_num_threads())
  {
    if (kv::is_int8(kv)) {
      pack(static_cast<const uint8_t*>(kv.data_ptr()), kv.stride(0), kv.stride(3), slot, c, kp.get(), vp.get());
    } else {
      pack(static_cast<const uint16_t*>(kv.data_ptr()), kv.stride(0), kv.stride(3), slot, c, kp.get(), vp.get());
    }
    std::vector<float> s(kRows * c.tiles * kTile);
    std::vector<uint16_t> p(kRows * c.tiles * kTile);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {  // the longest rows (the last positions) first
      const int64_t h = task % kv_heads, row0 = (row_tasks - 1 - task / kv_heads) * kRows;
      attend(c, h, row0, s, p);
    }
  }
#endif
  return out;
}
