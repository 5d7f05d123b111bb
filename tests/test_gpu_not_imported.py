"""A CPU run never imports Triton or the GPU kernels: generating with the embedded model leaves them out of
sys.modules (they cost CPU users nothing)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
from mistralpy import LLM, SamplingParams
LLM().generate(["Hello"], SamplingParams(max_tokens=2))
print(sorted(m for m in sys.modules if m == "triton" or m.startswith(("triton.", "mistralpy.gpu"))))
"""


def test_a_cpu_run_imports_no_triton():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
