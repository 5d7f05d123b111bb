"""oneDNN's per-shape caches held bounded: after `bound_onednn_caches`, bf16 matmuls over ever new row counts (each
engine step has its own) grow the process far less than with the default capacity (1024 entries each), measured
side by side in two fresh processes (on this project's machine, the heap trimmed: 218 MiB unbounded, 0 bounded)."""

from __future__ import annotations

import os
import subprocess
import sys

from mistralpy.onednn_caches import VARIABLES

SCRIPT = """
import sys
from mistralpy.heap import trim_heap
from mistralpy.onednn_caches import bound_onednn_caches
bound_onednn_caches()
import torch

def rss_mib():
    trim_heap()  # freed tensors handed back, so that what stays is what the caches hold
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

w = torch.randn(256, 64, dtype=torch.bfloat16)
for m in range(1, 1000, 5):  # 200 shapes: bounded caches fill up
    torch.nn.functional.linear(torch.randn(m, 64, dtype=torch.bfloat16), w)
full = rss_mib()
for m in range(1000, 3000, 5):  # 400 new shapes
    torch.nn.functional.linear(torch.randn(m, 64, dtype=torch.bfloat16), w)
print(rss_mib() - full)
"""


def _growth(env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True, env=env
    )
    return float(out.stdout.split()[-1])


def test_bf16_matmuls_over_new_shapes_grow_the_process_far_less_bounded():
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    bounded = _growth(env)
    unbounded = _growth({**env, **dict.fromkeys(VARIABLES, "1024")})  # the libraries' defaults, set by hand
    assert unbounded > 100, unbounded  # the growth this guards against is there to be seen
    assert bounded < unbounded / 4, (bounded, unbounded)
