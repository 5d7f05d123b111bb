// A parallel loop for threads that run at different speeds: vCPUs that share a core with a busy neighbour, a hybrid
// CPU's efficiency cores. A static split (at::parallel_for's) makes every thread wait for the slowest one; here each
// thread first runs its own share of the items, round after round as a static split would (a matmul's thread keeps its
// panels in its L2 from one row block to the next), then takes the next chunks of the others' shares until none is
// left. Measured on this project's 2-vCPU machine, whose vCPUs often run at unequal speeds (avx2, 2 threads, 12
// interleaved runs): a 512-row matmul's median time the same, its mean 15% lower (a 64-row one: 8%); 32 concurrent
// chats 16% faster; avx512 within noise.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace quant {

// f(round, begin, end) for every round in [0, rounds) and chunks [begin, end) of up to `chunk` items of [0, n),
// each exactly once.
template <typename F>
void balanced_for(int64_t rounds, int64_t n, int64_t chunk, const F& f) {
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  struct alignas(64) Share {  // a line each: the owner and a thief touch only this one
    std::atomic<int64_t> next{0};
  };
  std::vector<Share> shares(threads);
  auto run = [&](int64_t owner) {
    const int64_t lo = n * owner / threads, hi = n * (owner + 1) / threads;
    const int64_t per_round = (hi - lo + chunk - 1) / chunk;
    for (int64_t t = shares[owner].next.fetch_add(1); t < rounds * per_round; t = shares[owner].next.fetch_add(1)) {
      const int64_t begin = lo + t % per_round * chunk;
      f(t / per_round, begin, std::min(hi, begin + chunk));
    }
  };
  at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t self = begin; self < end; ++self)
      for (int64_t k = 0; k < threads; ++k) run((self + k) % threads);
  });
}

// A quantized matmul's loop: f(m, m_end, p) for every block [m, m_end) of up to 64 x rows (their codes stay in L2
// while the weights stream past) and every panel p < panels, the panels shared by balanced_for in chunks of 4.
template <typename F>
void for_row_blocks_and_panels(int64_t M, int64_t panels, const F& f) {
  constexpr int64_t kRowBlock = 64;
  balanced_for((M + kRowBlock - 1) / kRowBlock, panels, 4, [&](int64_t block, int64_t begin, int64_t end) {
    const int64_t m = block * kRowBlock;
    for (int64_t p = begin; p < end; ++p) f(m, std::min(M, m + kRowBlock), p);
  });
}

}  // namespace quant
