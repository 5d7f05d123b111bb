"""What `LLM.generate` takes, as vLLM takes it: a prompt or a list (text, token ids, or a dict with
`prompt` / `prompt_token_ids` and `multi_modal_data`), one SamplingParams or one a prompt, one LoRARequest or one a
prompt; each normalised to a list, errors naming the argument."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import InvalidRequestError
from .lora.request import LoRARequest
from .sampling_params import SamplingParams


def as_prompt_list(prompts: Any) -> list[tuple[str | list[int], str | None, list | None]]:
    """-> (prompt, cache_salt, images) triples."""
    if isinstance(prompts, (str, dict)):
        return [normalise_prompt(prompts)]
    if isinstance(prompts, Sequence) and prompts and all(isinstance(t, int) for t in prompts):
        return [(list(prompts), None, None)]
    if not isinstance(prompts, Sequence) or not prompts:
        raise InvalidRequestError("prompts must be a string, a list of strings or a list of token-id lists")
    return [normalise_prompt(p) for p in prompts]


_PROMPT_KEYS = ("prompt", "prompt_token_ids", "cache_salt", "multi_modal_data")


def normalise_prompt(prompt: Any) -> tuple[str | list[int], str | None, list | None]:
    salt = images = None
    if isinstance(prompt, dict):
        unknown = [k for k in prompt if k not in _PROMPT_KEYS]
        if unknown:
            raise InvalidRequestError(f"unknown prompt keys {unknown}; a prompt dict takes {', '.join(_PROMPT_KEYS)}")
        salt, images = prompt.get("cache_salt"), _images(prompt.get("multi_modal_data"))
        if "prompt_token_ids" in prompt:
            prompt = prompt["prompt_token_ids"]
        elif "prompt" in prompt:
            prompt = prompt["prompt"]
        else:
            raise InvalidRequestError("a prompt dict needs a 'prompt' or 'prompt_token_ids' key")
    if isinstance(prompt, str):
        return prompt, salt, images
    if isinstance(prompt, Sequence) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return list(prompt), salt, images
    raise InvalidRequestError(f"a prompt must be a string or a list of token ids, got {type(prompt).__name__}")


def _images(data: Any) -> list | None:
    """vLLM's multi_modal_data: {"image": one image or a list} (a PIL image, bytes, a path or a data: URL)."""
    if data is None:
        return None
    if not isinstance(data, dict) or set(data) - {"image"}:
        raise InvalidRequestError('multi_modal_data takes {"image": an image or a list of images}')
    images = data.get("image")
    return list(images) if isinstance(images, (list, tuple)) else [images]


def as_params_list(params: Any, n: int) -> list[SamplingParams]:
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n or not all(isinstance(p, SamplingParams) for p in params):
        raise InvalidRequestError(f"sampling_params must be one SamplingParams or a list of {n}")
    return params


def as_lora_list(lora: Any, n: int) -> list[LoRARequest | None]:
    if lora is None or isinstance(lora, LoRARequest):
        return [lora] * n
    loras = list(lora) if isinstance(lora, Sequence) and not isinstance(lora, str) else None
    if loras is None or len(loras) != n or not all(r is None or isinstance(r, LoRARequest) for r in loras):
        raise InvalidRequestError(f"lora_request must be one LoRARequest or a list of {n} (LoRARequest or None)")
    return loras
