// The native kernels as C++ functions: bound to Python one by one (bindings.cpp) and composed into whole decode
// steps (decoder_stack.cpp).
#pragma once
#include <torch/extension.h>

#include <vector>

torch::Tensor decode_attention(torch::Tensor q, torch::Tensor kv, torch::Tensor tables, torch::Tensor lens,
                               double scale, int64_t window, double softcap);
bool has_prefill_attention();
torch::Tensor prefill_attention(torch::Tensor q, torch::Tensor kv, torch::Tensor table, int64_t context_len,
                                double scale, int64_t window, double softcap);
bool has_qmatmul();
torch::Tensor qmatmul(torch::Tensor x, torch::Tensor codes, torch::Tensor scale, c10::optional<torch::Tensor> bias,
                      int64_t bits, double offset);
torch::Tensor qmatmul_path(torch::Tensor x, torch::Tensor codes, torch::Tensor scale,
                           c10::optional<torch::Tensor> bias, int64_t bits, double offset, bool panels);
int64_t qmatmul_panel_rows();
// qmatmul's path for batches of x rows: out (M, N) bf16 is written
void qmatmul_panels(const torch::Tensor& x, const torch::Tensor& codes, const torch::Tensor& scale,
                    const c10::optional<torch::Tensor>& bias, int64_t bits, double offset, torch::Tensor& out);
torch::Tensor qdequantize(torch::Tensor codes, torch::Tensor scale, c10::optional<torch::Tensor> bias, int64_t bits,
                          double offset, int64_t in_features);
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps, bool gemma);
torch::Tensor silu_and_mul(torch::Tensor gate_up);
std::vector<torch::Tensor> rotary(torch::Tensor q, torch::Tensor k, torch::Tensor cos, torch::Tensor sin);
