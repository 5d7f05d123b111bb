"""`mistralpy bench --lora N`: aggregate decode tokens/s of concurrent requests spread over N LoRA adapters (rank
`--lora-rank` on every projection, written on the fly in PEFT's format for the model's shapes) against the same
requests on the base model (LoRA off), in the same run, interleaved rounds (the median of each side); and the
hot-load time of one more adapter."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

PROJECTIONS = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}


def write_adapter(folder: Path, cfg, rank: int, seed: int, std: float = 0.01) -> None:
    """A PEFT LoRA folder of random A/B (small: the outputs stay sensible) on every projection of every layer."""
    from safetensors.torch import save_file

    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    h, m = cfg.hidden_size, cfg.intermediate_size
    shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h)}
    shapes |= {"gate_proj": (h, m), "up_proj": (h, m), "down_proj": (m, h)}
    gen, tensors = torch.Generator().manual_seed(seed), {}
    for i in range(cfg.num_hidden_layers):
        for block, names in PROJECTIONS.items():
            for name in names:
                fan_in, fan_out = shapes[name]
                prefix = f"base_model.model.model.layers.{i}.{block}.{name}"
                tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, fan_in, generator=gen) * std
                tensors[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, rank, generator=gen) * std
    folder.mkdir(parents=True)
    save_file(tensors, folder / "adapter_model.safetensors")
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": [*shapes]}
    (folder / "adapter_config.json").write_text(json.dumps(config))


@dataclass
class LoRABenchResult:
    requests: int
    adapters: int
    rank: int
    tokens: int
    base_tok_s: float
    lora_tok_s: float
    hot_load_s: float

    @property
    def ratio(self) -> float:
        return self.lora_tok_s / self.base_tok_s

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 4)}


def decode_rate(llm, prompts: list[str], tokens: int, loras) -> float:
    from ..sampling_params import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False, lora_request=loras)
    elapsed = time.perf_counter() - start
    return sum(len(o.outputs[0].token_ids) for o in outputs) / elapsed


def run_lora_bench(base, lora, requests: int, adapters: int, rank: int, tokens: int, rounds: int) -> LoRABenchResult:
    """`base`, `lora`: LLMs of the same model, without and with enable_lora (max_loras >= adapters + 1)."""
    from ..lora import LoRARequest

    prompts = [f"Question {i}: tell me about the number {i}." for i in range(requests)]
    with tempfile.TemporaryDirectory() as tmp:
        reqs = []
        for k in range(adapters + 1):
            write_adapter(Path(tmp) / f"a{k}", lora.engine.model_config, rank, k)
            reqs.append(LoRARequest(f"a{k}", k + 1, str(Path(tmp) / f"a{k}")))
        loras = [reqs[i % adapters] for i in range(requests)]
        warm = dict(use_tqdm=False)
        from ..sampling_params import SamplingParams

        base.generate(prompts, SamplingParams(max_tokens=2), **warm)
        lora.generate(prompts, SamplingParams(max_tokens=2), lora_request=loras, **warm)  # loaded, warm
        rates: dict[str, list[float]] = {"base": [], "lora": []}
        for _ in range(rounds):  # interleaved: a busy machine slows both alike
            rates["base"].append(decode_rate(base, prompts, tokens, None))
            rates["lora"].append(decode_rate(lora, prompts, tokens, loras))
        start = time.perf_counter()
        lora.engine.lora.acquire(reqs[-1], busy=set())  # read, checked and put in a free slot: a hot load
        hot = time.perf_counter() - start
    base_rate, lora_rate = statistics.median(rates["base"]), statistics.median(rates["lora"])
    return LoRABenchResult(requests, adapters, rank, tokens, base_rate, lora_rate, hot)


def format_lora_table(r: LoRABenchResult) -> str:
    return (
        f"{r.requests} concurrent requests over {r.adapters} LoRA adapters (rank {r.rank}, every projection), "
        f"{r.tokens} tokens each\n"
        f"  base model      {r.base_tok_s:8.1f} tok/s\n"
        f"  with adapters   {r.lora_tok_s:8.1f} tok/s  ({r.ratio:.0%} of base)\n"
        f"  hot load of a rank-{r.rank} adapter: {r.hot_load_s * 1000:.0f} ms"
    )
