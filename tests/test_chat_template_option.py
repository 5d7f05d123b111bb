"""A chat template given in place of the model's: `LLM(chat_template=...)`, `mistralpy run / serve --chat-template
FILE`. A template that does not parse stops the start; a real server whose template tries an escape or a bomb
(depending on the message) answers 400 with an OpenAI error body and goes on serving."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from mistralpy import LLM, SamplingParams
from mistralpy.errors import InvalidRequestError

from .server_process import KEY, MODEL, ServerProcess, http

PLAIN = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant]"
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
HELLO_TEXT = "[system] Be brief.\n[user] Hello\n[assistant]"  # PLAIN rendered by hand


def test_llm_template_replaces_the_models(tiny_llama):
    llm = LLM(str(tiny_llama[2]), dtype="float32", chat_template=PLAIN)
    tokenizer = llm.get_tokenizer()
    assert tokenizer.apply_chat_template(HELLO) == HELLO_TEXT
    out = llm.chat(HELLO, SamplingParams(max_tokens=2, temperature=0))[0]
    assert out.prompt_token_ids == tokenizer.encode(HELLO_TEXT, add_special_tokens=False)
    assert LLM(str(tiny_llama[2]), dtype="float32").get_tokenizer().apply_chat_template(HELLO) != HELLO_TEXT


@pytest.mark.parametrize(
    "template, message",
    [
        ("{% for m in messages %}", "chat_template does not parse"),
        ("{{ messages|no_such_filter }}", "chat_template does not parse.*no_such_filter"),
        ("templates/chatml.jinja", "no Jinja tags"),  # a file's name where its text belongs
        (b"{{ messages }}", "must be a chat template's text"),
    ],
)
def test_llm_refuses_a_template_that_cannot_work(template, message):
    """Refused by the configuration, before any model is read (the path does not exist)."""
    with pytest.raises(InvalidRequestError, match=message):
        LLM("/no/such/model.gguf", chat_template=template)


def mistralpy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mistralpy", *args], capture_output=True, text=True, timeout=300)


def test_run_uses_the_template_file(tiny_llama, tmp_path):
    """The file's template is the one rendering the chat: it answers the prompt with its own rejection."""
    template = tmp_path / "mine.jinja"
    template.write_text("{{ raise_exception('mine.jinja renders: ' + messages[-1]['content']) }}")
    out = mistralpy("run", "-m", str(tiny_llama[2]), "--chat-template", str(template), "--prompt", "Hi there")
    assert out.returncode == 1 and "mine.jinja renders: Hi there" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("command", ["run", "serve"])
def test_a_bad_template_file_stops_the_start(tmp_path, command):
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% if messages %}unclosed")
    cases = [(broken, f"the chat template {broken} does not parse"), (tmp_path / "absent.jinja", "cannot read")]
    for path, message in cases:
        extra = ["--prompt", "x"] if command == "run" else ["--port", "0"]
        out = mistralpy(command, "--chat-template", str(path), *extra)
        assert out.returncode == 1, out.stderr
        assert message in out.stderr and "Traceback" not in out.stderr


def test_raw_prompt_takes_no_template(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text(PLAIN)
    out = mistralpy("run", "--chat-template", str(template), "--raw", "--prompt", "x")
    assert out.returncode == 1 and "--raw" in out.stderr


# A template that tries an escape or a bomb when the last message asks for one, and renders a plain prompt otherwise.
TRIGGERS = {
    "class": "{{ c.__class__ }}",
    "subclasses": "{{ c.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ cycler.__init__.__globals__.os }}",
    "joiner": "{{ joiner.__init__.__globals__ }}",
    "attr": "{{ c|attr('__class__') }}",
    "format": "{{ '{0.__class__}'.format(c) }}",
    "namespace": "{% set ns = namespace() %}{% set ns.__class__ = 1 %}{{ ns.__class__.__base__ }}",
    "mutate": "{{ messages.pop() }}",
    "range": "{{ range(10**12)|length }}",
    "repeat": "{{ c * 10**10 }}",
    "power": "{{ 10**(10**9) }}",
    "printf": "{{ '%999999999d' % 1 }}",
    "center": "{{ c|center(10**10) }}",
    "loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
}
BRANCHES = "".join("{% elif c == '" + name + "' %}" + body for name, body in TRIGGERS.items())
SERVER_TEMPLATE = (
    "{% set c = messages[-1]['content'] %}{% if false %}" + BRANCHES + "{% else %}" + PLAIN + "{% endif %}"
)


@pytest.fixture(scope="module")
def template_server(tiny_llama, tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "triggers.jinja"
    path.write_text(SERVER_TEMPLATE)
    args = ("-m", str(tiny_llama[2]), "--dtype", "float32", "--served-model-name", MODEL, "--max-num-seqs", "4")
    proc = ServerProcess(*args, "--chat-template", str(path), "--api-key", KEY)
    try:
        yield proc.wait_ready()
    finally:
        proc.stop(signal.SIGKILL)


def chat(server, content: str):
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2, "temperature": 0}
    return http(server, "POST", "/v1/chat/completions", json=body)


@pytest.mark.parametrize("trigger", list(TRIGGERS))
def test_server_refuses_each_escape_and_keeps_serving(template_server, trigger):
    refused = chat(template_server, trigger)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and "chat template" in error["message"]
    body = {"model": MODEL, "messages": [{"role": "user", "content": trigger}]}
    tokenized = http(template_server, "POST", "/tokenize", json=body)
    assert tokenized.status_code == 400, tokenized.text  # /tokenize renders the template too
    served = chat(template_server, "Hello")
    assert served.status_code == 200, served.text
    assert served.json()["choices"][0]["finish_reason"] in ("length", "stop")


def test_server_renders_with_the_given_template(template_server):
    """The plain branch of the file's template, rendered by hand, is what the server tokenizes for a chat."""
    messages = http(template_server, "POST", "/tokenize", json={"model": MODEL, "messages": HELLO})
    prompt = http(
        template_server, "POST", "/tokenize", json={"model": MODEL, "prompt": HELLO_TEXT, "add_special_tokens": False}
    )
    assert messages.status_code == prompt.status_code == 200
    assert messages.json()["tokens"] == prompt.json()["tokens"]
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 1, "temperature": 0}
    usage = http(template_server, "POST", "/v1/chat/completions", json=body).json()["usage"]
    assert usage["prompt_tokens"] == len(prompt.json()["tokens"])
    assert "Traceback" not in template_server.output()  # the refusals above were answers, not failures
