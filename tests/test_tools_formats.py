"""Tool-call formats: each family's real template (tests/chat_templates/*-tools.jinja, from llama.cpp's
models/templates) renders tools, calls and results exactly as transformers renders them (the oracle); each parser
reads hand-written outputs in its family's documented format; format detection; the streaming parser's pieces add
up to the whole and never carry part of a call; the grammar forces valid calls on a tiny random model through each
template, and a whole conversation (call -> result -> answer) goes through it with LLM.chat."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.errors import InvalidRequestError
from mistralpy.tokenizer import Tokenizer
from mistralpy.tools import ToolUse, tools_spec
from mistralpy.tools.answer_stream import AnswerStream, parse_answer
from mistralpy.tools.format import format_of_template
from mistralpy.tools.stream_parser import ToolCallStream

from .test_family_chat_templates import template

ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
TOOLS = [{"type": "function", "function": {"name": "add", "description": "Add two numbers", "parameters": ADD}}]
FAMILIES = {  # template -> the format its calls use
    "qwen2.5-tools": "hermes",
    "qwen3-tools": "hermes",
    "hermes3-tools": "hermes",
    "llama3.1-tools": "llama3",
    "mistral-nemo-tools": "mistral",
    "mistral": "mistral",
    "r1-distill-qwen": "generic",
    "qwen2": "generic",
    "gemma": "generic",
}
CALL_ID = "abcDEF123"  # Mistral's templates take 9 letters or digits
HISTORY = [
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": None,
     "tool_calls": [{"id": CALL_ID, "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
    {"role": "tool", "tool_call_id": CALL_ID, "content": "5"},
]  # fmt: skip


@pytest.mark.parametrize("name", FAMILIES)
def test_format_is_read_from_the_template(name):
    assert format_of_template(template(name)).name == FAMILIES[name]


# Hand-written outputs in each family's documented format (Qwen's function-calling docs, Meta's Llama 3.1 model card,
# Mistral's function-calling docs) -> (content, [(name, arguments)])
OUTPUTS = [
    ("hermes", '<tool_call>\n{"name": "get_current_temperature", "arguments": {"location": "San Francisco, CA, USA"}}'
     '\n</tool_call>\n<tool_call>\n{"name": "get_temperature_date", "arguments": {"location": "San Francisco, CA, USA",'
     ' "date": "2024-10-01"}}\n</tool_call>', None,
     [("get_current_temperature", {"location": "San Francisco, CA, USA"}),
      ("get_temperature_date", {"location": "San Francisco, CA, USA", "date": "2024-10-01"})]),
    ("hermes", 'Let me check.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>', "Let me check.",
     [("f", {})]),
    ("hermes", "No tools needed: 1 < 2, and <tool is a word.", "No tools needed: 1 < 2, and <tool is a word.", []),
    ("hermes", 'Hi <tool_call>\n{"name": "f", "arguments": {"x": ', "Hi", []),  # cut off: dropped
    ("hermes", '<tool_call>\n{"name": "f", "arguments": {}}', None, [("f", {})]),  # no closing tag
    ("hermes", '<tool_call>\nnot json\n</tool_call> ok', '<tool_call>\nnot json\n</tool_call> ok', []),
    ("llama3", '{"name": "get_current_conditions", "parameters": {"location": "San Francisco, CA", "unit": '
     '"Fahrenheit"}}', None, [("get_current_conditions", {"location": "San Francisco, CA", "unit": "Fahrenheit"})]),
    ("llama3", '<|python_tag|>{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {}}', None,
     [("a", {"x": 1}), ("b", {})]),
    ("llama3", 'The answer is {"x": 1}.', 'The answer is {"x": 1}.', []),
    ("llama3", '{"x": 1}', '{"x": 1}', []),
    ("mistral", '[TOOL_CALLS][{"name": "get_current_weather", "arguments": {"location": "Paris, France", "format": '
     '"celsius"}}]', None, [("get_current_weather", {"location": "Paris, France", "format": "celsius"})]),
    ("mistral", '[TOOL_CALLS][{"name": "a", "argu', None, []),
    ("mistral", 'Sure. [TOOL_CALLS] [{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"y": [1]}}]', "Sure.",
     [("a", {}), ("b", {"y": [1]})]),
    ("generic", '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>', None,
     [("add", {"a": 1, "b": 2})]),
]  # fmt: skip
FORMAT_TEMPLATES = {"hermes": "qwen2.5-tools", "llama3": "llama3.1-tools", "mistral": "mistral-nemo-tools",
                    "generic": "qwen2"}  # fmt: skip


@pytest.mark.parametrize("fmt, text, content, calls", OUTPUTS)
def test_parsers_read_documented_outputs(fmt, text, content, calls):
    tool_format = format_of_template(template(FORMAT_TEMPLATES[fmt]))
    parsed = parse_answer(AnswerStream(None, ToolCallStream(tool_format)), text)
    assert parsed.content == content
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == calls
    # any split of the text into pieces gives the same content and calls, and no piece of content holds a marker
    rng = random.Random(0)
    for _ in range(20):
        stream, cuts = ToolCallStream(tool_format), sorted(rng.sample(range(1, len(text)), min(5, len(text) - 1)))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        deltas = [stream.feed(p) for p in pieces] + [stream.finish()]
        streamed = "".join(d.content for d in deltas)
        assert (streamed or None) == content
        assert [(c.name, c.arguments) for d in deltas for c in d.calls] == [(c.name, c.arguments) for c in parsed.calls]
        if calls and content is None:
            assert all(not d.content for d in deltas)


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def _transformers_render(hf_tokenizer, name, messages, tools):
    """The oracle: transformers' own rendering, arguments given as objects (its documented way)."""
    history = json.loads(json.dumps(messages))
    for m in history:
        for c in m.get("tool_calls") or []:
            c["function"]["arguments"] = json.loads(c["function"]["arguments"])
        if m.get("tool_calls") and m["content"] is None:
            m["content"] = ""
    return hf_tokenizer.apply_chat_template(
        history, tools=tools, chat_template=template(name), tokenize=False, add_generation_prompt=True
    )


