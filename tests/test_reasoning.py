"""Thinking models: the think block split into reasoning_content (by ThinkStream, checked on hand-written answers in
Qwen3's and DeepSeek-R1's documented shapes, in any split), read from the real templates (R1 distills open the block in
the prompt; Qwen3 with enable_thinking false closes it), the grammar letting a think block come before forced tool
calls and JSON (llguidance's matcher as the judge), and reasoning_content in the Runner's messages and deltas."""

from __future__ import annotations

import json
import random

import llguidance
import pytest

from mistralpy import LLM, ChatCompletionRequest, Runner, SamplingParams
from mistralpy.errors import InvalidRequestError
from mistralpy.reasoning.think import thinking_of
from mistralpy.structured import StructuredOutputsParams
from mistralpy.structured.ll_tokenizer import ll_tokenizer
from mistralpy.tokenizer import Tokenizer
from mistralpy.tools import ToolUse, tools_spec
from mistralpy.tools.answer_stream import AnswerStream, parse_answer
from mistralpy.tools.format import format_of_template
from mistralpy.tools.stream_parser import ToolCallStream

from .test_family_chat_templates import template
from .test_runner import gguf_which

ADD = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
TOOLS = [{"type": "function", "function": {"name": "add", "parameters": ADD}}]
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>'
# (starts inside the block, answer, reasoning, content, calls)
ANSWERS = [
    (
        True,
        "Let me think.\n2 + 3 = 5.\n</think>\n\nThe answer is 5.",
        "Let me think.\n2 + 3 = 5.\n",
        "The answer is 5.",
        0,
    ),
    (False, "<think>\nhmm\n</think>\n\nFive.", "\nhmm\n", "Five.", 0),
    (False, "Five, no thinking.", None, "Five, no thinking.", 0),
    (True, "cut off while thinking <", "cut off while thinking <", None, 0),
    (False, f"<think>\nI should call add.\n</think>\n\n{CALL}", "\nI should call add.\n", None, 1),
    (True, f"Use the tool.</think>{CALL}", "Use the tool.", None, 1),
]


