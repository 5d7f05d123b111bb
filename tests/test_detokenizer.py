"""IncrementalDetokenizer: deltas add up to the decoded text, never split a character, and honour stop strings."""

from __future__ import annotations

from collections.abc import Sequence

import gguf
import pytest

from mistralpy.engine.detokenizer import IncrementalDetokenizer
from mistralpy.loader.default_model import default_model_path
from mistralpy.tokenizer import Tokenizer

MULTILINGUAL = "Grüße 你好世界 👋🏽🚀 こんにちは Привет! 😀 def f(x):\n    return x**2  # ok 🎉"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    reader = gguf.GGUFReader(default_model_path())
    return Tokenizer.from_gguf_metadata(
        {key: field.contents() for key, field in reader.fields.items() if key.startswith("tokenizer.")}
    )


class ByteTokenizer:
    """Token id = one byte: every multi-byte character is split across tokens. Records the longest decode."""

    def __init__(self) -> None:
        self.longest_decode = 0

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        self.longest_decode = max(self.longest_decode, len(ids))
        return bytes(ids).decode("utf-8", errors="replace")


def stream(detok: IncrementalDetokenizer, ids: Sequence[int]) -> tuple[list[str], str | None]:
    """Feed ids one at a time like the engine does; returns the deltas (last one taken as finished) and the stop."""
    deltas, stop = [], None
    for token in ids:
        stop = detok.update([token])
        deltas.append(detok.get_next_delta(finished=stop is not None))
        if stop is not None:
            break
    else:
        deltas.append(detok.get_next_delta(finished=True))
    return deltas, stop


def test_stream_equals_decode_without_replacement_chars(tok):
    ids = tok.encode(MULTILINGUAL)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some characters really are split across tokens
    prompt = tok.apply_chat_template([{"role": "user", "content": "Say hi"}], tokenize=True)
    detok = IncrementalDetokenizer(tok, prompt)
    deltas, stop = stream(detok, ids)
    assert stop is None
    assert "".join(deltas) == detok.output_text == tok.decode(ids) == MULTILINGUAL
    assert not any("\ufffd" in delta for delta in deltas)


def test_byte_split_characters_and_cost_per_token():
    text = "a😀b 你好 Привет " * 200
    byte_tok = ByteTokenizer()
    deltas, _ = stream(IncrementalDetokenizer(byte_tok, []), list(text.encode()))
    assert "".join(deltas) == text
    assert not any("\ufffd" in delta for delta in deltas)
    assert byte_tok.longest_decode <= 8  # a short window, never the whole output


def test_invalid_bytes_are_not_held_forever():
    ids = list(b"ok ") + [0xFF] * 10 + list(b" end")
    detok = IncrementalDetokenizer(ByteTokenizer(), [])
    deltas = []
    for token in ids[:13]:
        detok.update([token])
        deltas.append(detok.get_next_delta())
    assert "\ufffd" in "".join(deltas)  # let out before the sequence ends
    for token in ids[13:]:
        detok.update([token])
    assert "".join(deltas) + detok.get_next_delta(finished=True) == bytes(ids).decode("utf-8", errors="replace")


def test_unfinished_character_is_flushed_at_the_end():
    ids = list("hi 😀".encode())[:-1]  # cut inside the emoji, as a length limit would
    deltas, _ = stream(IncrementalDetokenizer(ByteTokenizer(), []), ids)
    assert deltas[-2] == "" and deltas[-1] == "\ufffd"
    assert "".join(deltas) == bytes(ids).decode("utf-8", errors="replace")


def test_special_tokens_skipped_or_kept(tok):
    ids = tok.encode("Hello<|im_end|>")
    skipped, _ = stream(IncrementalDetokenizer(tok, [], skip_special_tokens=True), ids)
    kept, _ = stream(IncrementalDetokenizer(tok, [], skip_special_tokens=False), ids)
    assert ("".join(skipped), "".join(kept)) == ("Hello", "Hello<|im_end|>")


@pytest.mark.parametrize("include, expected", [(False, "The answer is "), (True, "The answer is 42.")])
def test_stop_string_spanning_tokens(tok, include, expected):
    ids = tok.encode("The answer is 42. The end")
    assert tok.convert_ids_to_tokens(ids)[4:7] == ["4", "2", "."]  # the stop string spans three tokens
    detok = IncrementalDetokenizer(tok, [], stop=["42."], include_stop_str_in_output=include)
    deltas, stop = stream(detok, ids)
    assert stop == "42." and detok.stop_reason == "42."
    assert len(deltas) == 7  # detected on the token that completes it
    assert "".join(deltas) == detok.output_text == expected
    assert detok.update(tok.encode(" more")) is None and detok.output_text == expected


def test_partial_stop_is_held_then_released(tok):
    ids = tok.encode("The answer is 42. The end")
    detok = IncrementalDetokenizer(tok, [], stop=["42!"])
    deltas, stop = stream(detok, ids)
    assert stop is None
    assert deltas[4:6] == ["", ""]  # "4", "2" might start "42!": held back...
    assert deltas[6] == "42."  # ... and let out once "." rules it out
    assert "".join(deltas) == detok.output_text == "The answer is 42. The end"


def test_held_prefix_is_released_when_the_sequence_ends(tok):
    ids = tok.encode("Tell me the end")
    detok = IncrementalDetokenizer(tok, [], stop=[" endless"])
    for token in ids:
        detok.update([token])
    assert detok.get_next_delta() == "Tell me the" and detok.output_text == "Tell me the"
    assert detok.get_next_delta(finished=True) == " end"
    assert detok.output_text == "Tell me the end"


def test_earliest_stop_wins_and_a_stream_never_shows_it():
    text = "abc <END> x STOP y"
    detok = IncrementalDetokenizer(ByteTokenizer(), [], stop=["STOP", "<END>", ""])
    deltas, stop = stream(detok, list(text.encode()))
    assert stop == "<END>"
    assert "".join(deltas) == detok.output_text == "abc "
    assert not any("<" in delta for delta in deltas)


def test_stop_found_in_a_multi_token_update():
    detok = IncrementalDetokenizer(ByteTokenizer(), [], stop=["\n\n"])
    assert detok.update(list(b"line one\n\nline two")) == "\n\n"
    assert detok.get_next_delta() == detok.output_text == "line one"


def test_prompt_context_keeps_leading_space():
    class PieceTokenizer:
        """SentencePiece-like decoding: the first piece's leading space is stripped."""

        pieces = ["▁Hi", "▁there", "▁friend"]

        def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
            text = "".join(self.pieces[i] for i in ids).replace("▁", " ")
            return text[1:] if text.startswith(" ") else text

    deltas, _ = stream(IncrementalDetokenizer(PieceTokenizer(), [0]), [1, 2])
    assert "".join(deltas) == " there friend"
