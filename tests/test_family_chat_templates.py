"""Each family's real chat template (tests/chat_templates/*.jinja: the text models ship in tokenizer_config.json or
GGUF metadata, with its source on the first line) rendered by mistralpy: exact strings from independent sources,
transformers' renderer as the oracle, the templates' own rejections as clear errors, and both storage places reaching
the renderer.

Phi-2 ships no chat template (microsoft/phi-2's tokenizer_config.json has none): chat requests are refused with a clear
error, plain prompts still generate."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import gguf
import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.chat_template import render_chat_template
from mistralpy.engine.engine import load_tokenizer
from mistralpy.errors import InvalidRequestError
from mistralpy.loader import open_model_source
from mistralpy.loader.default_model import default_model_path
from mistralpy.tokenizer import Tokenizer

from .helpers import llama_to_gguf
from .test_tokenizer import copy_folder

TEMPLATES = Path(__file__).parent / "chat_templates"
FAMILIES = ["llama", "mistral", "mistral-v0.1", "mixtral", "gemma", "gemma2", "gemma3", "phi3", "qwen2", "qwen3"]
NO_SYSTEM_ROLE = {"mistral-v0.1", "gemma", "gemma2"}  # their templates reject a system message


def template(name: str) -> str:
    source, text = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8").split("\n", 1)
    assert source.startswith("{# source: ") and source.endswith(" #}")
    return text


# llama.cpp's tests/test-chat-template.cpp conversation, also used by mistral.rs's chat template tests
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant"},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "Who are you"},
    {"role": "assistant", "content": "   I am an assistant   "},
    {"role": "user", "content": "Another question"},
]
CHATML = (  # llama.cpp's expected output for a ChatML template (teknium/OpenHermes-2.5-Mistral-7B)
    "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
    "<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nWho are you<|im_end|>\n<|im_start|>assistant\n"
    "   I am an assistant   <|im_end|>\n<|im_start|>user\nAnother question<|im_end|>\n<|im_start|>assistant\n"
)
GEMMA = (  # mistral.rs's expected output for google/gemma-7b-it (generated with transformers), no system message
    "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\n"
    "Who are you<end_of_turn>\n<start_of_turn>model\nI am an assistant<end_of_turn>\n<start_of_turn>user\n"
    "Another question<end_of_turn>\n<start_of_turn>model\n"
)
# (family, bos, eos, messages, expected): each string from the source named beside it, add_generation_prompt=True
EXPECTED = [
    # llama.cpp tests/test-chat-template.cpp, "Llama-3"
    ("llama", "", "<|eot_id|>", CONVERSATION,
     "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|><|start_header_id|>user"
     "<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
     "<|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
     "\n\nI am an assistant<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|>"
     "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    # llama.cpp, the mistralai 'v3' template (Mistral 7B Instruct v0.3's): the system message joins the last user turn
    ("mistral", "", "</s>", CONVERSATION,
     "[INST] Hello[/INST] Hi there</s>[INST] Who are you[/INST] I am an assistant</s>[INST] You are a helpful "
     "assistant\n\nAnother question[/INST]"),
    # mistral.rs mistralrs-core/src/pipeline/mod.rs, mistralai/Mistral-7B-Instruct-v0.1
    ("mistral-v0.1", "<s>", "</s>", CONVERSATION[1:],
     "<s>[INST] Hello [/INST]Hi there</s> [INST] Who are you [/INST]   I am an assistant   </s> [INST] Another "
     "question [/INST]"),
    # llama.cpp, the mistralai 'v1' template with a system prompt (Mixtral 8x7B / Mistral 7B v0.2's)
    ("mixtral", "", "</s>", CONVERSATION,
     " [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are you [/INST]    I am an "
     "assistant   </s> [INST] Another question [/INST]"),
    ("gemma", "<bos>", "<eos>", CONVERSATION[1:], GEMMA),
    ("gemma2", "<bos>", "<eos>", CONVERSATION[1:], GEMMA),  # Gemma 2 ships Gemma's template
    # Gemma 3's template: Gemma's turns, the system message folded into the first user turn (its rule, by hand)
    ("gemma3", "<bos>", "<eos>", CONVERSATION,
     "<bos><start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\nHi there"
     "<end_of_turn>\n<start_of_turn>user\nWho are you<end_of_turn>\n<start_of_turn>model\nI am an assistant"
     "<end_of_turn>\n<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n"),
    # llama.cpp, "Phi-3-small": the Phi-3 format, which the Phi-3 mini template writes for these roles too
    ("phi3", "", "<|endoftext|>", CONVERSATION,
     "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n"
     "<|user|>\nWho are you<|end|>\n<|assistant|>\n   I am an assistant   <|end|>\n<|user|>\nAnother question<|end|>\n"
     "<|assistant|>\n"),
    ("qwen2", "", "<|im_end|>", CONVERSATION, CHATML),
    ("qwen3", "", "<|im_end|>", CONVERSATION, CHATML),  # no reasoning in the history: plain ChatML
]  # fmt: skip


@pytest.mark.parametrize("family, bos, eos, messages, expected", EXPECTED, ids=[case[0] for case in EXPECTED])
def test_renders_the_independent_expected_string(family, bos, eos, messages, expected):
    text = render_chat_template(template(family), messages, True, bos_token=bos, eos_token=eos, tools=None)
    assert text == expected


def test_qwen2_default_system_prompt():
    # huggingface/trl docs/source/chat_templates.md: Qwen/Qwen2-0.5B-Instruct's apply_chat_template output
    text = render_chat_template(template("qwen2"), [{"role": "user", "content": "Hi!"}], False)
    assert text == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"


def test_qwen3_thinking():
    render = functools.partial(render_chat_template, template("qwen3"))
    user = [{"role": "user", "content": "Give me a short introduction to large language model."}]
    prompt = "<|im_start|>user\n" + user[0]["content"] + "<|im_end|>\n<|im_start|>assistant\n"
    # huggingface.js packages/jinja/test/e2e.test.js, Qwen/Qwen3-0.6B (from its model card)
    assert render(user, True, enable_thinking=True) == prompt
    # enable_thinking=False writes an empty reasoning block for the model to continue after (Qwen3's model card)
    assert render(user, True, enable_thinking=False) == prompt + "<think>\n\n</think>\n\n"
    # reasoning before the last user query is dropped; the turn after it keeps its <think> block
    turns = [
        *user,
        {"role": "assistant", "content": "<think>\nfirst\n</think>\n\nLLMs are..."},
        {"role": "user", "content": "Shorter?"},
        {"role": "assistant", "content": "<think>\nsecond\n</think>\n\nOK."},
    ]
    text = render(turns, False)
    assert "first" not in text and "<|im_start|>assistant\nLLMs are...<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n<think>\nsecond\n</think>\n\nOK.<|im_end|>\n")


def _oracle(source: str, messages, add_generation_prompt: bool, **variables) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        [messages], chat_template=source, add_generation_prompt=add_generation_prompt, **variables
    )
    return rendered[0]


TOKENS = {"llama": ("<|begin_of_text|>", "<|eot_id|>"), "gemma": ("<bos>", "<eos>"), "gemma2": ("<bos>", "<eos>"),
          "gemma3": ("<bos>", "<eos>"),
          "phi3": ("<s>", "<|endoftext|>"), "qwen2": ("", "<|im_end|>"), "qwen3": ("", "<|im_end|>")}  # fmt: skip
CONVERSATIONS = {
    "system": CONVERSATION,
    "no_system": CONVERSATION[1:],
    "one_turn": [{"role": "user", "content": "Bonjour 👋 — 你好?"}],
    "ends_with_assistant": CONVERSATION[1:3],
}


ORACLE_CASES = [(f, c) for f in FAMILIES for c in CONVERSATIONS if not (f in NO_SYSTEM_ROLE and c == "system")]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("family, conversation", ORACLE_CASES)
def test_matches_transformers(family, conversation, add_generation_prompt):
    messages = CONVERSATIONS[conversation]
    bos, eos = TOKENS.get(family, ("<s>", "</s>"))
    ours = render_chat_template(template(family), messages, add_generation_prompt, bos_token=bos, eos_token=eos)
    assert ours == _oracle(template(family), messages, add_generation_prompt, bos_token=bos, eos_token=eos)


CALL = {"id": "call-1", "type": "function", "function": {"name": "f", "arguments": "{}"}}  # an id of 6 characters
TOOL_CALL = {"role": "assistant", "content": None, "tool_calls": [CALL]}
REJECTIONS = [
    ("gemma", CONVERSATION, "System role not supported"),
    ("gemma2", CONVERSATION[1:2] * 2, "Conversation roles must alternate"),
    ("mistral-v0.1", CONVERSATION, "Conversation roles must alternate"),
    ("mixtral", CONVERSATION[1:2] * 2, "After the optional system message, conversation roles must alternate"),
    ("mixtral", [CONVERSATION[1], {"role": "tool", "content": "42"}], "Only user and assistant roles are supported"),
    ("mistral", CONVERSATION[1:2] * 2, "After the optional system message, conversation roles must alternate"),
    ("mistral", [CONVERSATION[1], TOOL_CALL], "Tool call IDs should be alphanumeric strings with length 9!"),
]


@pytest.mark.parametrize("family, messages, message", REJECTIONS, ids=[f"{r[0]}-{i}" for i, r in enumerate(REJECTIONS)])
def test_template_rejections(family, messages, message):
    import jinja2

    with pytest.raises(jinja2.TemplateError, match=message):  # the oracle rejects the same conversation
        _oracle(template(family), messages, True, bos_token="<s>", eos_token="</s>")
    with pytest.raises(InvalidRequestError, match=f"the model's chat template rejects these messages: {message}"):
        render_chat_template(template(family), messages, True, bos_token="<s>", eos_token="</s>")


@functools.cache
def _vocabulary() -> dict:
    """The embedded model's tokenizer metadata, without its chat template."""
    fields = gguf.GGUFReader(default_model_path()).fields
    return {k: f.contents() for k, f in fields.items() if k.startswith("tokenizer.") and k != "tokenizer.chat_template"}


