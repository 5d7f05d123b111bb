"""What greedy decoding with each penalty must produce, from transformers: the model's logits in float64 with the
penalty applied here, by OpenAI's definition for presence/frequency (output tokens only) and by transformers'
`RepetitionPenaltyLogitsProcessor` for repetition (prompt and output tokens, as vLLM does).

The situations under test are chosen so that the expectations are worth something: the unpenalised greedy answer
repeats a token, each penalty changes it, the three penalties change it differently (so a dropped or swapped field
fails), and every step's winner leads the runner-up by at least `MARGIN` (far above float32 rounding of the logits,
so an engine that computes them in a different order must still pick the same token)."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase, RepetitionPenaltyLogitsProcessor

MARGIN = 1e-3
PENALTIES = ("presence_penalty", "frequency_penalty", "repetition_penalty")
STEPS = 10
# A token prompt, a chat and values where the tiny_llama fixture's greedy answer repeats a token and each penalty
# changes it differently (found by a search; `expected_texts` checks both, so a changed model fails loudly).
VALUES = {"presence_penalty": 0.5, "frequency_penalty": 0.5, "repetition_penalty": 1.2}
PROMPT_IDS = [25184]
CHAT = [{"role": "user", "content": "blue upon write upon"}]


def penalised(logits: torch.Tensor, prompt: list[int], output: list[int], **penalty: float) -> torch.Tensor:
    """(vocab,) float64 logits after the one penalty given."""
    presence = penalty.get("presence_penalty", 0.0)
    frequency = penalty.get("frequency_penalty", 0.0)
    counts = torch.bincount(torch.tensor(output, dtype=torch.long), minlength=logits.shape[0]).double()
    logits = logits - frequency * counts - presence * (counts > 0).double()
    repetition = RepetitionPenaltyLogitsProcessor(penalty.get("repetition_penalty", 1.0))
    return repetition(torch.tensor([prompt + output]), logits.unsqueeze(0))[0]


@torch.no_grad()
def greedy(model: torch.nn.Module, prompt: list[int], steps: int, **penalty: float) -> list[int]:
    """`steps` greedy tokens after `prompt` (no EOS stop), each chosen by at least MARGIN."""
    output: list[int] = []
    for _ in range(steps):
        logits = model(torch.tensor([prompt + output])).logits[0, -1].double()
        top = torch.topk(penalised(logits, prompt, output, **penalty), 2)
        margin = float(top.values[0] - top.values[1])
        assert margin >= MARGIN, f"near-tie at step {len(output)} with {penalty}: choose another prompt"
        output.append(int(top.indices[0]))
    return output


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


def expected_texts(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: list[int]
) -> tuple[str, dict[str, str]]:
    """(the unpenalised greedy text, {penalty name: the greedy text with only that penalty, at its VALUES value})."""
    plain = greedy(model, prompt, STEPS)
    assert len(set(plain)) < len(plain), "the unpenalised answer must repeat a token"
    answers = {name: greedy(model, prompt, STEPS, **{name: VALUES[name]}) for name in PENALTIES}
    texts = {name: tokenizer.decode(ids, skip_special_tokens=True) for name, ids in answers.items()}
    plain_text = tokenizer.decode(plain, skip_special_tokens=True)
    assert len({plain_text, *texts.values()}) == 4, "each penalty must change the answer's text, each differently"
    return plain_text, texts
