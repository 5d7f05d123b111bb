"""The error merging adds on a base of another GGUF type (lora_merge_ppl.py measures Q4_1): the embedded model's
projections re-quantized to --type (from their Q4_1 values: that is the base model here; the embeddings stay Q4_1),
then, over the same text and with the same random rank-16 adapter, the base, the adapter unmerged (beside the
quantized weights) and merged (dequantize -> add -> re-quantize to --type). The K-quants need rows of a multiple of
256 weights: the embedded model (hidden size 576) takes them only for its down projections (the others stay Q4_1).

    python benchmarks/lora_merge_ppl_types.py [--type Q5_0] [--std 0.01] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from lora_merge_ppl import perplexity

from mistralpy import LLM
from mistralpy.bench.lora import write_adapter
from mistralpy.lora import LoRARequest
from mistralpy.lora.merge import merge_adapters
from mistralpy.lora.projections import projection_layers
from mistralpy.quant.factory import linear_from_gguf
from mistralpy.quant.ggml_types import GGML_QUANT_SIZES, GGMLQuantizationType
from mistralpy.quant.isq import quantize
from mistralpy.quant.quantized_linear import FusedQuantizedLinear


def retype(layer, qtype: GGMLQuantizationType, dtype):
    if isinstance(layer, FusedQuantizedLinear):
        return FusedQuantizedLinear([retype(p, qtype, dtype) for p in layer.parts])
    if layer.in_features % GGML_QUANT_SIZES[qtype][0]:
        return layer
    raw = quantize(layer.dequantize(), qtype)
    return linear_from_gguf(raw, qtype, (layer.out_features, layer.in_features), layer.bias, dtype)


def retyped(llm: LLM, qtype: GGMLQuantizationType) -> LLM:
    """`llm` with every decoder projection (a LoRA layer's base) re-quantized to `qtype`."""
    model = llm.engine.model_runner.model
    for name, layer in projection_layers(model).items():
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, retype(layer, qtype, llm.engine.dtype))
    model.model.forget_decode_stack()
    return llm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--type", default="Q5_0", choices=["Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q5_K", "Q6_K"])
    p.add_argument("--std", type=float, default=0.01)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--model", default=None)
    args = p.parse_args()
    qtype = GGMLQuantizationType[args.type]
    options = dict(enable_prefix_caching=False)  # the weights change between runs of one prompt
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "a"
        base = retyped(LLM(args.model, enable_lora=True, max_loras=1, max_lora_rank=args.rank, **options), qtype)
        write_adapter(folder, base.engine.model_config, args.rank, seed=0, std=args.std)
        base_ppl, tokens = perplexity(base)
        unmerged, _ = perplexity(base, LoRARequest("a", 1, str(folder)))
        del base
        llm = retyped(LLM(args.model, **options), qtype)
        merge_adapters(llm.engine.model_runner.model, [(str(folder), 1.0)], llm.engine.dtype)
        llm.engine.model_runner.model.model.forget_decode_stack()
        merged, _ = perplexity(llm)
    report = {"type": args.type, "tokens": tokens, "rank": args.rank, "std": args.std, "base": base_ppl,
              "unmerged": unmerged, "merged": merged, "merged_minus_unmerged": merged - unmerged}  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
