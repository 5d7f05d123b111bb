"""Every structured-output dialect against a live server (chat and completions, streamed too) and through the Runner's
request classes: each output checked by an independent parser (re.fullmatch, json + jsonschema); bad specs are 400s
naming the field and quoting llguidance, and the server keeps serving; /metrics counts grammar compiles and cache
hits; grammars compile off the engine's thread."""

from __future__ import annotations

import json
import re
import threading
import uuid

import jsonschema
import pytest

from mistralpy import ChatCompletionRequest, CompletionRequest, Runner, Which

from .server_process import MODEL, http

SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}, "ok": {"type": "boolean"}},
    "required": ["n", "ok"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "Answer."}]


def _chat(server, **body):
    return http(server, "POST", "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, **body})


def _complete(server, **body):
    return http(server, "POST", "/v1/completions", json={"model": MODEL, "prompt": "Answer:", **body})


def _texts(response) -> list[str]:
    assert response.status_code == 200, response.text
    choices = response.json()["choices"]
    assert all(c["finish_reason"] == "stop" for c in choices), choices
    return [c["text"] if "text" in c else c["message"]["content"] for c in choices]


def _json_ok(text: str) -> bool:
    jsonschema.validate(json.loads(text), SCHEMA)
    return True


# (request fields, the independent check of each output)
CASES = {
    "guided_json": ({"guided_json": SCHEMA}, _json_ok),
    "guided_regex": ({"guided_regex": "[a-z]{2}-[0-9]{2}"}, lambda t: re.fullmatch("[a-z]{2}-[0-9]{2}", t)),
    "guided_choice": ({"guided_choice": ["left", "right"]}, lambda t: t in ("left", "right")),
    "guided_grammar gbnf": ({"guided_grammar": 'root ::= "<" [0-9]{1,4} ">"'},
                            lambda t: re.fullmatch("<[0-9]{1,4}>", t)),
    "mistral.rs regex": ({"grammar": {"type": "regex", "value": "[A-Z][a-z]{1,4}"}},
                         lambda t: re.fullmatch("[A-Z][a-z]{1,4}", t)),
    "mistral.rs json_schema": ({"grammar": {"type": "json_schema", "value": SCHEMA}}, _json_ok),
    "mistral.rs lark": ({"grammar": {"type": "lark", "value": 'start: "x" ("," "x")*'}},
                        lambda t: re.fullmatch("x(,x)*", t)),
    "mistral.rs llguidance": ({"grammar": {"type": "llguidance", "value": {"grammars": [
        {"lark_grammar": 'start: "id=" @sub', "name": "top"},
        {"name": "sub", "json_schema": {"type": "integer", "minimum": 0, "maximum": 999}}]}}},
        lambda t: re.fullmatch("id=[0-9]{1,3}", t)),
    "llama.cpp json_schema": ({"json_schema": SCHEMA}, _json_ok),
    "llama.cpp gbnf": ({"grammar": 'root ::= "(" [a-c]{1,6} ")"'}, lambda t: re.fullmatch(r"\([a-c]{1,6}\)", t)),
}  # fmt: skip


@pytest.mark.parametrize("fields, check", CASES.values(), ids=CASES.keys())
def test_each_dialect_on_chat_and_completions(server, fields, check):
    for send in (_chat, _complete):
        for text in _texts(send(server, n=3, temperature=1.0, max_tokens=40, **fields)):
            assert check(text), (fields, text)


def test_a_dialect_streams(server):
    r = http(
        server,
        "POST",
        "/v1/completions",
        json={"prompt": "x", "stream": True, "max_tokens": 20, "grammar": 'root ::= "k" [0-9]{3}'},
    )
    assert r.status_code == 200, r.text
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    text = "".join(c["text"] for e in events for c in e["choices"])
    assert re.fullmatch("k[0-9]{3}", text), text


UNIMPLEMENTED = {"type": "array", "uniqueItems": True}
BAD = [
    ({"guided_json": UNIMPLEMENTED}, 'Invalid guided_json: the schema uses "uniqueItems"'),
    ({"grammar": {"type": "json_schema", "value": UNIMPLEMENTED}}, 'the schema uses "uniqueItems"'),
    ({"json_schema": UNIMPLEMENTED}, 'Invalid json_schema: the schema uses "uniqueItems"'),
    ({"structured_outputs": {"json": UNIMPLEMENTED}}, 'the schema uses "uniqueItems"'),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": UNIMPLEMENTED}}},
     'the schema uses "uniqueItems"'),
    ({"guided_regex": "a("}, "unclosed group"),
    ({"guided_grammar": "start: nowhere"}, 'unknown name: "nowhere"'),
    ({"grammar": {"type": "regex", "value": "[z-a]"}}, "invalid character class range"),
    ({"grammar": {"type": "llguidance", "value": {"grammars": []}}}, "Invalid grammar.value (llguidance)"),
    ({"grammar": "root ::= missing"}, "Rule 'missing' not found"),
    ({"grammar": "[0-9", "grammar_type": "regex"}, "unclosed character class"),
    ({"guided_decoding_backend": "xgrammar", "guided_regex": "a"}, "guided_decoding_backend 'xgrammar'"),
    ({"guided_whitespace_pattern": "[ ]*"}, "guided_whitespace_pattern applies to JSON output"),
    ({"guided_regex": "a", "json_schema": {"type": "integer"}}, "guided_regex and json_schema each constrain"),
    ({"grammar": {"type": "ebnf", "value": "x"}}, "grammar"),
]  # fmt: skip


