"""Every client's structured-output dialect mapped onto StructuredOutputsParams, checked without a model: what each
grammar accepts is asked of an llguidance matcher over a real vocabulary (the tiny models' tokenizer), and the
expected texts are written here by hand. Errors name the field and quote llguidance."""

from __future__ import annotations

import json
import re
from pathlib import Path

import llguidance
import pytest

from mistralpy.errors import InvalidRequestError
from mistralpy.server.protocol import ChatCompletionRequest, CompletionRequest
from mistralpy.structured import StructuredOutputsParams
from mistralpy.structured.gbnf import is_gbnf, lark_of
from mistralpy.tokenizer import Tokenizer

GBNF = Path(__file__).parent / "data" / "gbnf"
MESSAGES = [{"role": "user", "content": "hi"}]
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False}
LLG = {"grammars": [{"lark_grammar": 'start: "<" /[a-z]{2}/ ">"'}]}


@pytest.fixture(scope="module")
def vocab(tokenizer_dir) -> llguidance.LLTokenizer:
    tokenizer = Tokenizer.from_folder(tokenizer_dir)
    return llguidance.LLTokenizer(tokenizer.backend.to_str(), eos_token=sorted(tokenizer.eos_token_ids))


def accepts(vocab: llguidance.LLTokenizer, spec: StructuredOutputsParams, text: str) -> bool:
    matcher = llguidance.LLMatcher(vocab, spec.llguidance_grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    return matcher.consume_tokens(vocab.tokenize_str(text)) and matcher.is_accepting()


def chat_spec(**fields) -> StructuredOutputsParams | None:
    return ChatCompletionRequest(messages=MESSAGES, **fields).to_sampling_params().structured_outputs


def completion_spec(**fields) -> StructuredOutputsParams | None:
    return CompletionRequest(prompt="x", **fields).to_sampling_params().structured_outputs


# (request fields, a text the constraint accepts, one it refuses)
DIALECTS = {
    "guided_json": ({"guided_json": SCHEMA}, '{"a": 12}', '{"a": "x"}'),
    "guided_json text": ({"guided_json": '{"type": "integer"}'}, "42", "4.5"),
    "guided_regex": ({"guided_regex": "[a-c]{3}"}, "abc", "abd"),
    "guided_choice": ({"guided_choice": ["red", "blue"]}, "blue", "green"),
    "guided_grammar lark": ({"guided_grammar": 'start: "x"+'}, "xxx", "xy"),
    "guided_grammar gbnf": ({"guided_grammar": 'root ::= "y"+'}, "yy", "yx"),
    "mistral.rs regex": ({"grammar": {"type": "regex", "value": "[0-9]+"}}, "123", "12a"),
    "mistral.rs json_schema": ({"grammar": {"type": "json_schema", "value": SCHEMA}}, '{"a": 1}', '{"b": 1}'),
    "mistral.rs lark": ({"grammar": {"type": "lark", "value": 'start: "a" "b"'}}, "ab", "ba"),
    "mistral.rs llguidance": ({"grammar": {"type": "llguidance", "value": LLG}}, "<ok>", "<ok"),
    "mistral.rs python regex": ({"grammar": "[0-9]+", "grammar_type": "regex"}, "7", "x"),
    "mistral.rs python json_schema": ({"grammar": '{"type": "boolean"}', "grammar_type": "json_schema"}, "true", "1"),
    "mistral.rs python lark": ({"grammar": 'start: "q"', "grammar_type": "lark"}, "q", "qq"),
    "mistral.rs python llguidance": ({"grammar": json.dumps(LLG), "grammar_type": "llguidance"}, "<xy>", "<x>"),
    "llama.cpp json_schema": ({"json_schema": SCHEMA}, '{"a": -3}', "[]"),
    "llama.cpp gbnf": ({"grammar": 'root ::= "(" [0-9] ")"'}, "(5)", "(55)"),
    "llama.cpp %llguidance lark": ({"grammar": '%llguidance {}\nstart: "z"'}, "z", "zz"),
}  # fmt: skip


@pytest.mark.parametrize("fields, good, bad", DIALECTS.values(), ids=DIALECTS.keys())
def test_each_dialect_constrains_chat_and_completions(vocab, fields, good, bad):
    for spec in (chat_spec(**fields), completion_spec(**fields)):
        assert accepts(vocab, spec, good) and not accepts(vocab, spec, bad)


ANY_OBJECT = {"type": "json_object"}
CLASHES = [
    ({"guided_regex": "a", "response_format": ANY_OBJECT}, ("response_format", "guided_regex")),
    ({"guided_json": SCHEMA, "structured_outputs": {"regex": "a"}}, ("structured_outputs", "guided_json")),
    ({"guided_regex": "a", "guided_choice": ["b"]}, ("guided_regex", "guided_choice")),
    ({"grammar": 'root ::= "a"', "json_schema": SCHEMA}, ("grammar", "json_schema")),
    ({"grammar": {"type": "regex", "value": "a"}, "response_format": ANY_OBJECT}, ("response_format", "grammar")),
    ({"json_schema": SCHEMA, "structured_outputs": {"json_object": True}}, ("structured_outputs", "json_schema")),
]  # fmt: skip


@pytest.mark.parametrize("fields, names", CLASHES)
def test_two_constraints_are_refused_naming_both(fields, names):
    with pytest.raises(InvalidRequestError, match="set one, not both") as caught:
        chat_spec(**fields)
    assert all(name in str(caught.value) for name in names)


def test_response_format_text_constrains_nothing_and_goes_with_any_dialect(vocab):
    assert chat_spec(response_format={"type": "text"}) is None
    assert accepts(vocab, chat_spec(response_format={"type": "text"}, guided_regex="ab"), "ab")


@pytest.mark.parametrize("backend", ["guidance", "llguidance"])
def test_the_llguidance_backend_is_accepted(vocab, backend):
    assert accepts(vocab, chat_spec(guided_regex="k", guided_decoding_backend=backend), "k")


@pytest.mark.parametrize("backend", ["xgrammar", "outlines", "lm-format-enforcer", "auto"])
def test_other_backends_are_refused_by_name(backend):
    with pytest.raises(InvalidRequestError, match=f"guided_decoding_backend '{backend}' is not available"):
        chat_spec(guided_regex="k", guided_decoding_backend=backend)


def test_whitespace_pattern_is_the_whitespace_between_json_tokens(vocab):
    for fields in (
        {"guided_json": SCHEMA, "guided_whitespace_pattern": "[ ]?"},
        {"structured_outputs": {"json": SCHEMA, "whitespace_pattern": "[ ]?"}},
        {"response_format": {"type": "json_object"}, "guided_whitespace_pattern": "[ ]?"},
    ):
        spec = chat_spec(**fields)
        assert accepts(vocab, spec, '{"a":1}') and accepts(vocab, spec, '{ "a" : 1 }')
        assert not accepts(vocab, spec, '{"a":  1}') and not accepts(vocab, spec, '{\n"a": 1}')
    default = chat_spec(guided_json=SCHEMA)  # compact: json.dumps's separators only
    assert accepts(vocab, default, '{"a": 1}') and not accepts(vocab, default, '{"a":1}')


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"guided_whitespace_pattern": " "}, "guided_whitespace_pattern applies to JSON output"),
        ({"guided_regex": "a", "guided_whitespace_pattern": " "}, "applies to JSON output only, not to guided_regex"),
        ({"guided_json": SCHEMA, "guided_whitespace_pattern": "[ "}, "Invalid guided_json: regex parse error"),
    ],
)
def test_whitespace_pattern_misuse(fields, message):
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        chat_spec(**fields)


