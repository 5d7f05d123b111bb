"""The chat template sandbox against the known Jinja escapes and memory / CPU bombs: each is refused as the request's
error (InvalidRequestError, HTTP 400) and the process carries on. The bombs run in a child process under a memory
limit, so that one getting through fails this test instead of killing the test run."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap

import pytest

from mistralpy.chat_template import budget as template_budget
from mistralpy.chat_template import render_chat_template
from mistralpy.errors import InvalidRequestError

MESSAGES = [{"role": "user", "content": "hi"}]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

ESCAPES = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ 'a'.upper.__self__.__class__ }}",
    "{{ 'a'.__init__.__globals__ }}",
    "{{ messages.__class__.__base__ }}",
    "{{ cycler.__init__.__globals__.os }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ namespace.__init__.__globals__ }}",
    "{% set ns = namespace() %}{{ ns.__init__.__globals__ }}",  # a namespace hides its own attributes: undefined
    "{% set ns = namespace() %}{% set ns.__class__ = 'x' %}{{ ns.__class__.__mro__ }}",
    "{% set ns = namespace() %}{{ ns._Namespace__attrs }}",
    "{{ ''|attr('__class__') }}",
    "{{ messages|attr('__class__')|attr('__base__') }}",
    "{{ '{0.__class__}'.format('') }}",
    "{{ '{0.__class__.__base__.__subclasses__}'.format(messages) }}",
    "{{ '{x.__class__}'.format_map({'x': 1}) }}",
    "{{ ''.format.__globals__ }}",
    "{{ raise_exception.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ range.__globals__ }}",
    "{% for m in messages %}{{ loop.__class__ }}{% endfor %}",
    "{{ (messages|map('upper')).gi_frame }}",
    "{{ messages.pop() }}",  # the immutable sandbox: no mutating the request's data
    "{{ messages[0].update({'role': 'system'}) }}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_escapes_are_refused(template):
    with pytest.raises(InvalidRequestError, match="unsafe|has no attribute"):
        render_chat_template(template, MESSAGES, True)


# Legitimate uses of every operation the sandbox bounds or rewrites: they render as transformers renders them.
LEGIT = [
    "{% for m in messages %}{{ loop.index }}/{{ loop.length }}{{ '!' if loop.last }}{{ loop.cycle('a', 'b') }}"
    "{{ m.role ~ ':' ~ m.content }}{% else %}none{% endfor %}",
    "{% for m in messages if m.role != 'system' %}{{ m.content|upper }}{% endfor %}{% for k, v in messages[0].items() "
    "%}{{ k }}={{ v }};{% endfor %}",
    "{% for x in [[1, [2, 3]], [4]] recursive %}{% if x is iterable %}({{ loop(x) }}){% else %}{{ x }}{% endif %}"
    "{% endfor %}",
    "{% macro show(m, sep='|') %}{{ m.role }}{{ sep }}{{ caller() if caller else '' }}{% endmacro %}"
    "{% for m in messages %}{% call show(m) %}{{ m.content|trim }}{% endcall %}{% endfor %}{{ show(messages[0]) }}",
    "{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + m.content|length %}"
    "{% set ns.s = ns.s + m.role[0] %}{% endfor %}{{ ns.n }} {{ ns.s * 2 }} {{ 2 ** 10 }} {{ 7 % 3 }} {{ [0] * 3 }}",
    "{% set block %}{% for m in messages %}{{ m.content }}{% endfor %}{% endset %}{{ block|length }}"
    "{% filter upper %}{{ messages[0].content }}{% endfilter %}{% autoescape true %}{{ '<' ~ messages[0].role }}"
    "{{ ('<b>'|safe) ~ '<' }}{{ ('<b>'|safe) ~ messages[0].role ~ '<' }}{% endautoescape %}",
    "{{ '%s has %d chars, %5.1f%%' % (messages[0].role, messages[0].content|length, 12.345) }}"
    "{{ '%(role)s!'|format(role='x') }}{{ '{0:>8}|{1:.3}|{0!r}'.format(messages[0].role, 3.14159) }}"
    "{{ '{r}'.format_map({'r': 1}) }}",
    "{{ messages[0].content|center(30) }}|{{ messages[0].content|indent(2, true) }}|"
    "{{ (messages[0].content * 3)|wordwrap(10) }}|{{ messages[0].content|replace('o', '00', 1) }}|"
    "{{ messages|map(attribute='role')|join(', ') }}|{{ messages|tojson(indent=2) }}|{{ messages|length }}",
    "{{ range(7)|batch(3, '-')|list }}{{ range(7)|slice(3)|list }}{{ [[1], [2]]|sum(start=[]) }}{{ [3, 1, 2]|sort }}"
    "{{ messages|selectattr('role', 'equalto', 'user')|list|length }}{{ [1, 2, 2]|unique|list }}{{ [1, 5]|max }}",
    "{{ 'ab'.center(6, '*') }}{{ 'x'.ljust(3) }}|{{ '7'.zfill(3) }}{{ 'a\tb'.expandtabs(4) }}{{ ','.join(['a', 'b']) }}"
    "{{ 'aXa'.replace('a', 'bb') }}{{ 'abc'.translate({97: 'A'}) }}{{ lipsum(1, false, 5, 6)|wordcount > 4 }}",
    "{{ messages[0] }}{{ messages[0].content.split(' ') }}{{ (1, 2) }}{{ {'a': [1, 2.5, none, true]} }}"
    "{{ messages[1:] }}{{ messages[-1]['content'][::-2] }}",
]


@pytest.mark.parametrize("template", LEGIT)
def test_legitimate_templates_render_as_transformers_renders_them(template):
    from transformers.utils.chat_template_utils import render_jinja_template

    messages = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hello world, how are you"}]
    expected = render_jinja_template([messages], chat_template=template, add_generation_prompt=True)[0][0]
    assert render_chat_template(template, messages, True) == expected


A_MILLION = "'x' * 1000000"
BOMBS = [
    "{{ 'a' * 10**10 }}",
    "{{ [1] * 10**10 }}",
    "{{ (1,) * 10**10 }}",
    "{{ 'a' * 1000000 * 2 }}",
    "{{ 10**(10**9) }}",
    "{% set ns = namespace(x=2) %}{% for i in range(100) %}{% set ns.x = ns.x * ns.x %}{% endfor %}",
    "{{ '%999999999d' % 1 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ '%.999999999f' % 1.5 }}",
    "{{ '%(a(b))999999999s' % {'a(b)': 1} }}",
    "{{ '%s' * 100000 % ((" + A_MILLION + ",) * 100000) }}",
    "{{ 'a'|center(10**10) }}",
    "{{ 'x'|indent(10**10, true) }}",
    "{{ ('x\\n' * 500000)|indent(100) }}",
    "{{ 'x'|replace('', 'y' * 1000000) }}",
    "{{ (" + A_MILLION + ")|wordwrap(1, wrapstring='y' * 1000) }}",
    "{{ '%s'|format('y' * 999999) * 2 }}",
    "{{ [1]|batch(10**9, 'x')|list }}",
    "{{ [1]|slice(10**9)|list }}",
    "{{ ([[1]] * 100000)|sum(start=[]) }}",
    "{{ lipsum(10**9) }}",
    "{{ lipsum(1, max=10**9) }}",
    "{{ 'x'.ljust(10**10) }}",
    "{{ 'x'.zfill(10**10) }}",
    "{{ ('\\t' * 1000000).expandtabs(1000000) }}",
    "{{ 'x'.replace('', 'y' * 1000000) }}",
    "{{ ('y' * 100000).join(['x' * 100000] * 100000) }}",
    "{{ (" + A_MILLION + ").translate({120: 'y' * 1000000}) }}",
    "{{ '{:999999999}'.format(1) }}",
    "{{ '{0:{1}}'.format(1, 999999999) }}",
    "{{ ('{0}' * 100000).format(" + A_MILLION + ") }}",
    "{{ [" + A_MILLION + "] * 1000000 }}",
    "{{ ([" + A_MILLION + "] * 1000000)|join }}",
    "{{ ([" + A_MILLION + "] * 1000000)|tojson }}",
    "{{ ([" + A_MILLION + "] * 1000000)|string }}",
    "{{ ([" + A_MILLION + "] * 1000000)|pprint }}",
    "{{ '' ~ ([" + A_MILLION + "] * 1000000) }}",
    "{% set ns = namespace(x=['a']) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s %}{{ ns.s }}{{ ns.s }}{% endset %}"
    "{% endfor %}",
    "{% macro d(s) %}{{ s }}{{ s }}{% endmacro %}{% set ns = namespace(s='ab') %}{% for i in range(60) %}"
    "{% set ns.s = d(ns.s) %}{% endfor %}",
    "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% set s = " + A_MILLION + " %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}" + "x" * 10000 + "{% endfor %}",
    "{% set s = " + A_MILLION + " %}{% for i in range(100000) %}{% set t = s[1:] %}{% endfor %}",
    "{% set ns = namespace(x=1) %}{% for i in range(900) %}{% set ns.x = [ns.x] %}{% endfor %}"
    "{{ ns.x|tojson(indent=100000) }}",
    "{{ range(10**12) }}",
    "{{ '😀'|center(1000000) }}" * 600,  # constants Jinja computes as it compiles: 2.4 GB of them
]

_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from mistralpy.chat_template import render_chat_template
    from mistralpy.errors import InvalidRequestError
    messages = [{"role": "user", "content": "hi"}]
    for template in json.load(sys.stdin):
        start = time.monotonic()
        try:
            result = {"rendered": len(render_chat_template(template, messages, True))}
        except InvalidRequestError as e:
            result = {"refused": str(e)}
        result["seconds"] = time.monotonic() - start
        print(json.dumps(result), flush=True)
    """
)


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def test_bombs_are_refused_and_the_process_carries_on():
    """Each bomb is refused within the render's time limit, in one child process (memory capped at 2 GiB, which
    `'a' * 10**10` alone would pass ten times over); a normal conversation renders right after."""
    normal = CHATML
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], input=json.dumps([*BOMBS, normal]), capture_output=True, text=True,
        timeout=300, preexec_fn=_limit_memory,
    )  # fmt: skip
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and len(results) == len(BOMBS) + 1, (
        f"the child died at {BOMBS[len(results)] if len(results) < len(BOMBS) else 'the end'!r}: {proc.stderr[-2000:]}"
    )
    for template, result in zip(BOMBS, results, strict=False):
        assert "refused" in result, f"not refused: {template!r} -> {result}"
        assert result["seconds"] < template_budget.TIME_LIMIT_S + 1, (template, result)
    expected = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert results[-1] == {"rendered": len(expected), "seconds": results[-1]["seconds"]}
    assert render_chat_template(normal, MESSAGES, True) == expected


