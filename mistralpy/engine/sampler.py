"""Sampler: the logits processors (logits_processors.py), then temperature, top-k, top-p, min-p and a draw, vectorised
over the batch, with a torch.Generator per seeded request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..outputs import Logprob
from ..structured.sampler_hooks import consume_sampled, mask_chunk, masks_for
from ..structured.step_masks import StepMasks
from ..structured.token_mask import MaskKernel
from .logits_processors import apply_logits_processors, list_tensor
from .request import Request

# A temperature this small is already greedy in effect; clamping keeps logits / T finite in fp32.
_MIN_TEMPERATURE = 1e-5
# Bounds the (positions, vocab) fp32 log_softmax for long prompts.
_PROMPT_LOGPROBS_CHUNK = 512
# How many of a row's most likely tokens top-p looks among for its set, in turn (a full sort where it is larger).
_TOP_P_CANDIDATES = (256, 4096)
# Rows sampled together: bounds the step's fp32 copies of the logits (8 x 49152 floats: 1.5 MB) without a per-row loop.
_SAMPLE_CHUNK = 8
# A row whose top_k is at most this is filtered and drawn among its top-k tokens only (sample_random).
_TOP_K_CANDIDATES = 1024

# The native greedy choice (kernels/argmax.cpp): float32 rows -> each row's torch.argmax(dim=1), faster.
ArgmaxKernel = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SamplerOutput:
    token_ids: list[int]
    logprobs: list[dict[int, Logprob] | None]  # one per request; None where logprobs were not asked for


def apply_temperature(logits: torch.Tensor, temperatures: list[float]) -> None:
    # Greedy rows (T == 0) are divided by 1: their token is the argmax taken before this step.
    temps = [max(t, _MIN_TEMPERATURE) if t > 0 else 1.0 for t in temperatures]
    if any(t != 1.0 for t in temps):
        logits.div_(list_tensor(temps, logits.dtype, logits.device).unsqueeze(1))


def apply_top_k(logits: torch.Tensor, top_ks: list[int]) -> None:
    """Keep the k largest logits per row (ties with the k-th are kept); k <= 0 or k >= vocab is off."""
    vocab = logits.shape[1]
    active = [0 < k < vocab for k in top_ks]
    if not any(active):
        return
    ks = [k if on else 1 for k, on in zip(top_ks, active, strict=True)]
    top_values = logits.topk(max(ks), dim=1).values
    index = list_tensor([k - 1 for k in ks], torch.long, logits.device)
    threshold = top_values.gather(1, index.unsqueeze(1))
    threshold.masked_fill_(~list_tensor(active, torch.bool, logits.device).unsqueeze(1), float("-inf"))
    logits.masked_fill_(logits < threshold, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_ps: list[float]) -> None:
    """Keep the smallest set of most likely tokens whose probability mass reaches p (ties with its least likely token
    are kept). The set is looked for among each row's most likely tokens, _TOP_P_CANDIDATES of them and then more,
    which a partial selection finds at a fraction of a full sort's cost; a row sorts in full only where the set is
    larger still (a flat distribution)."""
    if all(p >= 1.0 for p in top_ps):
        return
    probs = logits.softmax(dim=1)
    vocab = probs.shape[1]
    p = list_tensor(top_ps, probs.dtype, logits.device).unsqueeze(1)
    threshold = torch.zeros_like(p)  # p == 1 rows keep everything, even where rounding puts the mass past 1
    rows = (p < 1.0).squeeze(1).nonzero().squeeze(1)
    for k in [c for c in _TOP_P_CANDIDATES if c < vocab] + [vocab]:
        sub = probs[rows]
        top = sub.topk(k, dim=1).values if k < vocab else sub.sort(dim=1, descending=True).values
        mass = top.cumsum(dim=1)
        found = (mass[:, -1:] >= p[rows]).squeeze(1) | (k == vocab)
        kept = ((mass - top) < p[rows]).sum(dim=1, keepdim=True)  # tokens before the mass reaches p, and the one
        threshold[rows[found]] = top[found].gather(1, kept[found] - 1)
        rows = rows[~found]
        if rows.numel() == 0:
            break
    logits.masked_fill_(probs < threshold, float("-inf"))


def apply_min_p(logits: torch.Tensor, min_ps: list[float]) -> None:
    """Drop tokens whose probability is below min_p times the row's top probability."""
    if all(m == 0.0 for m in min_ps):
        return
    probs = logits.softmax(dim=1)
    threshold = probs.amax(dim=1, keepdim=True) * list_tensor(min_ps, probs.dtype, logits.device).unsqueeze(1)
    logits.masked_fill_(probs < threshold, float("-inf"))


def _request_generator(request: Request, device: torch.device) -> torch.Generator:
    if request.generator is None:
        request.generator = torch.Generator(device=device)
        request.generator.manual_seed(request.sampling_params.seed)
    return request.generator