def write_tokenizer_gguf(path: Path, chat_template: str | None, architecture: str = "llama") -> Path:
    """A GGUF file holding only the embedded model's vocabulary and, unless None, `chat_template`."""
    writer = gguf.GGUFWriter(str(path), architecture)
    for add, key in [(writer.add_tokenizer_model, "model"), (writer.add_tokenizer_pre, "pre"),
                     (writer.add_token_list, "tokens"), (writer.add_token_types, "token_type"),
                     (writer.add_token_merges, "merges"), (writer.add_bos_token_id, "bos_token_id"),
                     (writer.add_eos_token_id, "eos_token_id")]:  # fmt: skip
        add(_vocabulary()[f"tokenizer.ggml.{key}"])
    writer.add_add_bos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _accepted(family: str) -> list[dict]:
    return CONVERSATION[1:] if family in NO_SYSTEM_ROLE else CONVERSATION


@pytest.mark.parametrize("family", FAMILIES)
def test_template_from_gguf_metadata(family, tmp_path):
    path = write_tokenizer_gguf(tmp_path / "tok.gguf", template(family))
    tok = load_tokenizer(open_model_source(path), str(path))
    assert tok.chat_template == template(family)
    expected = _oracle(template(family), _accepted(family), True, bos_token="<|im_start|>", eos_token="<|im_end|>")
    assert tok.apply_chat_template(_accepted(family)) == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_template_from_tokenizer_config(family, tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    folder = copy_folder(tokenizer_dir, tmp_path, {"chat_template": template(family)})  # no chat_template.jinja
    tok = Tokenizer.from_folder(folder)
    assert tok.chat_template == template(family)
    hf = AutoTokenizer.from_pretrained(folder)
    expected = hf.apply_chat_template(_accepted(family), tokenize=False, add_generation_prompt=True)
    assert tok.apply_chat_template(_accepted(family)) == expected
    assert tok.apply_chat_template(_accepted(family), tokenize=True) == hf.encode(expected, add_special_tokens=False)


def _tiny_model_folder(tiny_llama, target: Path, chat_template: str | None) -> Path:
    shutil.copytree(tiny_llama[1], target)
    (target / "chat_template.jinja").unlink()
    if chat_template is not None:
        copy_folder(tiny_llama[1], target, {"chat_template": chat_template})
    return target


@pytest.mark.parametrize("fmt, family", [("hf", "mistral"), ("gguf", "qwen3")])
def test_engine_chat_uses_the_stored_template(tiny_llama, tmp_path, fmt, family):
    if fmt == "hf":
        model = _tiny_model_folder(tiny_llama, tmp_path / "model", template(family))
    else:
        model = tmp_path / "model.gguf"
        llama_to_gguf(
            tiny_llama[0], model, tokenizer_gguf=str(write_tokenizer_gguf(tmp_path / "t.gguf", template(family)))
        )
    llm = LLM(str(model), dtype="float32")
    out = llm.chat(_accepted(family), SamplingParams(max_tokens=2, temperature=0))[0]
    expected = _oracle(template(family), _accepted(family), True, bos_token="<|im_start|>", eos_token="<|im_end|>")
    assert out.prompt_token_ids == llm.get_tokenizer().encode(expected, add_special_tokens=False)
    assert len(out.outputs[0].token_ids) == 2


NO_TEMPLATE = "this model has no chat template; send a plain prompt instead of chat messages"


def test_phi2_without_template(tiny_llama, tmp_path):
    """A model that ships no chat template (Phi-2): chat is refused with a clear error; plain prompts still run."""
    llm = LLM(str(_tiny_model_folder(tiny_llama, tmp_path / "model", None)), dtype="float32")
    assert llm.get_tokenizer().chat_template is None
    with pytest.raises(InvalidRequestError, match=NO_TEMPLATE):
        llm.chat([{"role": "user", "content": "Hello"}])
    out = llm.generate(["Instruct: say hello.\nOutput:"], SamplingParams(max_tokens=3, temperature=0))[0]
    assert len(out.outputs[0].token_ids) == 3
    # the same from GGUF metadata without a tokenizer.chat_template key
    path = write_tokenizer_gguf(tmp_path / "tok.gguf", None)
    tok = load_tokenizer(open_model_source(path), str(path))
    assert tok.chat_template is None
    with pytest.raises(InvalidRequestError, match=NO_TEMPLATE):
        tok.apply_chat_template([{"role": "user", "content": "Hello"}])