def test_time_limit_stops_work_no_hook_sees(monkeypatch):
    """Comparisons inside a loop allocate nothing and call nothing: the render's deadline stops them."""
    monkeypatch.setattr(template_budget, "TIME_LIMIT_S", 0.05)
    template = "{% set s = 'a' * 1000000 %}{% for i in range(50000) %}{% if 'b' in s %}{% endif %}{% endfor %}"
    with pytest.raises(InvalidRequestError, match="ran for more than 0.05 s"):
        render_chat_template(template, MESSAGES, True)


def test_bounds_grow_with_the_inputs():
    """A prompt far past the fixed value limit renders, since the limits scale with the render's inputs."""
    long = "word " * 600_000  # 3 M characters
    messages = [{"role": "user", "content": long}] * 3
    text = render_chat_template(CHATML + "{{ messages|tojson|length }}", messages, True)
    assert text.startswith("<|im_start|>user\n" + long.strip() + "<|im_end|>\n")
    assert text.endswith(str(len(json.dumps(messages, ensure_ascii=False))))


@pytest.mark.parametrize(
    "template, kind",
    [
        ("{{ messages[0].content + 1 }}", "TypeError"),
        ("{{ '%(x)s' % {} }}", "KeyError"),
        ("{{ 1 // (messages|length - 1) }}", "ZeroDivisionError"),
        ("{{ 'abc'.index('z') }}", "ValueError"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError"),
        ("{{ messages[0].content|tojson(indent='x', sort_keys=1, separators=3) }}", "TypeError"),
    ],
)
def test_template_failures_are_the_requests_error(template, kind):
    with pytest.raises(InvalidRequestError, match=f"chat template error: {kind}"):
        render_chat_template(template, MESSAGES, True)


def test_internal_bugs_are_not_blamed_on_the_request(monkeypatch):
    """A failure that is no template's doing (here: the budget itself breaks) surfaces as what it is."""

    def broken(self, units):
        raise RuntimeError("a bug in mistralpy")

    monkeypatch.setattr(template_budget.RenderBudget, "charge", broken)
    with pytest.raises(RuntimeError, match="a bug in mistralpy"):
        render_chat_template(CHATML, MESSAGES, True)
