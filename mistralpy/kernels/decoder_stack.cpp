// Llama decoder layers for a decode-only step in one native call: the same kernels the Python layers call one by
// one (layers/: norm, activation, rotary, attention; quant/native_linear.py), without ~25 Python-level calls a layer.
#include "decoder_stack.h"

#include <cstring>

QuantLinear::QuantLinear(torch::Tensor codes, torch::Tensor scale, c10::optional<torch::Tensor> zero, int64_t bits,
                         double offset, int64_t out_features, c10::optional<torch::Tensor> bias,
                         int64_t dense_min_rows)
    : codes(std::move(codes)), scale(std::move(scale)), zero(std::move(zero)), bias(std::move(bias)), bits(bits),
      offset(offset), out_features(out_features), dense_min_rows(dense_min_rows) {}

torch::Tensor QuantLinear::operator()(const torch::Tensor& x) const {
  if (x.size(0) >= dense_min_rows) {
    return at::linear(x, qdequantize(codes, scale, zero, bits, offset, out_features), bias);
  }
  auto y = qmatmul(x, codes, scale, zero, bits, offset, out_features);
  return bias.has_value() ? y.add_(*bias) : y;
}

namespace {

// Each token's K and V rows into its cache slot: one copy per row, without index_copy_'s dispatch (~2.5 us a call,
// two calls a layer).
void write_kv(const torch::Tensor& kv, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& slots) {
  const int64_t S = k.size(0), row = k.size(1) * k.size(2), slot_stride = kv.stride(2);
  TORCH_CHECK(kv.is_contiguous() && slots.is_contiguous() && slots.scalar_type() == torch::kLong, "kv, slots layout");
  TORCH_CHECK(k.stride(2) == 1 && k.stride(1) == k.size(2) && v.stride(2) == 1 && v.stride(1) == v.size(2),
              "K/V rows must be contiguous");
  TORCH_CHECK(k.scalar_type() == kv.scalar_type() && v.scalar_type() == kv.scalar_type(), "K/V dtype");
  const int64_t* slot = slots.data_ptr<int64_t>();
  const int64_t bytes = row * static_cast<int64_t>(kv.element_size()), num_slots = kv.size(1) * kv.size(2);
  char* base = static_cast<char*>(kv.data_ptr());
  const auto* kp = static_cast<const char*>(k.data_ptr());
  const auto* vp = static_cast<const char*>(v.data_ptr());
  const int64_t plane = kv.stride(0) * kv.element_size(), elem = kv.element_size();
  for (int64_t s = 0; s < S; ++s) {
    TORCH_CHECK(slot[s] >= 0 && slot[s] < num_slots, "cache slot out of range");
    char* dst = base + slot[s] * slot_stride * elem;
    std::memcpy(dst, kp + s * k.stride(0) * elem, bytes);
    std::memcpy(dst + plane, vp + s * v.stride(0) * elem, bytes);
  }
}

}  // namespace

DecoderStack::DecoderStack(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, double eps, double scale)
    : num_heads(num_heads), num_kv_heads(num_kv_heads), head_dim(head_dim), eps(eps), scale(scale) {}

void DecoderStack::add_layer(torch::Tensor input_norm, QuantLinear qkv, QuantLinear o, torch::Tensor post_norm,
                             QuantLinear gate_up, QuantLinear down, int64_t window) {
  layers.push_back({std::move(input_norm), std::move(qkv), std::move(o), std::move(post_norm), std::move(gate_up),
                    std::move(down), window});
}

// x: (S, hidden) bf16, one token per sequence; cos/sin: (S, head_dim / 2) bf16; kv_caches: one (2, blocks,
// block_size, Hkv, D) per layer; slots: (S,) cache slot of each token; tables/lens as decode_attention takes them.
torch::Tensor DecoderStack::forward(torch::Tensor x, torch::Tensor cos, torch::Tensor sin,
                                    const std::vector<torch::Tensor>& kv_caches, torch::Tensor slots,
                                    torch::Tensor tables, torch::Tensor lens) const {
  TORCH_CHECK(kv_caches.size() == layers.size(), "one KV cache per layer");
  const int64_t S = x.size(0), q_size = num_heads * head_dim, kv_size = num_kv_heads * head_dim;
  x = x.clone();  // the residual stream, updated in place
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& l = layers[i];
    auto qkv = l.qkv(rms_norm(x, l.input_norm, eps, false));
    auto q = qkv.narrow(1, 0, q_size).view({S, num_heads, head_dim});
    auto k = qkv.narrow(1, q_size, kv_size).view({S, num_kv_heads, head_dim});
    auto v = qkv.narrow(1, q_size + kv_size, kv_size).view({S, num_kv_heads, head_dim});
    auto rotated = rotary(q, k, cos, sin);
    write_kv(kv_caches[i], rotated[1], v, slots);
    auto attn = decode_attention(rotated[0], kv_caches[i], tables, lens, scale, l.window, 0.0);
    x.add_(l.o(attn.view({S, q_size})));
    x.add_(l.down(silu_and_mul(l.gate_up(rms_norm(x, l.post_norm, eps, false)))));
  }
  return x;
}