UNIMPLEMENTED = {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": UNIMPLEMENTED}}},
         "response_format.json_schema.schema"),
        ({"structured_outputs": {"json": UNIMPLEMENTED}}, "structured_outputs.json"),
        ({"guided_json": UNIMPLEMENTED}, "guided_json"),
        ({"grammar": {"type": "json_schema", "value": UNIMPLEMENTED}}, "grammar.value (json_schema)"),
        ({"json_schema": UNIMPLEMENTED}, "json_schema"),
    ],
)  # fmt: skip
def test_a_schema_feature_llguidance_lacks_is_named(fields, field):
    with pytest.raises(InvalidRequestError) as caught:
        completion_spec(**fields)
    assert str(caught.value).startswith(f'Invalid {field}: the schema uses "uniqueItems", which llguidance does not')
    with pytest.raises(InvalidRequestError, match='uses "if", "not", which'):
        chat_spec(guided_json={"not": {"type": "string"}, "if": {"type": "integer"}})


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"guided_regex": "a("}, "Invalid guided_regex: "),
        ({"guided_grammar": "start: nowhere"}, "Invalid guided_grammar: "),
        ({"guided_json": {"type": "integer", "minimum": 3, "maximum": 1}}, "Invalid guided_json: "),
        ({"grammar": {"type": "regex", "value": "a("}}, "Invalid grammar.value (regex): "),
        ({"grammar": {"type": "lark", "value": "start: nowhere"}}, "Invalid grammar.value (lark): "),
        ({"grammar": {"type": "llguidance", "value": {"grammars": 5}}}, "Invalid grammar.value (llguidance): "),
        ({"grammar": "a(", "grammar_type": "regex"}, "Invalid grammar (regex): "),
        ({"grammar": "root ::= nowhere"}, "Invalid grammar: GBNF: "),
        ({"grammar": 'root ::= "a'}, "Invalid grammar: GBNF: "),
        ({"json_schema": {"type": "integer", "minimum": 3, "maximum": 1}}, "Invalid json_schema: "),
    ],
)
def test_bad_specs_quote_llguidance_and_name_the_field(fields, message):
    with pytest.raises(InvalidRequestError) as caught:
        chat_spec(**fields)
    text = str(caught.value)
    assert text.startswith(message)
    # llguidance's (or its GBNF converter's) own words follow
    assert re.search(r"unclosed group|nowhere|minimum \(3\)|expected a sequence|end of input", text), text


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"grammar": {"type": "regex", "value": {"a": 1}}}, "a regex grammar must be a string"),
        ({"grammar": {"type": "yacc", "value": "x"}}, "'regex', 'json_schema', 'lark' or 'llguidance'"),
        ({"grammar_type": "regex"}, "grammar_type needs grammar as text"),
        ({"grammar": {"type": "regex", "value": "a"}, "grammar_type": "regex"}, "grammar_type needs grammar as text"),
        ({"grammar": "not json", "grammar_type": "llguidance"}, "is not a JSON object"),
        ({"guided_choice": []}, "non-empty list"),
    ],
)
def test_malformed_dialect_fields(fields, message):
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        chat_spec(**fields)


