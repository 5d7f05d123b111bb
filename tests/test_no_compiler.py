"""A machine without a C++ compiler (CXX names a binary that does not exist, an empty build cache): no native kernel
loads, the engine runs the torch paths, and the embedded Q4_1 model's weights still stay quantized on every ISA level
(torch's int4 kernel: Int4PackLinear), never expanded to dense, in the level's auto dtype. One fresh process per
level, as the kernels are fixed once a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import machine

ROOT = Path(__file__).resolve().parent.parent
LEVELS = ["portable"] + ["avx2"] * machine.CPU_AVX2

SNIPPET = """
import json, torch
from mistralpy import LLM, SamplingParams, kernels
from mistralpy.quant.quantized_linear import QuantizedLinear
llm = LLM(max_model_len=256)
model = llm.engine.model_runner.model
kinds = sorted({type(m).__name__ for m in model.modules() if isinstance(m, (QuantizedLinear, torch.nn.Linear))})
out = llm.generate(["The capital of France is"], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
print(json.dumps({"kinds": kinds, "dtype": str(llm.engine.dtype), "native": kernels.loaded() is not None,
                  "tokens": len(out[0].outputs[0].token_ids)}))
"""


@pytest.mark.parametrize("level", LEVELS)
def test_without_a_compiler_the_weights_stay_quantized(tmp_path, level: str) -> None:
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), TORCH_EXTENSIONS_DIR=str(tmp_path / "cache"))
    env.update(MISTRALPY_ISA=level, MISTRALPY_NATIVE="1")
    run = subprocess.run(
        [sys.executable, "-c", SNIPPET], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["native"] is False
    # every linear (the projections, fused or not): on torch's int4 kernel, none dense (DenseLinear, nn.Linear)
    assert report["kinds"] and set(report["kinds"]) <= {"Int4PackLinear", "FusedQuantizedLinear"}, report
    assert "Int4PackLinear" in report["kinds"]
    assert report["dtype"] == ("torch.float32" if level == "portable" else "torch.bfloat16")
    assert report["tokens"] == 4