@pytest.mark.parametrize("inside, text, reasoning, content, calls", ANSWERS)
def test_think_blocks_split_from_the_answer_in_any_pieces(inside, text, reasoning, content, calls):
    thinking = thinking_of(template("qwen3-tools"), "<think>\n" if inside else "")
    fmt = format_of_template(template("qwen3-tools"))
    whole = parse_answer(AnswerStream(thinking.stream(), ToolCallStream(fmt)), text)
    assert (whole.reasoning, whole.content, len(whole.calls)) == (reasoning, content, calls)
    rng = random.Random(0)
    for _ in range(20):
        stream = AnswerStream(thinking.stream(), ToolCallStream(fmt))
        cuts = sorted(rng.sample(range(1, len(text)), 6))
        deltas = [stream.feed(text[i:j]) for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        deltas.append(stream.finish())
        assert "".join(d.reasoning for d in deltas) == (reasoning or "")
        assert "".join(d.content for d in deltas) == (content or "")
        assert "</think>" not in "".join(d.content + d.reasoning for d in deltas)


def test_templates_say_where_the_answer_starts(tokenizer_dir):
    messages = [{"role": "user", "content": "2 + 3?"}]
    cases = [
        ("r1-distill-qwen", {}, True),
        ("qwen3-tools", {}, False),
        ("qwen3-tools", {"enable_thinking": False}, None),
    ]
    for name, kwargs, inside in cases:
        tokenizer = Tokenizer.from_folder(tokenizer_dir, chat_template=template(name))
        use = ToolUse(None, tokenizer.chat_template)
        text = tokenizer.decode(use.render(tokenizer, messages, variables=kwargs), skip_special_tokens=False)
        if inside is None:  # enable_thinking reached the template: it wrote the empty block, the answer has none
            assert text.endswith("<think>\n\n</think>\n\n") and use.thinking is None
        else:
            assert use.thinking is not None and use.thinking.starts_inside is inside
    qwen25 = Tokenizer.from_folder(tokenizer_dir, chat_template=template("qwen2.5-tools"))
    use = ToolUse(None, qwen25.chat_template)
    use.render(qwen25, messages)
    assert use.thinking is None


def _matcher(tokenizer: Tokenizer, spec: StructuredOutputsParams) -> llguidance.LLMatcher:
    vocab = ll_tokenizer(tokenizer, frozenset({tokenizer.eos_token_id}), tokenizer.vocab_size)
    return llguidance.LLMatcher(vocab, spec.llguidance_grammar, log_level=0)


def _accepts(tokenizer: Tokenizer, spec: StructuredOutputsParams, text: str) -> bool:
    matcher = _matcher(tokenizer, spec)
    return matcher.consume_tokens(tokenizer.encode(text, add_special_tokens=False)) and matcher.is_accepting()


def test_grammar_lets_the_think_block_come_first(tokenizer_dir):
    messages = [{"role": "user", "content": "2 + 3?"}]
    for name, inside in (("r1-distill-qwen", True), ("qwen3-tools", False)):
        tokenizer = Tokenizer.from_folder(tokenizer_dir, chat_template=template(name))
        use = ToolUse(tools_spec(TOOLS, "required"), tokenizer.chat_template)
        use.render(tokenizer, messages)
        spec = use.sampling_params(SamplingParams(), tokenizer).structured_outputs
        think = "I will add.\n</think>\n\n" if inside else "<think>\nI will add.\n</think>\n\n"
        assert _accepts(tokenizer, spec, think + CALL)
        assert not _accepts(tokenizer, spec, think + CALL.replace('"a": 1', '"b": 1'))  # the schema still holds
        assert _accepts(tokenizer, spec, CALL) is not inside  # R1's prompt opened the block: it must be closed
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        use = ToolUse(None, tokenizer.chat_template)
        use.render(tokenizer, messages)
        json_spec = use.sampling_params(SamplingParams(structured_outputs=StructuredOutputsParams(json=schema)))
        assert _accepts(tokenizer, json_spec.structured_outputs, think + '{"n": 5}')
        assert not _accepts(tokenizer, json_spec.structured_outputs, think + '{"n": "5"}')


@pytest.fixture(scope="module")
def r1_runner(tiny_llama, tokenizer_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("r1_tokenizer")
    for f in tokenizer_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "chat_template.jinja").write_text(template("r1-distill-qwen"), encoding="utf-8")
    with Runner(gguf_which(tiny_llama, tok_model_id=str(folder))) as r:
        yield r


def test_runner_reasoning_content_in_messages_and_deltas(r1_runner, tiny_llama):
    """The random model never closes the block R1's prompt opened: its whole answer is reasoning."""
    fields = {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0}
    res = r1_runner.send_chat_completion_request(ChatCompletionRequest(**fields))
    message = res.choices[0].message
    assert message.content is None and message.reasoning_content
    chunks = r1_runner.send_chat_completion_request(ChatCompletionRequest(**fields, stream=True))
    deltas = [c.delta for chunk in chunks for c in chunk.choices]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == message.reasoning_content
    assert not "".join(d.get("content", "") for d in deltas)
    # the oracle: the same prompt's raw text from LLM.generate
    prompt = r1_runner.engine.tokenizer.apply_chat_template(fields["messages"], tokenize=True)
    raw = LLM(str(tiny_llama[2]), dtype="float32").generate([prompt], SamplingParams(temperature=0, max_tokens=8))
    assert raw[0].outputs[0].text == message.reasoning_content


def test_chat_template_kwargs_reach_the_template(tokenizer_dir):
    tokenizer = Tokenizer.from_folder(tokenizer_dir, chat_template=template("qwen3-tools"))
    use = ToolUse(None, tokenizer.chat_template)
    with pytest.raises(InvalidRequestError, match="chat_template_kwargs may not set messages"):
        use.render(tokenizer, [{"role": "user", "content": "x"}], variables={"messages": []})
    body = ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], chat_template_kwargs={"a": 1},
                                 enable_thinking=False)  # fmt: skip
    assert body.template_kwargs() == {"a": 1, "enable_thinking": False}
    assert json.dumps(body.template_kwargs())
