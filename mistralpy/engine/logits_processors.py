"""Logits processors: what applies to a row's logits before temperature and sampling (logit bias, min_tokens, the
repetition / presence / frequency penalties), vectorised over the batch, in place. Greedy takes the argmax after these.
"""

from __future__ import annotations

import torch

from .request import Request


def list_tensor(data: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host list as a tensor on `device` (the batch's per-row parameters and indices)."""
    # Pinned + non_blocking keeps the host->device copy from stalling the stream behind earlier kernels.
    if device.type == "cuda":
        return torch.tensor(data, dtype=dtype, pin_memory=True).to(device, non_blocking=True)
    return torch.tensor(data, dtype=dtype, device=device)


def _scatter_indices(vocab_size: int, token_lists: list[list[int]]) -> tuple[list[int], list[int]]:
    rows = [i for i, tokens in enumerate(token_lists) for t in tokens if 0 <= t < vocab_size]
    cols = [t for tokens in token_lists for t in tokens if 0 <= t < vocab_size]
    return rows, cols


def apply_logit_bias(logits: torch.Tensor, requests: list[Request]) -> None:
    biases = [r.sampling_params.logit_bias or {} for r in requests]
    rows, cols = _scatter_indices(logits.shape[1], [list(b) for b in biases])
    if not rows:
        return
    values = [v for b in biases for t, v in b.items() if 0 <= t < logits.shape[1]]
    index = (list_tensor(rows, torch.long, logits.device), list_tensor(cols, torch.long, logits.device))
    logits.index_put_(index, list_tensor(values, logits.dtype, logits.device), accumulate=True)


def apply_min_tokens(logits: torch.Tensor, requests: list[Request]) -> None:
    banned: list[list[int]] = []
    for r in requests:
        p = r.sampling_params
        if len(r.output_token_ids) >= p.min_tokens:
            banned.append([])
            continue
        eos = [] if p.ignore_eos else sorted(r.eos_token_ids)
        banned.append(list(p.stop_token_ids or []) + eos)
    rows, cols = _scatter_indices(logits.shape[1], banned)
    if rows:
        index = (list_tensor(rows, torch.long, logits.device), list_tensor(cols, torch.long, logits.device))
        logits[index] = float("-inf")


def _token_counts(token_lists: list[list[int]], vocab_size: int, device: torch.device) -> torch.Tensor:
    """(rows, vocab) occurrence counts; padding goes to an extra column that is dropped."""
    width = max((len(t) for t in token_lists), default=0)
    padded = [t + [vocab_size] * (width - len(t)) for t in token_lists]
    index = list_tensor(padded, torch.long, device).reshape(len(token_lists), width)
    counts = torch.zeros(len(token_lists), vocab_size + 1, dtype=torch.int32, device=device)
    counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.int32))
    return counts[:, :vocab_size]


def apply_penalties(logits: torch.Tensor, requests: list[Request]) -> None:
    """Repetition (HF: prompt + output) then OpenAI presence/frequency (output only), on the rows that use them."""
    rows = [i for i, r in enumerate(requests) if r.sampling_params.has_penalties]
    if not rows:
        return
    device, vocab = logits.device, logits.shape[1]
    params = [requests[i].sampling_params for i in rows]
    row_index = list_tensor(rows, torch.long, device)
    sub = logits[row_index]
    out_counts = _token_counts([requests[i].output_token_ids for i in rows], vocab, device)
    if any(p.repetition_penalty != 1.0 for p in params):
        seen = (out_counts > 0) | (_token_counts([requests[i].prompt_token_ids for i in rows], vocab, device) > 0)
        rep = list_tensor([p.repetition_penalty for p in params], sub.dtype, device).unsqueeze(1)
        penalised = torch.where(sub > 0, sub / rep, sub * rep)
        sub = torch.where(seen, penalised, sub)
    freq = list_tensor([p.frequency_penalty for p in params], sub.dtype, device).unsqueeze(1)
    presence = list_tensor([p.presence_penalty for p in params], sub.dtype, device).unsqueeze(1)
    sub = sub - freq * out_counts - presence * (out_counts > 0)
    logits[row_index] = sub


def apply_logits_processors(logits: torch.Tensor, requests: list[Request]) -> torch.Tensor:
    """Everything before temperature, in place on fp32 (num_reqs, vocab) logits; greedy takes the argmax of this."""
    apply_logit_bias(logits, requests)
    apply_min_tokens(logits, requests)
    apply_penalties(logits, requests)
    return logits
