"""The error weight merging adds on a quantized base, as perplexity: the embedded model (SmolLM2-135M-Instruct, Q4_1)
with one rank-16 LoRA adapter on every projection (random A/B of standard deviation --std, alpha 32, written on the
fly), over TEXT (the opening of Dickens' A Tale of Two Cities, public domain): the base model, the adapter unmerged
(beside the quantized weights, in the compute dtype) and merged (dequantize -> add -> re-quantize to Q4_1).

    python benchmarks/lora_merge_ppl.py [--std 0.01] [--model PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from mistralpy import LLM, SamplingParams
from mistralpy.bench.lora import write_adapter
from mistralpy.lora import LoRARequest

TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, "
    "it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was the season of "
    "Darkness, it was the spring of hope, it was the winter of despair, we had everything before us, we had nothing "
    "before us, we were all going direct to Heaven, we were all going direct the other way - in short, the period "
    "was so far like the present period, that some of its noisiest authorities insisted on its being received, for "
    "good or for evil, in the superlative degree of comparison only. There were a king with a large jaw and a queen "
    "with a plain face, on the throne of England; there were a king with a large jaw and a queen with a fair face, on "
    "the throne of France. In both countries it was clearer than crystal to the lords of the State preserves of "
    "loaves and fishes, that things in general were settled for ever."
)


def perplexity(llm: LLM, lora: LoRARequest | None = None) -> tuple[float, int]:
    ids = llm.get_tokenizer().encode(TEXT)
    params = SamplingParams(max_tokens=1, prompt_logprobs=0)
    out = llm.generate([ids], params, use_tqdm=False, lora_request=lora)[0]
    rows = out.prompt_logprobs[1:]  # position 0 has no prediction
    nll = -sum(row[token].logprob for row, token in zip(rows, ids[1:], strict=True))
    return math.exp(nll / len(rows)), len(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--std", type=float, default=0.01)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--model", default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "a"
        base = LLM(args.model, enable_lora=True, max_loras=1, max_lora_rank=args.rank)
        write_adapter(folder, base.engine.model_config, args.rank, seed=0, std=args.std)
        base_ppl, tokens = perplexity(base)
        unmerged, _ = perplexity(base, LoRARequest("a", 1, str(folder)))
        del base
        merged, _ = perplexity(LLM(args.model, lora_merge=[str(folder)]))
    report = {"tokens": tokens, "rank": args.rank, "std": args.std, "base": base_ppl, "unmerged": unmerged,
              "merged": merged, "merged_minus_unmerged": merged - unmerged}  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