def test_gbnf_is_told_from_lark():
    assert is_gbnf('root ::= "a"') and is_gbnf("# a comment\nroot ::= x\nx ::= [a-z]")
    assert not is_gbnf('start: "a"') and not is_gbnf('%llguidance {}\nstart: "a"')
    assert lark_of('start: "a"') == 'start: "a"'


@pytest.mark.parametrize(
    "name, good, bad",
    [
        ("json.gbnf", '{"a": [1, true, "x"], "b": {}}', '{"a": }'),
        # not "x=3\n": llguidance lexes `num ::= [0-9]+ ws` greedily, so its `ws` swallows the line's "\n"
        ("arithmetic.gbnf", "(y+2)*3 = (x)\nab = (b)\n", "y = \n"),
        ("list.gbnf", "- milk\n- eggs\n", "- milk"),
    ],
)
def test_llama_cpp_grammars_convert(vocab, name, good, bad):
    spec = chat_spec(grammar=(GBNF / name).read_text())
    assert accepts(vocab, spec, good) and not accepts(vocab, spec, bad)


def test_python_construction_takes_the_same_fields():
    spec = StructuredOutputsParams(llguidance=LLG)
    assert spec.kind == "llguidance" and spec.label == "structured_outputs.llguidance"
    with pytest.raises(InvalidRequestError, match="exactly one"):
        StructuredOutputsParams(llguidance=LLG, regex="a")
