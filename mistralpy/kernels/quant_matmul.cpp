// Matmul against group-quantized weights kept quantized (layout: quant_common.h): y = x W^T for any number of rows of
// x (decode steps and prefill alike). Each row of x is quantized per weight group (32 or 16) to int8 first,
// x_k ~ d q_k with d = max |x_k| / 127
// (llama.cpp's activations for its quantized dot products), its codes reordered to the weight lanes' k order. Per
// panel of 16 weight rows, a 64-byte block of codes is one (8 bits) or two (4 bits: the low and the high nibbles)
// u8 operands of a u8 x s8 dot product (vpdpbusd): 16 rows in the lanes, 4 k per lane, 64 products per instruction
// where a bf16 dot product has 32. A group's integer sum S = sum_k w_k q_k is exact; with the weight's a (w + c) + b,
// the row's result gains d (a S + (a c + b) Q) per group, Q = sum_k q_k.
// An x row's sums are formed in the same order whatever the number of rows: results do not depend on the batch.
// The result is stored as bf16, or as float32 (logits: a greedy choice is not left to ties at bf16's resolution).
// quant/qmatmul_reference.py spells the same arithmetic in torch, operation for operation.
// Per ISA level (isa.h): avx512 (qmatmul_avx512.h, vpdpbusd; batches of 16+ rows by AMX tile products where the CPU
// and the kernel allow: qmatmul_amx.h), avx2 (qmatmul_avx2.h, vpmaddubsw + vpmaddwd) and
// portable (qmatmul_portable.h, plain C++): the same results, bit for bit. x may be bf16 or float32 (the avx2 and
// portable levels' compute dtype); float32 rows are quantized by quant_x.h on every level.
#include "ops.h"
#include "qmatmul_avx2.h"
#include "qmatmul_avx512.h"
#include "qmatmul_portable.h"
#include "quant_common.h"
#include "quant_x.h"

namespace {

template <int kBits, int kG, typename P, typename O>
void run_level(const torch::Tensor& x, int64_t M, int64_t K, const uint8_t* codes, const P* scale, const P* bias,
               double offset, O* out, int64_t N) {
#ifdef MISTRALPY_AVX512_VNNI
  const quant::QuantizedX qx =
      x.scalar_type() == torch::kBFloat16
          ? avx512::quantize_x<kG>(reinterpret_cast<const uint16_t*>(x.data_ptr<c10::BFloat16>()), M, K, kBits)
          : quant::quantize_x_f32<kG>(x.data_ptr<float>(), M, K, kBits);
  avx512::qmatmul_impl<kBits, kG>(qx, M, K, codes, scale, bias, offset, out, N);
#else
#ifdef MISTRALPY_AVX2
  using Pass = quant::Avx2Pass;
#else
  using Pass = quant::PortablePass;
#endif
  if (x.scalar_type() == torch::kBFloat16) {  // quantized as float32 (bf16 -> float32 is exact), without a copy
    quant::qmatmul_rows<Pass, kBits, kG>(x.data_ptr<c10::BFloat16>(), M, K, codes, scale, bias, offset, out, N);
  } else {
    quant::qmatmul_rows<Pass, kBits, kG>(x.data_ptr<float>(), M, K, codes, scale, bias, offset, out, N);
  }
#endif
}

}  // namespace

bool has_qmatmul() { return true; }

const char* isa_level() { return isa_level_name(); }

bool amx_tiles() {
#ifdef MISTRALPY_AMX
  return amx::available();
#else
  return false;
#endif
}

// x: (M, K) bf16 or float32 -> (M, N) in x's dtype, or float32 with float_out. offset: c, added to every code before
// the scale.
torch::Tensor qmatmul(torch::Tensor x, torch::Tensor codes, torch::Tensor scale, c10::optional<torch::Tensor> bias,
                      int64_t bits, double offset, int64_t N, bool float_out) {
  TORCH_CHECK((x.scalar_type() == torch::kBFloat16 || x.scalar_type() == torch::kFloat32) && x.dim() == 2,
              "x must be 2-D bf16 or float32");
  const quant::Shape shape = quant::check_params(codes, scale, bias, bits, N);
  const int64_t M = x.size(0), K = shape.K, group = shape.group;
  TORCH_CHECK(x.size(1) == K, "x has ", x.size(1), " features, the weight ", K);
  x = x.contiguous();
  const bool to_float = float_out || x.scalar_type() == torch::kFloat32;
  auto out = torch::empty({M, N}, x.options().dtype(to_float ? torch::kFloat32 : torch::kBFloat16));
  quant::with_param_type(scale, [&](auto tag) {
    using P = decltype(tag);
    const P* bp = bias.has_value() ? bias->data_ptr<P>() : nullptr;
    auto run = [&](auto* op) {
      const uint8_t* cp = codes.data_ptr<uint8_t>();
      const P* sp = scale.data_ptr<P>();
      if (bits == 4 && group == 32) run_level<4, 32, P>(x, M, K, cp, sp, bp, offset, op, N);
      if (bits == 4 && group == 16) run_level<4, 16, P>(x, M, K, cp, sp, bp, offset, op, N);
      if (bits == 8 && group == 32) run_level<8, 32, P>(x, M, K, cp, sp, bp, offset, op, N);
      if (bits == 8 && group == 16) run_level<8, 16, P>(x, M, K, cp, sp, bp, offset, op, N);
    };
    if (to_float) {
      run(out.data_ptr<float>());
    } else {
      run(out.data_ptr<c10::BFloat16>());
    }
  });
  return out;
}
