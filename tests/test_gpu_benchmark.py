"""benchmarks/gpu.py without a GPU: its arguments, its clean refusal without CUDA, the bound's arithmetic, the bytes a
decode token reads, and the random models' shapes against the published parameter counts."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from benchmarks import gpu
from benchmarks.gpu_models import llama_config


def test_arguments_and_their_defaults():
    args = gpu.parse_args([])
    assert (args.models, args.concurrency, args.tokens) == (["embedded", "llama-3.2-1b"], [1, 32, 128], 128)
    args = gpu.parse_args(["--models", "llama-3.1-8b", "-c", "4,8", "-n", "64", "--no-transformers"])
    assert (args.models, args.concurrency, args.tokens, args.no_transformers) == (["llama-3.1-8b"], [4, 8], 64, True)


@pytest.mark.parametrize("argv", [["-c", "1,0"], ["-c", "x"], ["-n", "-3"], ["--models", "llama-9z"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        gpu.parse_args(argv)
    assert e.value.code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_refuses_cleanly():
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "needs a CUDA device, and torch sees none" in out.stderr and "Traceback" not in out.stderr


def test_the_bandwidth_bound():
    # 3.35 TB/s over 2.47 GB a token (Llama 3.2 1B in bf16): 1356 tokens/s
    assert gpu.bandwidth_bound(2_470_000_000, 3350.0) == pytest.approx(1356.28, abs=0.01)


def test_a_decode_token_reads_every_weight_but_the_embedding_rows(tiny_llama):
    from mistralpy.loader import open_model_source
    from mistralpy.loader.model_loader import load_model

    model = load_model(open_model_source(tiny_llama[1]), torch.float32)
    cfg = tiny_llama[0].config  # transformers' config of the same model
    h, i, kv, vocab = cfg.hidden_size, cfg.intermediate_size, cfg.num_key_value_heads * cfg.head_dim, cfg.vocab_size
    per_layer = h * h + 2 * h * kv + h * h + 3 * h * i + 2 * h  # q, k, v, o, gate/up/down, two norms
    want = (cfg.num_hidden_layers * per_layer + h + vocab * h) * 4  # layers, final norm, lm_head; float32
    assert gpu.decode_weight_bytes(model) == want


@pytest.mark.parametrize("shape, params", [("llama-3.2-1b", 1_235_814_400), ("llama-3.1-8b", 8_030_261_248)])
def test_random_shapes_have_the_published_sizes(shape, params):
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(shape))
    assert sum(p.numel() for p in model.parameters()) == params