def test_bad_specs_are_400s_on_every_dialect_and_the_server_keeps_serving(server):
    for body, quoted in BAD:
        for send in (_chat, _complete):
            r = send(server, max_tokens=4, **body)
            assert r.status_code == 400 and quoted in r.json()["error"]["message"], (body, r.text)
    assert _texts(_chat(server, max_tokens=8, guided_choice=["fine"])) == ["fine"]


def _metric(server, name: str) -> float:
    text = http(server, "GET", "/metrics").text
    [value] = re.findall(rf"^mistralpy:{name} (\S+)$", text, re.MULTILINE)
    return float(value)


def test_metrics_count_compiles_hits_and_compile_time(server):
    names = ("grammar_compiles_total", "grammar_cache_hits_total", "grammar_compile_seconds_total")
    before = [_metric(server, name) for name in names]
    regex = f"{uuid.uuid4().hex[:8]}[0-9]"  # a grammar this server has not compiled yet
    for _ in range(3):
        assert re.fullmatch(regex, _texts(_complete(server, guided_regex=regex, max_tokens=20))[0])
    compiles, hits, seconds = (_metric(server, name) - b for name, b in zip(names, before, strict=True))
    assert (compiles, hits) == (1, 2) and seconds > 0


@pytest.fixture(scope="module")
def runner(tiny_llama):
    gguf = tiny_llama[2]
    which = Which.GGUF(quantized_model_id=str(gguf.parent), quantized_filename=gguf.name, dtype="f32")
    with Runner(which=which) as r:
        yield r


def test_runner_requests_take_mistral_rs_grammar_and_grammar_type(runner):
    res = runner.send_completion_request(
        CompletionRequest(model="default", prompt="code", grammar="[a-z]{4}", grammar_type="regex", max_tokens=10)
    )
    assert re.fullmatch("[a-z]{4}", res.choices[0].text)
    chat = ChatCompletionRequest(
        model="default", messages=MESSAGES, grammar=json.dumps(SCHEMA), grammar_type="json_schema", max_tokens=40
    )
    assert _json_ok(runner.send_chat_completion_request(chat).choices[0].message.content)
    lark = ChatCompletionRequest(messages=MESSAGES, grammar={"type": "lark", "value": 'start: "y"+'}, max_tokens=5)
    assert re.fullmatch("y+", runner.send_chat_completion_request(lark).choices[0].message.content)


def test_grammars_compile_off_the_engine_thread_and_event_loop(runner, monkeypatch):
    compiler = runner.engine.engine.grammar_compiler
    compile_template, threads = compiler.template, []

    def recording(spec):
        threads.append(threading.current_thread())
        return compile_template(spec)

    monkeypatch.setattr(compiler, "template", recording)
    res = runner.send_completion_request(CompletionRequest(prompt="x", guided_regex="[0-9]{3}zz", max_tokens=10))
    assert re.fullmatch("[0-9]{3}zz", res.choices[0].text)
    [thread] = threads  # compiled once, by the server, and only copied by the engine
    assert thread is not runner.engine._thread and thread is not runner._thread._thread


def test_a_runner_with_its_own_tokenizer_masks_over_that_tokenizer(tiny_llama):
    gguf, folder = tiny_llama[2], tiny_llama[1]
    which = Which.GGUF(str(gguf.parent), gguf.name, tok_model_id=str(folder), dtype="f32")
    with Runner(which=which) as r:
        assert r.call(lambda e: e.grammar_compiler.tokenizer is e.tokenizer)
        res = r.send_completion_request(CompletionRequest(prompt="x", guided_choice=["on", "off"], max_tokens=4))
        assert res.choices[0].text in ("on", "off")