@pytest.mark.parametrize("name", ["qwen2.5-tools", "qwen3-tools", "hermes3-tools", "llama3.1-tools",
                                  "mistral-nemo-tools"])  # fmt: skip
def test_templates_render_tools_calls_and_results_as_transformers(name, tokenizer_dir, hf_tokenizer):
    tokenizer = Tokenizer.from_folder(tokenizer_dir, chat_template=template(name))
    use = ToolUse(tools_spec(TOOLS), tokenizer.chat_template)
    ours = tokenizer.decode(use.render(tokenizer, HISTORY), skip_special_tokens=False)
    expected = _transformers_render(hf_tokenizer, name, HISTORY, TOOLS)
    assert ours == expected
    assert '"a": 2' in ours and "5" in ours and "Add two numbers" in ours


def test_generic_format_writes_tools_calls_and_results_into_the_conversation(tokenizer_dir):
    tokenizer = Tokenizer.from_folder(tokenizer_dir)  # SmolLM2's ChatML template: no tool support
    use = ToolUse(tools_spec(TOOLS), tokenizer.chat_template)
    text = tokenizer.decode(use.render(tokenizer, HISTORY), skip_special_tokens=False)
    assert use.format.name == "generic"
    assert text.startswith("<|im_start|>system\nYou can call the following tools")
    assert json.dumps(TOOLS[0]) in text
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>' in text
    assert "<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>" in text


def test_mistral_ids_are_shortened_consistently(tokenizer_dir, hf_tokenizer):
    history = json.loads(json.dumps(HISTORY).replace(CALL_ID, "call_0123456789abcdef"))
    tokenizer = Tokenizer.from_folder(tokenizer_dir, chat_template=template("mistral-nemo-tools"))
    text = tokenizer.decode(ToolUse(tools_spec(TOOLS), tokenizer.chat_template).render(tokenizer, history), False)
    assert text.count('"789abcdef"') == 2  # the call's id and the result's call_id: its last 9 letters and digits


@pytest.fixture(scope="module")
def family_llms(tiny_llama):
    made = {}

    def get(name):
        if name not in made:
            chat_template = template(name) if name else None  # None: the tokenizer's own (SmolLM2's: generic)
            made[name] = LLM(str(tiny_llama[2]), dtype="float32", block_size=4, chat_template=chat_template)
        return made[name]

    return get


@pytest.mark.parametrize("name", ["qwen2.5-tools", "qwen3-tools", "hermes3-tools", "llama3.1-tools",
                                  "mistral-nemo-tools", None])  # fmt: skip
