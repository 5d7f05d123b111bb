"""A grammar that stops mid-output (llguidance refuses to go on: here it runs out of its per-step lexer budget, which
a tight LLParserLimits makes certain) fails its own request with llguidance's message, finish_reason "error" in Python
and a 500 at the server, while the requests batched with it run on exactly as alone and every KV block comes back."""

from __future__ import annotations

import llguidance
import pytest

from mistralpy import LLM, ChatCompletionRequest, Runner, SamplingParams, Which
from mistralpy.errors import GenerationError
from mistralpy.server.http_edge import sse_error
from mistralpy.structured import StructuredOutputsParams
from mistralpy.structured.compile_cache import GrammarCompiler
from mistralpy.structured.ll_tokenizer import ll_tokenizer

SPEC = StructuredOutputsParams(
    json={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
)
STARVED = llguidance.LLParserLimits(step_lexer_fuel=10)  # too little to build the string's lexeme


def _starved_template(compiler: GrammarCompiler, spec: StructuredOutputsParams) -> llguidance.LLMatcher:
    vocab = ll_tokenizer(compiler.tokenizer, compiler.eos_token_ids, compiler.vocab_size)
    return llguidance.LLMatcher(vocab, spec.llguidance_grammar, log_level=0, limits=STARVED)


def _run(engine, requests: dict[str, tuple]) -> dict[str, object]:
    ids = {
        engine.add_request(prompt, params, grammar=grammar): name
        for name, (prompt, params, grammar) in requests.items()
    }
    done = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                done[ids[out.request_id]] = out.outputs[0]
    return done


def test_a_grammar_failing_mid_output_fails_its_request_alone():
    llm = LLM()
    engine = llm.engine
    free_blocks = engine.block_manager.num_free_blocks
    free = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    constrained = SamplingParams(temperature=0, max_tokens=40, structured_outputs=SPEC)
    prompts = ["A person as JSON:", "Tell me a story.", "Count to ten:"]
    alone = [llm.generate([p], free)[0].outputs[0].token_ids for p in prompts[1:]]
    starved = _starved_template(engine.grammar_compiler, SPEC)

    done = _run(engine, {"bad": (prompts[0], constrained, starved), **{p: (p, free, None) for p in prompts[1:]}})

    bad = done["bad"]
    assert bad.finish_reason == "error"
    assert bad.error.startswith("structured output failed:") and "lexer" in bad.error  # llguidance's own words
    assert bad.text.startswith('{"')  # what it generated before the grammar stopped is kept
    assert [done[p].token_ids for p in prompts[1:]] == alone
    assert engine.block_manager.num_free_blocks == free_blocks
    ok = llm.generate([prompts[0]], constrained)[0].outputs[0]  # the same spec with llguidance's own limits works
    assert ok.finish_reason == "stop" and ok.text.startswith('{"name"')


@pytest.fixture(scope="module")
def runner(tiny_llama):
    gguf = tiny_llama[2]
    with Runner(which=Which.GGUF(str(gguf.parent), gguf.name, dtype="f32")) as r:
        yield r


@pytest.mark.parametrize("stream", [False, True])
def test_the_server_answers_a_failed_grammar_with_an_error_and_keeps_serving(runner, monkeypatch, stream):
    compiler = runner.engine.engine.grammar_compiler
    free_blocks = runner.call(lambda e: e.block_manager.num_free_blocks)
    monkeypatch.setattr(compiler, "template", lambda spec: _starved_template(compiler, spec))
    request = ChatCompletionRequest(
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SPEC.json}},
        max_tokens=30,
    )
    with pytest.raises(GenerationError, match="structured output failed: .*lexer"):
        if stream:
            list(runner.send_chat_completion_request(request.model_copy(update={"stream": True})))
        else:
            runner.send_chat_completion_request(request)
    monkeypatch.undo()
    res = runner.send_chat_completion_request(request)
    assert res.choices[0].finish_reason in ("stop", "length")
    assert runner.call(lambda e: e.block_manager.num_free_blocks) == free_blocks


def test_a_failed_grammar_mid_stream_is_a_500_error_event():
    event = sse_error(GenerationError("structured output failed: lexer error"))
    assert '"server_error"' in event
    assert "structured output failed: lexer error" in event
