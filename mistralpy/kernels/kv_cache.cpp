// Writing a step's K and V into their cache slots (the row formats: kv_cache.h).
#include "kv_cache.h"

#include "ops.h"

namespace {

template <typename T>
void quantize_rows(const torch::Tensor& x, const int64_t* slot, int64_t S, char* plane, int64_t slot_bytes,
                   int64_t row_bytes) {
  const int64_t heads = x.size(1), D = x.size(2);
  const T* src = x.data_ptr<T>();
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t h = 0; h < heads; ++h) {
      auto* row = reinterpret_cast<uint8_t*>(plane + slot[s] * slot_bytes + h * row_bytes);
      kv::quantize_row(src + s * x.stride(0) + h * D, D, row);
    }
  }
}

}  // namespace

// kv: (2, blocks, block_size, Hkv, row); k, v: (S, Hkv, D) with contiguous rows; slots: (S,) int64. One copy (or one
// quantization) per row, without index_copy_'s dispatch (~2.5 us a call, two calls a layer).
void write_kv(torch::Tensor kv, torch::Tensor k, torch::Tensor v, torch::Tensor slots) {
  TORCH_CHECK(kv.dim() == 5 && kv.is_contiguous() && slots.is_contiguous() && slots.scalar_type() == torch::kLong,
              "kv, slots layout");
  TORCH_CHECK(k.dim() == 3 && k.sizes() == v.sizes() && k.size(1) == kv.size(3) && k.size(2) == kv::head_dim(kv),
              "K/V shapes do not match the cache");
  TORCH_CHECK(k.stride(2) == 1 && k.stride(1) == k.size(2) && v.stride(2) == 1 && v.stride(1) == v.size(2),
              "K/V rows must be contiguous");
  TORCH_CHECK(k.scalar_type() == v.scalar_type() && (kv::is_int8(kv) || k.scalar_type() == kv.scalar_type()),
              "K/V dtype");
  const int64_t S = k.size(0), num_slots = kv.size(1) * kv.size(2), elem = kv.element_size();
  const int64_t* slot = slots.data_ptr<int64_t>();
  TORCH_CHECK(slots.numel() == S, "one slot per token");
  for (int64_t s = 0; s < S; ++s) TORCH_CHECK(slot[s] >= 0 && slot[s] < num_slots, "cache slot out of range");
  char* k_plane = static_cast<char*>(kv.data_ptr());
  char* v_plane = k_plane + kv.stride(0) * elem;
  const int64_t slot_bytes = kv.stride(2) * elem;
  if (kv::is_int8(kv)) {
    const int64_t row_bytes = kv.size(4);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, k.scalar_type(), "write_kv", [&] {
      quantize_rows<scalar_t>(k, slot, S, k_plane, slot_bytes, row_bytes);
      quantize_rows<scalar_t>(v, slot, S, v_plane, slot_bytes, row_bytes);
    });
    return;
  }
  const int64_t bytes = k.size(1) * k.size(2) * elem;
  const auto* kp = static_cast<const char*>(k.data_ptr());
  const auto* vp = static_cast<const char*>(v.data_ptr());
  for (int64_t s = 0; s < S; ++s) {
    std::memcpy(k_plane + slot[s] * slot_bytes, kp + s * k.stride(0) * elem, bytes);
    std::memcpy(v_plane + slot[s] * slot_bytes, vp + s * v.stride(0) * elem, bytes);
  }
}
