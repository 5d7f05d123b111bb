// The Python module of the native kernels: one binding per kernel, defined in its own source file.
#include <torch/extension.h>

#include "decoder_stack.h"
#include "ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "decode attention over the paged KV cache, read in place");
  m.def("write_kv", &write_kv, "a step's K/V rows into their cache slots (quantized for an int8 cache)");
  m.def("prefill_attention", &prefill_attention, "causal attention of a sequence's new tokens over its paged KV");
  m.def("has_qmatmul", &has_qmatmul, "whether qmatmul was built (every ISA level has it)");
  m.def("isa_level", &isa_level, "the ISA level this build was made for: avx512, avx2 or portable");
  m.def("amx_tiles", &amx_tiles, "whether qmatmul multiplies batches of 16+ rows with AMX int8 tiles here");
  m.def("qmatmul", &qmatmul,
        "x (M, K) bf16 or float32 times a group-quantized weight in panels of 16 rows, transposed -> (M, N) in x's "
        "dtype (float_out: float32)");
  m.def("lora_add", &lora_add,
        "y (S, N) bf16 += each token's LoRA delta (x[t] @ a[s]) @ b[s] of its slot s = slots[t] (-1: none), in place");
  m.def("rms_norm", &rms_norm, "bf16 RMSNorm of rows (Llama's rounding, or Gemma's 1 + weight)");
  m.def("silu_and_mul", &silu_and_mul, "bf16 silu(gate) * up over [gate | up] rows");
  m.def("rotary", &rotary, "bf16 half-split rotary of q and k, from the step's cos/sin rows");
  m.def("apply_token_bitmask", &apply_token_bitmask,
        "structured output: the tokens an int32 bitmask disallows set to -inf in the given float32 logits rows");
  m.def("argmax_rows", &argmax_rows, "greedy tokens: each float32 row's argmax, as torch.argmax(dim=1)");
  pybind11::class_<QuantLinear>(m, "QuantLinear", "a projection over group-quantized codes (for DecoderStack)")
      .def(pybind11::init<torch::Tensor, torch::Tensor, c10::optional<torch::Tensor>, int64_t, double, int64_t,
                          c10::optional<torch::Tensor>>())
      .def_static("concat", &QuantLinear::concat, "parts fused along the output: their outputs concatenated")
      .def("with_lora", &QuantLinear::with_lora, "this projection plus per-slot LoRA deltas (lora_add's a, b, spans)");
  pybind11::class_<DecoderStack>(m, "DecoderStack", "Llama decoder layers for a decode step in one call")
      .def(pybind11::init<int64_t, int64_t, int64_t, double, double>())
      .def("add_layer", &DecoderStack::add_layer)
      .def("forward", &DecoderStack::forward)
      .def_property_readonly("num_layers", &DecoderStack::num_layers);
}
