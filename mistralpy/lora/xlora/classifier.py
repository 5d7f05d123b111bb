"""The X-LoRA classifier and PEFT's rules on its output: hidden states -> per-token, per-LoRA-layer adapter scalings.

`XLoraClassifier`: PEFT's Linear/ReLU stack (dropout is off at inference) on the scaling pass's last hidden states
(after the final norm), reshaped to (tokens, LoRA layers, adapters), softmaxed at a temperature when enabled.
`select`: what each layer takes of them: the top_k_lora largest (the rest zero), renormalised by a softmax over the
kept ones when enable_softmax_topk; computed in float32 like PEFT's fp32 reference."""

from __future__ import annotations

import torch
from torch import nn

from .config import XLoraConfig


class XLoraClassifier(nn.Module):
    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]], config: XLoraConfig, num_lora_layers: int):
        super().__init__()
        self.config, self.num_lora_layers = config, num_lora_layers
        linears = []
        for weight, bias in layers:
            linear = nn.Linear(weight.shape[1], weight.shape[0])
            linear.weight.data, linear.bias.data = weight.float(), bias.float()
            linear.requires_grad_(False)
            linears.append(linear)
        self.linears = nn.ModuleList(linears)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(T, hidden) -> scalings (T, LoRA layers, adapters), float32."""
        x = hidden.float()
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if i < len(self.linears) - 1:
                x = torch.relu(x)
        n = self.config.num_adapters
        if self.config.layerwise_scalings:
            scalings = x.view(-1, self.num_lora_layers, n)
        else:
            scalings = x.unsqueeze(1).expand(-1, self.num_lora_layers, n)
        if self.config.enable_softmax:
            scalings = torch.softmax(scalings / self.config.softmax_temperature, dim=-1)
        return scalings


def select(scalings: torch.Tensor, config: XLoraConfig) -> torch.Tensor:
    """PEFT's get_maybe_topk_scalings over the last dimension (adapters)."""
    if config.top_k_lora is not None:
        _, top = torch.topk(scalings, k=config.top_k_lora, dim=-1)
        mask = torch.zeros_like(scalings, dtype=torch.bool).scatter_(-1, top, True)
        scalings = scalings * mask.to(scalings.dtype)
    if config.enable_softmax_topk:
        kept = scalings != 0
        scalings = torch.softmax(scalings.masked_fill(~kept, float("-inf")), dim=-1).masked_fill(~kept, 0.0)
    return scalings
