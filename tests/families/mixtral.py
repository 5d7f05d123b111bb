import re
from pathlib import Path

import gguf
import torch

from . import BASE_CONFIG, FamilySpec
from .gguf_writer import permute_llama_qk

# the real template, which llama.cpp's converter copies into GGUF metadata (the file's first line names its source)
_, CHAT_TEMPLATE = (
    (Path(__file__).parents[1] / "chat_templates" / "mixtral.jinja").read_text(encoding="utf-8").split("\n", 1)
)
_EXPERT = re.compile(r"^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w[123])\.weight$")


def stack_experts(tensors: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """llama.cpp's converter (LlamaModel.modify_tensors) permutes q/k like Llama's and stacks each layer's experts
    into one (n_expert, rows, cols) tensor per projection, expert 0 first."""
    out, experts = {}, {}
    for name, t in permute_llama_qk(tensors, cfg).items():
        m = _EXPERT.match(name)
        if m is None:
            out[name] = t
        else:
            layer, expert, w = m.groups()
            experts.setdefault((layer, w), {})[int(expert)] = t
    for (layer, w), by_expert in experts.items():
        assert sorted(by_expert) == list(range(cfg.num_local_experts))
        stacked = torch.stack([by_expert[e] for e in range(cfg.num_local_experts)])
        out[f"model.layers.{layer}.block_sparse_moe.experts.{w}.weight"] = stacked
    return out


def _metadata(writer: gguf.GGUFWriter, cfg) -> None:
    writer.add_expert_count(cfg.num_local_experts)
    writer.add_expert_used_count(cfg.num_experts_per_tok)
    if cfg.sliding_window is not None:
        writer.add_sliding_window(cfg.sliding_window)


SPEC = FamilySpec(
    name="mixtral",
    hf_class="MixtralForCausalLM",
    config_class="MixtralConfig",
    # 4 experts, 2 per token; Mixtral's rope_theta; a window of 12 positions, which the tests' prompts (22+ tokens)
    # run past
    config=dict(
        BASE_CONFIG,
        rms_norm_eps=1e-5,
        rope_theta=1000000.0,
        sliding_window=12,
        num_local_experts=4,
        num_experts_per_tok=2,
        tie_word_embeddings=False,
    ),
    gguf_arch=gguf.MODEL_ARCH.LLAMA,
    convert=stack_experts,
    metadata=_metadata,
    chat_template=CHAT_TEMPLATE,
)