def inverse_cdf_draw(logits: torch.Tensor, requests: list[Request]) -> torch.Tensor:
    """A draw from softmax(logits) per row, in place on logits: the first token whose cumulative (unnormalised)
    probability exceeds u * total, with one u ~ U[0, 1) per row; a seeded row's u comes only from its own generator.
    One uniform a row, where an exponential race (argmax p / q, q ~ Exp(1)) draws a whole vocabulary of them: at 32
    rows of 49152 that was ~25 ms a step, as long as the model's own step."""
    cdf = logits.sub_(logits.amax(dim=1, keepdim=True)).exp_().cumsum_(dim=1)
    unseeded = [i for i, r in enumerate(requests) if r.sampling_params.seed is None]
    u = torch.empty(len(requests), 1, dtype=cdf.dtype, device=cdf.device)
    if unseeded:
        u[unseeded] = torch.rand(len(unseeded), 1, dtype=cdf.dtype, device=cdf.device)
    for i, request in enumerate(requests):
        if request.sampling_params.seed is not None:
            u[i] = torch.rand(1, dtype=cdf.dtype, device=cdf.device, generator=_request_generator(request, cdf.device))
    total = cdf[:, -1:]
    # u * total may round up to total itself, past which no token lies: keep it just below
    target = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    # a row with no finite logit (a logits processor may make one) has a NaN total; its index stays in the vocabulary
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_max_(cdf.shape[1] - 1)


def sample_random(logits: torch.Tensor, requests: list[Request]) -> torch.Tensor:
    """A draw per row after temperature, top-k, top-p and min-p, in place on logits. A row with a small top_k is
    filtered and drawn among its top-k tokens only, in vocabulary order: the same tokens are kept and the same u draws
    the same token as over the whole vocabulary (the other tokens add only zeros to the sums). Which way a row goes
    depends on its own parameters and logits only, so that a seeded row's tokens do not depend on the batch."""
    vocab = logits.shape[1]
    small = [i for i, r in enumerate(requests) if 0 < r.sampling_params.top_k <= min(_TOP_K_CANDIDATES, vocab - 1)]
    token_ids = torch.empty(len(requests), dtype=torch.long, device=logits.device)
    rest = sorted(set(range(len(requests))) - set(small))
    if small:
        index = list_tensor(small, torch.long, logits.device)
        values, candidates, tied = _top_k_candidates(logits[index], [requests[i].sampling_params.top_k for i in small])
        untied = (~tied).nonzero().squeeze(1)
        if untied.numel():
            chosen = _filter_and_draw(values[untied], [requests[small[i]] for i in untied.tolist()])
            token_ids[index[untied]] = candidates[untied].gather(1, chosen.unsqueeze(1)).squeeze(1)
        rest = sorted(rest + [small[i] for i in tied.nonzero().squeeze(1).tolist()])
    if len(rest) == len(requests):
        token_ids = _filter_and_draw(logits, requests)
    elif rest:
        index = list_tensor(rest, torch.long, logits.device)
        token_ids[index] = _filter_and_draw(logits[index], [requests[i] for i in rest])
    return token_ids


def _top_k_candidates(logits: torch.Tensor, top_ks: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's top_k largest logits (-inf past the row's k) and their token ids, in token order, and which rows'
    k-th logit ties with the next one (top-k keeps ties, so their set is larger than k: the full path draws them)."""
    k_max = max(top_ks)
    values, token_ids = logits.topk(k_max + 1, dim=1)
    ks = list_tensor(top_ks, torch.long, logits.device).unsqueeze(1)
    tied = (values.gather(1, ks - 1) == values.gather(1, ks)).squeeze(1)
    values, token_ids = values[:, :k_max], token_ids[:, :k_max]
    values.masked_fill_(torch.arange(k_max, device=logits.device) >= ks, float("-inf"))
    token_ids, order = token_ids.sort(dim=1)
    return values.gather(1, order), token_ids, tied


def _filter_and_draw(logits: torch.Tensor, requests: list[Request]) -> torch.Tensor:
    params = [r.sampling_params for r in requests]
    apply_temperature(logits, [p.temperature for p in params])
    apply_top_k(logits, [p.top_k for p in params])
    apply_top_p(logits, [p.top_p for p in params])
    apply_min_p(logits, [p.min_p for p in params])
    return inverse_cdf_draw(logits, requests)


def _logprob_tensors(
    logprobs: torch.Tensor, token_ids: torch.Tensor, num_top: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    chosen = logprobs.gather(1, token_ids.unsqueeze(1))
    ranks = (logprobs > chosen).sum(dim=1) + 1
    top_values, top_ids = logprobs.topk(num_top, dim=1)
    return chosen.squeeze(1), ranks, top_values, top_ids


def _logprob_dicts(
    tensors: tuple[torch.Tensor, ...], token_ids: list[int], num_tops: list[int]
) -> list[dict[int, Logprob]]:
    chosen, ranks, top_values, top_ids = (t.tolist() for t in tensors)
    out = []
    for row, token in enumerate(token_ids):
        entry = {token: Logprob(chosen[row], ranks[row])}
        for j in range(num_tops[row]):
            entry.setdefault(top_ids[row][j], Logprob(top_values[row][j], j + 1))
        out.append(entry)
    return out


def compute_prompt_logprobs(logits: torch.Tensor, target_ids: list[int], num_logprobs: int) -> list[dict[int, Logprob]]:
    """Raw log-probabilities of each target token (plus the top num_logprobs) at each of logits' positions."""
    if logits.shape[0] != len(target_ids):
        raise ValueError(f"{logits.shape[0]} logit rows for {len(target_ids)} target tokens")
    out: list[dict[int, Logprob]] = []
    for start in range(0, len(target_ids), _PROMPT_LOGPROBS_CHUNK):
        ids = target_ids[start : start + _PROMPT_LOGPROBS_CHUNK]
        logprobs = logits[start : start + len(ids)].float().log_softmax(dim=1)
        tensors = _logprob_tensors(logprobs, list_tensor(ids, torch.long, logits.device), num_logprobs)
        out.extend(_logprob_dicts(tensors, ids, [num_logprobs] * len(ids)))
    return out


