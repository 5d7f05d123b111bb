"""Q4_K golden vectors: the float inputs (made here from a seed, checked by hash) and ggml's blocks for them
(tests/data/q4_k_ggml.npz, made by ggml's `quantize_row_q4_K_ref`; `python -m tests.make_q4_k_golden` remakes them).

The rows cover what a scale search can trip on: typical and heavy-tailed weights, bf16-rounded weights, constant and
all-zero rows, one-sided rows (the min > 0 and max < 0 paths), rounding ties, outliers, groups whose scale rounds to
0 next to a large one, scales that underflow float16, and two rows beyond ggml's own `nearest_int` assert (the
release builds everyone quantizes with still run them: a block min that overflows float16, and float32 subnormals
whose inverse scale overflows)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
BLOCKS = DATA / "q4_k_ggml.npz"
MANIFEST = DATA / "q4_k_ggml.json"
SEED = 20261204


def _bf16(x: np.ndarray) -> np.ndarray:
    """float32 values cut to bfloat16 (their upper 16 bits), as a bf16 checkpoint's weights are."""
    return (x.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


def _cases(rng: np.random.RandomState) -> dict[str, np.ndarray]:
    normal = rng.standard_normal
    outliers = normal((3, 512))
    outliers[:, rng.randint(0, 512, 6)] = 1e3
    one_large_group = normal((2, 256)) * 1e-3  # the other groups' scales round to 0 against this one's
    one_large_group[:, :32] = 1.0
    one_nonzero = np.zeros((2, 256))
    one_nonzero[[0, 1], [5, 200]] = [3.0, -2.5]
    zero_and_constant_groups = normal((2, 512))
    zero_and_constant_groups[:, 32:64] = 0.0
    zero_and_constant_groups[:, 300:332] = 1.0
    return {
        "gaussian_small": normal((4, 1024)) * 0.02,
        "gaussian_unit": normal((2, 512)),
        "bf16_weights": _bf16(normal((2, 768)) * 0.05),
        "laplace": rng.laplace(size=(2, 512)),
        "all_equal": np.repeat(np.array([[0.5], [-0.3], [1e-3], [-1e-3], [1000.0], [-7.0]]), 256, axis=1),
        "zeros": np.stack([np.zeros(256), -np.zeros(256)]),
        "negative_only": -np.abs(normal((3, 256))),
        "positive_only": np.abs(normal((2, 256))),
        "positive_offset": normal((2, 256)) * 0.01 + 5.0,
        "rounding_ties": rng.randint(-8, 8, (2, 512)) * 0.25,
        "signs": np.where(rng.random_sample((2, 256)) < 0.5, -1.0, 1.0),
        "ramp": np.linspace(-1.0, 1.0, 256)[None],
        "outliers": outliers,
        "one_large_group": one_large_group,
        "one_nonzero": one_nonzero,
        "zero_and_constant_groups": zero_and_constant_groups,
        "f16_underflow": normal((2, 256)) * 1e-8,
        "large": normal((2, 256)) * 6e4,
        "f16_overflow_min": normal((1, 256)) * 1e7,
        "f32_subnormal": normal((1, 256)) * 1e-40,
    }


def golden_inputs() -> dict[str, np.ndarray]:
    """name -> (rows, cols) float32, from numpy's legacy RandomState (the stream numpy keeps stable)."""
    with np.errstate(under="ignore"):
        return {
            name: np.ascontiguousarray(w, dtype=np.float32) for name, w in _cases(np.random.RandomState(SEED)).items()
        }


def sha256(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def load_golden() -> tuple[dict, dict[str, np.ndarray]]:
    """(the manifest: provenance and each input's hash, name -> ggml's (rows, bytes per row) uint8 blocks)."""
    with np.load(BLOCKS, allow_pickle=False) as blocks:
        return json.loads(MANIFEST.read_text()), {name: blocks[name] for name in blocks.files}
