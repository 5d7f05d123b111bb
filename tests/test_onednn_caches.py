"""oneDNN's per-shape caches held bounded: after `bound_onednn_caches`, bf16 matmuls over ever new row counts (each
engine step has its own) stop growing the process once the caches are full. Unbounded (1024 entries each, the
default), the same 400 new shapes grew it by 262 MiB on this project's machine; bounded, by 16 MiB."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
from mistralpy.onednn_caches import bound_onednn_caches
bound_onednn_caches()
import torch

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

w = torch.randn(256, 64, dtype=torch.bfloat16)
for m in range(1, 1000, 5):  # 200 shapes: the caches fill up
    torch.nn.functional.linear(torch.randn(m, 64, dtype=torch.bfloat16), w)
full = rss_mib()
for m in range(1000, 3000, 5):  # 400 new shapes
    torch.nn.functional.linear(torch.randn(m, 64, dtype=torch.bfloat16), w)
print(rss_mib() - full)
"""


def test_bf16_matmuls_over_new_shapes_stop_growing_the_process():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    assert float(out.stdout.split()[-1]) < 30, out.stdout
