"""Remake tests/data/q4_k_ggml.{npz,json}: ggml's own Q4_K blocks for tests/q4_k_golden.py's inputs.

    python -m tests.make_q4_k_golden [--version 0.3.36] [--work DIR]

Fetches the llama-cpp-python sdist with pip (it vendors llama.cpp), builds only ggml's base library from it with
cmake (ggml-base carries `quantize_row_q4_K_ref` and is compiled without -march, so no FMA contraction can change
its float32 arithmetic), and calls `quantize_row_q4_K_ref` on each input through ctypes. Needs pip, cmake, a C/C++
compiler and ninja; none of ggml's code lives here."""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .q4_k_golden import BLOCKS, MANIFEST, golden_inputs, sha256

Q4_K_BLOCK_BYTES, QK_K = 144, 256


def fetch_sdist(version: str, work: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
         f"llama-cpp-python=={version}", "-d", str(work)],
        check=True,
    )  # fmt: skip
    return next(work.glob(f"llama_cpp_python-{version}.tar.gz"))


def build_ggml_base(sdist: Path, work: Path) -> Path:
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
        tar.extractall(work, members=members, filter="data")
    source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
    build = work / "build"
    options = ["GGML_NATIVE", "LLAMA_BUILD_TESTS", "LLAMA_BUILD_EXAMPLES", "LLAMA_BUILD_TOOLS", "LLAMA_BUILD_SERVER"]
    flags = [f"-D{name}=OFF" for name in options] + ["-DLLAMA_CURL=OFF", "-DCMAKE_BUILD_TYPE=Release"]
    subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", *flags], check=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "ggml-base"], check=True)
    return next(build.glob("bin/libggml-base.so"))


def ggml_q4_k(lib: ctypes.CDLL, weights: np.ndarray) -> np.ndarray:
    rows, cols = weights.shape
    out = np.zeros((rows, cols // QK_K * Q4_K_BLOCK_BYTES), dtype=np.uint8)
    lib.quantize_row_q4_K_ref(weights.ctypes.data, out.ctypes.data, weights.size)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="0.3.36", help="llama-cpp-python sdist version (its vendored ggml)")
    parser.add_argument("--work", type=Path, help="a folder for the sdist and the build (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        sdist = fetch_sdist(args.version, work)
        lib = ctypes.CDLL(str(build_ggml_base(sdist, work)))
        lib.quantize_row_q4_K_ref.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        inputs = golden_inputs()
        blocks = {name: ggml_q4_k(lib, w) for name, w in inputs.items()}
        manifest = {
            "source": f"{sdist.name} (vendor/llama.cpp/ggml), quantize_row_q4_K_ref in libggml-base, Release",
            "sdist_sha256": hashlib.sha256(sdist.read_bytes()).hexdigest(),
            "inputs_sha256": {name: sha256(w) for name, w in inputs.items()},
        }
    np.savez_compressed(BLOCKS, **blocks)
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {BLOCKS} ({BLOCKS.stat().st_size} bytes) and {MANIFEST}")


if __name__ == "__main__":
    main()
