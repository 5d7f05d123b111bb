"""X-LoRA models of tiny bases in PEFT's layout, run by PEFT's XLoraModel (the oracle).

PEFT 0.21's save_pretrained drops the classifier's first linear layer and writes adapter subfolders with stray and
missing tensors, so the classifier's weights are written here in its own key layout, each adapter's subfolder is the
adapter as PEFT saves a plain LoRA, and the model is loaded back with PEFT's from_pretrained (checked to hold the
same weights)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch

from .lora_adapters import make_adapter


def make_xlora(
    base: torch.nn.Module, folder: Path, seed: int, num_adapters: int = 2, r: int = 4, targets=None, **options
) -> torch.nn.Module:
    """Saves an X-LoRA model of `base` (left untouched) into `folder`: `num_adapters` random LoRA adapters
    (PEFT names them "0", "1", ...) and a random classifier; `options`: XLoraConfig fields. Returns PEFT's model
    loaded back from `folder`."""
    import peft
    from safetensors.torch import save_file

    sources = {}
    for j in range(num_adapters):
        make_adapter(base, folder.parent / f"{folder.name}-src{j}", seed=seed + j, r=r, targets=targets)
        sources[str(j)] = str(folder.parent / f"{folder.name}-src{j}")
    options = {"xlora_depth": 1, "xlora_size": 16, **options}
    config = peft.XLoraConfig(task_type="CAUSAL_LM", hidden_size=base.config.hidden_size, adapters=sources, **options)
    model = peft.get_peft_model(_uncached(base), config)
    gen = torch.Generator().manual_seed(seed + 100)
    classifier = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "internal_xlora_classifier" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
                classifier[name] = p.detach().clone().contiguous()
    model.save_pretrained(folder)
    for name, source in sources.items():  # its adapter subfolders are broken too (stray and missing tensors)
        shutil.rmtree(folder / name)
        shutil.copytree(source, folder / name)
    save_file(classifier, str(folder / "adapter_model.safetensors"))
    loaded = peft.PeftModel.from_pretrained(
        _uncached(base), folder, adapters={name: str(folder / name) for name in sources}
    ).eval()
    state = dict(loaded.named_parameters())
    for name, tensor in classifier.items():
        assert torch.equal(state[name], tensor), name  # PEFT reads back exactly what was written
    return loaded


def _uncached(base: torch.nn.Module) -> torch.nn.Module:
    model = copy.deepcopy(base)
    model.config.use_cache = False  # PEFT's X-LoRA refuses a KV cache
    return model


def xlora_logits(model: torch.nn.Module, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """PEFT's logits of `ids` and its scalings (tokens, LoRA layers, adapters)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    return logits, model.get_latest_scalings()[0].float()
