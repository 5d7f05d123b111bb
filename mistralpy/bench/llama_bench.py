"""llama.cpp's own `llama-bench` binary as a peer backend (`--compare llama-cpp --llama-bench PATH`).

A separately built llama.cpp (e.g. benchmarks/build_llama_cpp_avx2.sh: AVX2 only, the peer of the avx2 ISA level)
is timed by its own benchmark tool, one process per run: llama-bench reports the seconds of its pp or tg test alone
(model loading excluded), which this backend returns. Its tg test generates after an empty prompt; ppN is N prompt
tokens. One sequence at a time, as llama-cpp-python's backend.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ..errors import InvalidRequestError
from .workloads import Test


class LlamaBenchBackend:
    name = "llama-bench"

    def __init__(self, binary: str, model: str, threads: int, timeout_s: float = 600.0) -> None:
        path = Path(binary)
        if not path.is_file() or not os.access(path, os.X_OK):
            raise InvalidRequestError(f"--llama-bench {binary}: not an executable file")
        if not model.endswith(".gguf"):
            raise InvalidRequestError("--llama-bench needs a GGUF model file")
        self.binary, self.model, self.threads, self.timeout_s = str(path), model, threads, timeout_s
        self.vocab_size = 1 << 15  # llama-bench makes its own tokens; the prompts passed to run() are not used
        self.dtype = "gguf"

    def supports(self, test: Test) -> bool:
        return test.concurrency == 1

    def run(self, test: Test, prompts: list[list[int]]) -> float:
        prompt, gen = (test.prompt_tokens, 0) if test.kind == "pp" else (0, test.gen_tokens)
        return self.seconds(prompt, gen)

    def seconds(self, prompt: int, gen: int) -> float:
        """llama-bench's time for one run of `prompt` prompt tokens or `gen` generated tokens."""
        args = [self.binary, "-m", self.model, "-p", str(prompt), "-n", str(gen), "-t", str(self.threads)]
        args += ["-r", "1", "-o", "json"]  # with its own warm-up run
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise InvalidRequestError(f"llama-bench did not run: {e}") from None
        if out.returncode != 0:
            raise InvalidRequestError(f"llama-bench failed (exit {out.returncode}): {out.stderr.strip()[-500:]}")
        return parse_seconds(out.stdout)


def parse_seconds(stdout: str) -> float:
    """The seconds of the single test in llama-bench's `-o json` output (its avg_ns)."""
    try:
        rows = json.loads(stdout)
        return float(rows[0]["avg_ns"]) / 1e9
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise InvalidRequestError(f"llama-bench printed no result ({type(e).__name__}): {stdout[-300:]!r}") from None