def test_forced_calls_and_a_round_trip_through_each_template(name, family_llms):
    llm = family_llms(name)
    params = SamplingParams(n=4, temperature=1.0, max_tokens=80, seed=1)
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    # enable_thinking false: Qwen3's template closes the think block itself, so the random model answers at once
    no_thinking = {"enable_thinking": False}
    [out] = llm.chat(messages, params, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                     chat_template_kwargs=no_thinking)  # fmt: skip
    for o in out.outputs:
        assert o.finish_reason == "stop"
        [call] = o.tool_calls
        assert call.name == "add"
        jsonschema.validate(json.loads(call.arguments), {**ADD, "additionalProperties": False})
    call = out.outputs[0].tool_calls[0]
    history = messages + [
        {"role": "assistant", "content": None, "tool_calls": [call.to_openai()]},
        {"role": "tool", "tool_call_id": call.id, "content": "RESULT-5"},
    ]
    [answer] = llm.chat(history, SamplingParams(max_tokens=4), tools=TOOLS, chat_template_kwargs=no_thinking)
    assert answer.outputs[0].finish_reason in ("stop", "length")
    prompt = llm.get_tokenizer().decode(answer.prompt_token_ids, skip_special_tokens=False)
    # the call (its arguments as the templates write them: json.dumps's spelling) and its result are in the prompt
    assert call.name in prompt and json.dumps(json.loads(call.arguments)) in prompt and "RESULT-5" in prompt


def test_bad_tools_in_python_are_clear_errors(family_llms):
    llm = family_llms("qwen2.5-tools")
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(InvalidRequestError, match="tool_choice"):
        llm.chat(messages, tools=TOOLS, tool_choice="sometimes")
    with pytest.raises(InvalidRequestError, match="needs tools"):
        llm.chat(messages, tool_choice="required")


def test_schemas_are_checked_by_llguidance_when_they_become_a_grammar():
    odd = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
            "properties": {"x": {"type": "string", "pattern": "("}}}}}]  # fmt: skip
    assert tools_spec(odd).constrained is False  # "auto": the calls are only parsed, the schema never compiled
    with pytest.raises(InvalidRequestError, match=r"tools\[0\].function.parameters: is not a schema llguidance"):
        tools_spec(odd, "required")
    with pytest.raises(InvalidRequestError, match="empty array"):
        tools_spec([])


def test_special_token_markers_are_kept_in_the_text(tokenizer_dir, tmp_path):
    """Mistral's `[TOOL_CALLS]` is a special token of its vocabulary: skip_special_tokens would drop it from the text
    and the parser would never see the call, so requests that parse calls keep special tokens."""
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as HFTokenizer

    for f in tokenizer_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    backend = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    backend.add_special_tokens([AddedToken("[TOOL_CALLS]", special=True)])
    backend.save(str(tmp_path / "tokenizer.json"))
    tokenizer = Tokenizer.from_folder(tmp_path, chat_template=template("mistral-nemo-tools"))
    use = ToolUse(tools_spec(TOOLS), tokenizer.chat_template)
    assert use.sampling_params(SamplingParams(), tokenizer).skip_special_tokens is False
    ids = tokenizer.encode('[TOOL_CALLS][{"name": "add", "arguments": {"a": 1, "b": 2}}]', add_special_tokens=False)
    assert tokenizer.token_to_id("[TOOL_CALLS]") == ids[0]
    [call] = use.parse(tokenizer.decode(ids, skip_special_tokens=False)).calls
    assert (call.name, json.loads(call.arguments)) == ("add", {"a": 1, "b": 2})
    # not parsing calls (tool_choice "none"), or a marker that is plain text: the request's setting stays
    none = ToolUse(tools_spec(TOOLS, "none"), tokenizer.chat_template)
    assert none.sampling_params(SamplingParams(), tokenizer).skip_special_tokens is True
    qwen = Tokenizer.from_folder(tokenizer_dir, chat_template=template("qwen2.5-tools"))
    assert ToolUse(tools_spec(TOOLS), qwen.chat_template).sampling_params(SamplingParams(), qwen).skip_special_tokens


def test_generic_history_without_tools_adds_no_tool_list(tokenizer_dir):
    tokenizer = Tokenizer.from_folder(tokenizer_dir)
    use = ToolUse(None, tokenizer.chat_template)
    text = tokenizer.decode(use.render(tokenizer, HISTORY), skip_special_tokens=False)
    assert "You can call the following tools" not in text
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>' in text
    assert "<|im_start|>user\n<tool_response>\n5\n</tool_response><|im_end|>" in text
