"""Backends the benchmark can time: mistralpy itself, and peers (llama-cpp-python, transformers) when installed.

Each backend answers `run(test, prompts) -> seconds` for the whole test; peers are never package dependencies.
"""

from __future__ import annotations

import os
import time
from typing import Protocol

from ..errors import InvalidRequestError
from .workloads import Test


class Backend(Protocol):
    name: str
    vocab_size: int

    def supports(self, test: Test) -> bool: ...
    def run(self, test: Test, prompts: list[list[int]]) -> float: ...


class MistralpyBackend:
    name = "mistralpy"

    def __init__(self, model: str | None, dtype: str, max_model_len: int, **llm_options) -> None:
        from ..llm import LLM

        # No prefix caching: each repetition must compute its prompt, as the peers do.
        self.llm = LLM(model, dtype=dtype, max_model_len=max_model_len, enable_prefix_caching=False, **llm_options)
        self.vocab_size = self.llm.engine.model_config.vocab_size
        self.dtype = str(self.llm.engine.dtype).removeprefix("torch.")

    def supports(self, test: Test) -> bool:
        return test.prompt_tokens + test.gen_tokens <= self.llm.engine.max_model_len

    def run(self, test: Test, prompts: list[list[int]]) -> float:
        from ..sampling_params import SamplingParams

        params = SamplingParams(temperature=0, max_tokens=test.gen_tokens, ignore_eos=True)
        start = time.perf_counter()
        self.llm.generate(prompts, params)
        return time.perf_counter() - start


class LlamaCppBackend:
    """llama.cpp through llama-cpp-python, in this process: one sequence at a time (no concurrency tests)."""

    name = "llama.cpp"

    def __init__(self, model: str, threads: int, max_model_len: int) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise InvalidRequestError("--compare llama-cpp needs llama-cpp-python installed") from None
        self.llm = Llama(model, n_ctx=max_model_len, n_batch=512, n_threads=threads, verbose=False)
        self.vocab_size = self.llm.n_vocab()
        self.dtype = "gguf"

    def supports(self, test: Test) -> bool:
        return test.concurrency == 1

    def run(self, test: Test, prompts: list[list[int]]) -> float:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(prompts[0])
        for _ in range(test.gen_tokens - 1 if test.kind != "pp" else 0):
            token = self.llm.sample(temp=0.0)  # greedy, like ours
            self.llm.eval([token])
        return time.perf_counter() - start


class TransformersBackend:
    """transformers loading the same GGUF (dequantized), bf16; concurrency = one static batch."""

    name = "transformers"

    def __init__(self, model: str, dtype: str) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError:
            raise InvalidRequestError("--compare transformers needs transformers (and accelerate) installed") from None
        if not model.endswith(".gguf"):
            raise InvalidRequestError("--compare transformers needs a GGUF model file")
        torch_dtype = torch.float32 if dtype == "float32" else torch.bfloat16
        folder, name = os.path.dirname(model), os.path.basename(model)
        self.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype).eval()
        self.vocab_size = self.model.config.vocab_size
        self.dtype = str(torch_dtype).removeprefix("torch.")

    def supports(self, test: Test) -> bool:
        return True

    def run(self, test: Test, prompts: list[list[int]]) -> float:
        import torch

        ids = torch.tensor(prompts)
        start = time.perf_counter()
        with torch.inference_mode():
            self.model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=test.gen_tokens,
                min_new_tokens=test.gen_tokens, do_sample=False, pad_token_id=0,
            )  # fmt: skip
        return time.perf_counter() - start
