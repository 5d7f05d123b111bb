from __future__ import annotations

import os
import signal

import torch

# Triton's kernels run in its interpreter on a machine without a GPU (the GPU path's tests: test_gpu_*.py,
# test_weight_sites.py). Set before anything imports triton.language: a library imported early (peft) makes its
# jit'd helpers for compiled kernels otherwise, and an interpreted kernel cannot call them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import openai  # noqa: E402
import pytest  # noqa: E402

from mistralpy import threads  # noqa: E402

from . import machine  # noqa: E402
from .families import build as build_family  # noqa: E402
from .helpers import llama_to_gguf, make_tiny_llama, save_tokenizer  # noqa: E402
from .server_process import KEY, start_test_server  # noqa: E402

# The suite's engines (and its servers, which inherit this) on a fixed thread count: float32 results depend on it,
# and tests compare runs. tests/test_threads.py tests the adaptive policy.
os.environ.setdefault(threads.ENV_VAR, str(torch.get_num_threads()))


@pytest.fixture(scope="session", autouse=True)
def native_kernels():
    """Build (or load) the native kernels before any engine starts, so every engine of the run takes the same
    attention path. None only where tests/machine.py says this machine cannot build them (the torch paths are
    tested then); where it can, a failed build fails the run, with the compiler's output and the log's path."""
    from mistralpy import kernels

    if not machine.CAN_BUILD_NATIVE:
        return None
    try:
        return kernels.build(timeout_s=1800)
    except kernels.KernelBuildError as e:
        pytest.fail(
            f"this machine can build the native kernels (tests/machine.py) and the build failed: {e}", pytrace=False
        )


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tokenizer_dir):
    """(HF model, HF folder path, GGUF file path) of one tiny random Llama."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    model = make_tiny_llama(folder)
    for f in tokenizer_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    gguf_path = folder.parent / "tiny_llama.gguf"
    llama_to_gguf(model, gguf_path)
    return model, folder, gguf_path


@pytest.fixture(scope="session")
def family_files(tmp_path_factory, tokenizer_dir):
    """name -> tests.families.FamilyFiles of that family's tiny model, built once per session."""
    built = {}

    def get(name: str):
        if name not in built:
            built[name] = build_family(name, tmp_path_factory.mktemp(name), tokenizer_dir)
        return built[name]

    return get


@pytest.fixture(scope="module")
def server(tiny_llama):
    """A live `mistralpy serve` process on the tiny model, one per test module, always killed at the end."""
    proc = start_test_server(tiny_llama[2])
    try:
        yield proc
    finally:
        proc.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
