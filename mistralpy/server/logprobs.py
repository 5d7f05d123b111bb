"""Engine logprob entries (token id -> Logprob, the chosen token plus the top N) in OpenAI's two formats."""

from __future__ import annotations

from ..outputs import Logprob
from ..tokenizer import Tokenizer
from .responses import CompletionLogprobs, TokenLogprob, TopLogprob


def _token_str(token_id: int, lp: Logprob | None, tokenizer: Tokenizer) -> str:
    if lp is not None and lp.decoded_token is not None:
        return lp.decoded_token
    return tokenizer.decode([token_id], skip_special_tokens=False)


def _top(entry: dict[int, Logprob], num: int) -> list[tuple[int, Logprob]]:
    """The num most likely tokens, most likely first (the chosen token is in the entry even when it ranks lower)."""
    ranked = sorted(entry.items(), key=lambda kv: kv[1].rank if kv[1].rank is not None else 1 << 30)
    return [(t, lp) for t, lp in ranked if lp.rank is not None and lp.rank <= num][:num]


def _top_logprob(text: str, logprob: float) -> TopLogprob:
    return TopLogprob(token=text, logprob=logprob, bytes=list(text.encode()))


def chat_logprobs(
    entries: list[dict[int, Logprob]], token_ids: list[int], num: int, tokenizer: Tokenizer
) -> list[TokenLogprob]:
    out = []
    for entry, token_id in zip(entries, token_ids, strict=True):
        text = _token_str(token_id, entry.get(token_id), tokenizer)
        top = [_top_logprob(_token_str(t, lp, tokenizer), lp.logprob) for t, lp in _top(entry, num)]
        out.append(
            TokenLogprob(token=text, logprob=entry[token_id].logprob, bytes=list(text.encode()), top_logprobs=top)
        )
    return out


def append_completion_logprobs(
    target: CompletionLogprobs,
    entries: list[dict[int, Logprob] | None],
    token_ids: list[int],
    num: int,
    tokenizer: Tokenizer,
    offset: int,
) -> int:
    """Append tokens (text_offset counted from `offset`) to target; returns the offset after the last token.

    top_logprobs holds the num most likely tokens plus the chosen one, as vLLM does. An entry of None (the
    first prompt token) has no logprob.
    """
    for entry, token_id in zip(entries, token_ids, strict=True):
        text = _token_str(token_id, (entry or {}).get(token_id), tokenizer)
        target.tokens.append(text)
        target.text_offset.append(offset)
        offset += len(text)
        if entry is None:
            target.token_logprobs.append(None)
            target.top_logprobs.append(None)
            continue
        target.token_logprobs.append(entry[token_id].logprob)
        top = {_token_str(t, lp, tokenizer): lp.logprob for t, lp in _top(entry, num)}
        top.setdefault(text, entry[token_id].logprob)
        target.top_logprobs.append(top)
    return offset
