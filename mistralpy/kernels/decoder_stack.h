// DecoderStack: Llama decoder layers (RMSNorm, fused QKV, rotary, paged decode attention, SwiGLU MLP) over
// group-quantized weights, run for a decode step in one call. Built once per model from its layers' tensors.
#pragma once
#include "ops.h"

// A projection over group-quantized codes, as quant/native_linear.py runs it; or parts of different types fused
// along the output (quant/quantized_linear.py's FusedQuantizedLinear: e.g. Q4_K q and k with a Q6_K v).
struct QuantLinear {
  QuantLinear(torch::Tensor codes, torch::Tensor scale, c10::optional<torch::Tensor> zero, int64_t bits,
              double offset, int64_t out_features, c10::optional<torch::Tensor> bias);
  static QuantLinear concat(std::vector<QuantLinear> parts);
  // with LoRA slots (lora/layer.py's buffers, shared: a hot-loaded adapter is seen without a rebuild)
  QuantLinear with_lora(torch::Tensor a, torch::Tensor b, torch::Tensor spans) const;
  // y = x W^T (+ bias), plus the LoRA delta of each token's slot where `slots` is given
  torch::Tensor operator()(const torch::Tensor& x, const c10::optional<torch::Tensor>& slots) const;

  torch::Tensor codes, scale;
  c10::optional<torch::Tensor> zero, bias;
  int64_t bits;
  double offset;
  int64_t out_features;
  std::vector<QuantLinear> parts;  // when not empty: the outputs of these, concatenated
  c10::optional<torch::Tensor> lora_a, lora_b, lora_spans;  // (L, K, R), (L, R, N) bf16, (L, parts, 4) int64
};

class DecoderStack {
 public:
  DecoderStack(int64_t num_heads, int64_t num_kv_heads, int64_t head_dim, double eps, double scale);
  void add_layer(torch::Tensor input_norm, QuantLinear qkv, QuantLinear o, torch::Tensor post_norm,
                 QuantLinear gate_up, QuantLinear down, int64_t window);
  torch::Tensor forward(torch::Tensor x, torch::Tensor cos, torch::Tensor sin,
                        const std::vector<torch::Tensor>& kv_caches, torch::Tensor slots, torch::Tensor tables,
                        torch::Tensor lens, c10::optional<torch::Tensor> lora_slots) const;
  size_t num_layers() const { return layers.size(); }

 private:
  struct Layer {
    torch::Tensor input_norm;
    QuantLinear qkv, o;
    torch::Tensor post_norm;
    QuantLinear gate_up, down;
    int64_t window;  // sliding window (0: none)
  };
  int64_t num_heads, num_kv_heads, head_dim;
  double eps, scale;
  std::vector<Layer> layers;
};