class Sampler:
    """Turns one row of next-token logits per request into one token per request."""

    def __init__(self, mask_kernel: MaskKernel | None = None, argmax_kernel: ArgmaxKernel | None = None) -> None:
        self.mask_kernel = mask_kernel  # the native structured-output mask (kernels/token_mask.cpp), where loaded
        self.argmax_kernel = argmax_kernel

    def sample(self, logits: torch.Tensor, requests: list[Request], masks: StepMasks | None = None) -> SamplerOutput:
        """One token per row. Consumes `logits`: contiguous float32 rows are processed in place, where a copy of a
        step's logits (1.5 MB a chunk of rows) would only raise the step's peak memory. `masks`: the constrained
        requests' token masks where the caller computed them ahead (StepMasks); else they are computed here."""
        masks = masks_for(requests, logits.shape[1], masks)
        out = SamplerOutput([], [])
        for start in range(0, len(requests), _SAMPLE_CHUNK):
            rows = slice(start, start + _SAMPLE_CHUNK)
            chunk = self._sample_rows(logits[rows], requests[rows], masks, start)
            out.token_ids.extend(chunk.token_ids)
            out.logprobs.extend(chunk.logprobs)
        return out

    def _sample_rows(
        self, logits: torch.Tensor, requests: list[Request], masks: StepMasks | None, start: int
    ) -> SamplerOutput:
        if logits.dtype != torch.float32 or not logits.is_contiguous():
            logits = logits.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        lp_rows = [i for i, r in enumerate(requests) if r.sampling_params.logprobs is not None]
        num_tops = [requests[i].sampling_params.logprobs or 0 for i in lp_rows]
        lp_index = list_tensor(lp_rows, torch.long, logits.device) if lp_rows else None
        # Reported logprobs describe the model's own distribution, before bias, penalties or temperature.
        raw_logprobs = logits[lp_index].log_softmax(dim=1) if lp_index is not None else None
        apply_logits_processors(logits, requests)
        constrained = mask_chunk(logits, masks, start, self.mask_kernel)  # after the bias: a grammar's ban is final
        token_ids = self._choose(logits, requests)
        lp_tensors = None
        if raw_logprobs is not None:
            lp_tensors = _logprob_tensors(raw_logprobs, token_ids[lp_index], max(num_tops))
        token_list = token_ids.tolist()
        consume_sampled(requests, constrained, token_list)
        logprobs: list[dict[int, Logprob] | None] = [None] * len(requests)
        if lp_tensors is not None:
            entries = _logprob_dicts(lp_tensors, [token_list[i] for i in lp_rows], num_tops)
            for i, entry in zip(lp_rows, entries, strict=True):
                logprobs[i] = entry
        return SamplerOutput(token_list, logprobs)

    def _choose(self, logits: torch.Tensor, requests: list[Request]) -> torch.Tensor:
        greedy = [r.sampling_params.is_greedy for r in requests]
        if all(greedy):
            return self._argmax(logits)
        random_rows = [i for i, g in enumerate(greedy) if not g]
        if len(random_rows) == len(requests):
            return sample_random(logits, requests)
        token_ids = self._argmax(logits)
        row_index = list_tensor(random_rows, torch.long, logits.device)
        token_ids[row_index] = sample_random(logits[row_index], [requests[i] for i in random_rows])
        return token_ids

    def _argmax(self, logits: torch.Tensor) -> torch.Tensor:
        native = self.argmax_kernel is not None and logits.device.type == "cpu" and logits.dtype == torch.float32
        return self.argmax_kernel(logits) if native and logits.stride(1) == 1 else logits.argmax(dim=1)
