"""`mistralpy run` as a user runs it: a subprocess, one-shot and a scripted chat on stdin."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .model_steps import reference_greedy


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mistralpy", *args], input=stdin, capture_output=True, text=True, timeout=300
    )


def test_version_and_help():
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("mistralpy ")
    for args in (["--help"], ["run", "--help"]):
        out = run_cli(*args)
        assert out.returncode == 0 and "usage: mistralpy" in out.stdout
    assert "--max-tokens" in run_cli("run", "--help").stdout


def test_one_shot(tiny_llama):
    out = run_cli("run", "-m", str(tiny_llama[2]), "--prompt", "Hello", "--max-tokens", "8", "--temperature", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    again = run_cli("run", "-m", str(tiny_llama[2]), "--prompt", "Hello", "--max-tokens", "8", "--temperature", "0")
    assert again.stdout == out.stdout


def test_scripted_chat_session(tiny_llama):
    script = "Hello there\n/reset\nSecond question\n/exit\nnever read\n"
    out = run_cli("run", "-m", str(tiny_llama[2]), "--max-tokens", "6", "--seed", "3", stdin=script)
    assert out.returncode == 0, out.stderr
    assert "(conversation cleared)" in out.stdout
    assert out.stdout.count("> ") == 4  # two messages, /reset and /exit; the line after /exit is never read


def test_chat_ends_on_eof(tiny_llama, tokenizer_dir):
    """Ctrl-D after one message: the banner, the reply (transformers' greedy tokens), an empty last prompt, exit 0."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    tokens = reference_greedy(tiny_llama[0], tokenizer(text, add_special_tokens=False).input_ids, 4)
    eos = tiny_llama[0].config.eos_token_id
    reply = tokenizer.decode(tokens[: tokens.index(eos)] if eos in tokens else tokens, skip_special_tokens=True)
    out = run_cli("run", "-m", str(tiny_llama[2]), "--max-tokens", "4", "--temperature", "0", stdin="Hi\n")
    assert out.returncode == 0, out.stderr
    banner, rest = out.stdout.split("\n", 1)
    assert banner.startswith("mistralpy chat:") and rest == f"> {reply}\n> \n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "-m", "/no/such/model.gguf", "--prompt", "x"], "not found"),
        (["run", "--prompt", "x", "--temperature", "-2"], "temperature"),
    ],
)
def test_errors_are_one_line(args, message):
    out = run_cli(*args)
    assert out.returncode == 1
    assert message in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0


def test_not_a_model_file(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_text("nope")
    out = run_cli("run", "-m", str(bad), "--prompt", "x")
    assert out.returncode == 1 and "not a GGUF file" in out.stderr and "Traceback" not in out.stderr


def test_kv_cache_flags(tiny_llama):
    out = run_cli("run", "-m", str(tiny_llama[2]), "--kv-cache-dtype", "int8", "--prompt", "Hi", "--max-tokens", "4",
                  "--temperature", "0")  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    zero = run_cli("run", "-m", str(tiny_llama[2]), "--kv-cache-tokens", "0", "--prompt", "Hi")
    assert zero.returncode == 1 and "kv_cache_tokens must be a positive integer" in zero.stderr
    bad = run_cli("run", "-m", str(tiny_llama[2]), "--kv-cache-dtype", "fp8", "--prompt", "Hi")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_isq_flag(tiny_llama):
    out = run_cli("run", "-m", str(tiny_llama[1]), "--isq", "q8_0", "--prompt", "Hi", "--max-tokens", "4",
                  "--temperature", "0", "--dtype", "bfloat16")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    bad = run_cli("run", "-m", str(tiny_llama[1]), "--isq", "q3", "--prompt", "Hi")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
