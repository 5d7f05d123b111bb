// The Python module of the native kernels: one binding per kernel, defined in its own source file.
#include <torch/extension.h>

torch::Tensor decode_attention(torch::Tensor q, torch::Tensor kv, torch::Tensor tables, torch::Tensor lens,
                               double scale, int64_t window, double softcap);
bool has_qmatmul();
torch::Tensor qmatmul(torch::Tensor x, torch::Tensor codes, torch::Tensor scale, c10::optional<torch::Tensor> bias,
                      int64_t bits, double offset);
torch::Tensor qdequantize(torch::Tensor codes, torch::Tensor scale, c10::optional<torch::Tensor> bias, int64_t bits,
                          double offset, int64_t in_features);
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps, bool gemma);
torch::Tensor silu_and_mul(torch::Tensor gate_up);
std::vector<torch::Tensor> rotary(torch::Tensor q, torch::Tensor k, torch::Tensor cos, torch::Tensor sin);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "decode attention over the paged KV cache, read in place");
  m.def("has_qmatmul", &has_qmatmul, "whether qmatmul was built (it needs AVX-512 BF16)");
  m.def("qmatmul", &qmatmul, "x (M, K) bf16 times group-quantized weight codes, transposed -> (M, N) bf16");
  m.def("qdequantize", &qdequantize, "group-quantized weight codes -> (N, K) bf16");
  m.def("rms_norm", &rms_norm, "bf16 RMSNorm of rows (Llama's rounding, or Gemma's 1 + weight)");
  m.def("silu_and_mul", &silu_and_mul, "bf16 silu(gate) * up over [gate | up] rows");
  m.def("rotary", &rotary, "bf16 half-split rotary of q and k, from the step's cos/sin rows");
}
