// Llama decoder layers for a decode-only step in one native call: the same kernels the Python layers call one by
// one (layers/: norm, activation, rotary, attention; quant/native_linear.py), without ~25 Python-level calls a layer.
#include "decoder_stack.h"

QuantLinear::QuantLinear(torch::Tensor codes, torch::Tensor scale, c10::optional<torch::Tensor> zero, int64_t bits,
                         double offset, int64_t out_features, c10::optional<torch::Tensor> bias)
    : codes(std::move(codes)), scale(std::move(scale)), zero(std::move(zero)), bias(std::move(bias)), bits(bits),
      offset(offset), out_features(out_features) {}

QuantLinear QuantLinear::concat(std::vector<QuantLinear> parts) {
  TORCH_CHECK(!parts.empty(), "no parts to concatenate");
  int64_t out_features = 0;
  for (const auto& part : parts) out_features += part.out_features;
  QuantLinear fused = parts.front();
  fused.out_features = out_features;
  fused.parts = std::move(parts);
  return fused;
}

QuantLinear QuantLinear::with_lora(torch::Tensor a, torch::Tensor b, torch::Tensor spans) const {
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && b.size(2) == out_features, "LoRA slots: b (L, R, out_features)");
  QuantLinear adapted = *this;
  adapted.lora_a = std::move(a);
  adapted.lora_b = std::move(b);
  adapted.lora_spans = std::move(spans);
  return adapted;
}

torch::Tensor QuantLinear::operator()(const torch::Tensor& x, const c10::optional<torch::Tensor>& slots) const {
  torch::Tensor y;
  if (!parts.empty()) {
    std::vector<torch::Tensor> outs;
    for (const auto& part : parts) outs.push_back(part(x, c10::nullopt));
    y = torch::cat(outs, 1);
  } else {
    y = qmatmul(x, codes, scale, zero, bits, offset, out_features, false);
    if (bias.has_value()) y.add_(*bias);
  }
  if (slots.has_value() && lora_a.has_value()) lora_add(y, x, *lora_a, *lora_b, *lora_spans, *slots);
  return y;
}

DecoderStack::DecoderStack(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, double eps, double scale)
    : num_heads(num_heads), num_kv_heads(num_kv_heads), head_dim(head_dim), eps(eps), scale(scale) {}

void DecoderStack::add_layer(torch::Tensor input_norm, QuantLinear qkv, QuantLinear o, torch::Tensor post_norm,
                             QuantLinear gate_up, QuantLinear down, int64_t window) {
  layers.push_back({std::move(input_norm), std::move(qkv), std::move(o), std::move(post_norm), std::move(gate_up),
                    std::move(down), window});
}

// x: (S, hidden) bf16, one token per sequence; cos/sin: (S, head_dim / 2) bf16; kv_caches: one (2, blocks,
// block_size, Hkv, D) per layer; slots: (S,) cache slot of each token; tables/lens as decode_attention takes them;
// lora_slots: (S,) each token's LoRA slot (-1: none), or none where no token has an adapter.
torch::Tensor DecoderStack::forward(torch::Tensor x, torch::Tensor cos, torch::Tensor sin,
                                    const std::vector<torch::Tensor>& kv_caches, torch::Tensor slots,
                                    torch::Tensor tables, torch::Tensor lens,
                                    c10::optional<torch::Tensor> lora_slots) const {
  TORCH_CHECK(kv_caches.size() == layers.size(), "one KV cache per layer");
  const int64_t S = x.size(0), q_size = num_heads * head_dim, kv_size = num_kv_heads * head_dim;
  x = x.clone();  // the residual stream, updated in place
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& l = layers[i];
    auto qkv = l.qkv(rms_norm(x, l.input_norm, eps, false), lora_slots);
    auto q = qkv.narrow(1, 0, q_size).view({S, num_heads, head_dim});
    auto k = qkv.narrow(1, q_size, kv_size).view({S, num_kv_heads, head_dim});
    auto v = qkv.narrow(1, q_size + kv_size, kv_size).view({S, num_kv_heads, head_dim});
    auto rotated = rotary(q, k, cos, sin);
    write_kv(kv_caches[i], rotated[1], v, slots);
    auto attn = decode_attention(rotated[0], kv_caches[i], tables, lens, scale, l.window, 0.0);
    x.add_(l.o(attn.view({S, q_size}), lora_slots));
    x.add_(l.down(silu_and_mul(l.gate_up(rms_norm(x, l.post_norm, eps, false), lora_slots)), lora_slots));
  }
  return x;
}
