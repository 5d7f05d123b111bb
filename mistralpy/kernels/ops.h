// The native kernels as C++ functions: bound to Python one by one (bindings.cpp) and composed into whole decode
// steps (decoder_stack.cpp).
#pragma once
#include <torch/extension.h>

#include <vector>

// whether the attention kernels take these queries over this cache (bf16 or float32 q; a cache of q's dtype or int8)
bool attention_supports(const torch::Tensor& q, const torch::Tensor& kv);
torch::Tensor decode_attention(torch::Tensor q, torch::Tensor kv, torch::Tensor tables, torch::Tensor lens,
                               double scale, int64_t window, double softcap);
// writes K/V rows (S, Hkv, D) into their cache slots, quantizing them for an int8 cache (kv_cache.h)
void write_kv(torch::Tensor kv, torch::Tensor k, torch::Tensor v, torch::Tensor slots);
torch::Tensor prefill_attention(torch::Tensor q, torch::Tensor kv, torch::Tensor table, int64_t context_len,
                                double scale, int64_t window, double softcap);
bool has_qmatmul();
// the ISA level this build was made for (kernels/isa_level.py)
const char* isa_level();
// whether qmatmul multiplies batches of 16 or more rows with AMX int8 tiles in this process (qmatmul_amx.h)
bool amx_tiles();
// x (M, K) bf16 or float32 times the weight in panels (quant_common.h) of N rows, transposed -> (M, N) in x's dtype
// (float32: float_out)
torch::Tensor qmatmul(torch::Tensor x, torch::Tensor codes, torch::Tensor scale, c10::optional<torch::Tensor> bias,
                      int64_t bits, double offset, int64_t N, bool float_out);
// y (S, N) bf16 += each token's LoRA delta (x[t] @ a[s]) @ b[s], s = slots[t] (-1: none), over the slot's spans
// (L, parts, 4): ranks k0 .. k1 into output columns c0 .. c1; a (L, K, R), b (L, R, N) bf16 (lora_delta.cpp)
void lora_add(torch::Tensor y, torch::Tensor x, torch::Tensor a, torch::Tensor b, torch::Tensor spans,
              torch::Tensor slots);
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps, bool gemma);
torch::Tensor silu_and_mul(torch::Tensor gate_up);
std::vector<torch::Tensor> rotary(torch::Tensor q, torch::Tensor k, torch::Tensor cos, torch::Tensor sin);
// sets the tokens that llguidance's int32 bitmask (M, W) disallows to -inf in logits rows `rows` (M,), in place
void apply_token_bitmask(torch::Tensor logits, torch::Tensor bitmask, torch::Tensor rows);
// the index of each float32 row's maximum, as torch.argmax(dim=1) answers (argmax.cpp)
torch::Tensor argmax_rows(torch::Tensor logits);
