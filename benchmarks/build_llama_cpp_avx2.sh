#!/bin/bash
# Builds llama-bench for the AVX2 level only (x86-64-v3: AVX, AVX2, FMA, F16C; every AVX-512 flag off) from the
# llama.cpp vendored in llama-cpp-python's source tarball: the peer of mistralpy's `avx2` ISA level.
# Usage: bash benchmarks/build_llama_cpp_avx2.sh [cache_dir]   (default ~/.cache/mistralpy/llama-cpp-avx2)
# Prints the llama-bench path last; pass it to `mistralpy bench --isa avx2 --llama-bench <path>`.
# AVX_VNNI=ON builds the peer of the `avx2_vnni` level instead (llama.cpp's GGML_AVX_VNNI: its dot products with
# vpdpbusd; default cache dir ~/.cache/mistralpy/llama-cpp-avx2-vnni).
# AVX512=ON builds the peer of the `avx512` level (AVX-512 with VNNI, BF16 and VBMI; default cache dir
# ~/.cache/mistralpy/llama-cpp-avx512). AMX stays off at every level: on these VMs llama.cpp's AMX kernels die of
# SIGILL at their first tile instruction, and mistralpy's levels do not use AMX either.
# About 10-20 minutes on 2 shared cores; an existing binary is reused.
set -euo pipefail
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
AVX_VNNI=${AVX_VNNI:-OFF}
AVX512=${AVX512:-OFF}
SUFFIX=$([ "$AVX_VNNI" = ON ] && echo "-avx2-vnni" || echo "-avx2")
SUFFIX=$([ "$AVX512" = ON ] && echo "-avx512" || echo "$SUFFIX")
CACHE=${1:-${HOME}/.cache/mistralpy/llama-cpp$SUFFIX}
JOBS=${JOBS:-2}
BIN="$CACHE/build/bin/llama-bench"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$CACHE"
SRC="$CACHE/llama_cpp_python-$VERSION"
if [ ! -d "$SRC/vendor/llama.cpp" ]; then
  TARBALL=$(ls "$CACHE"/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || true)
  if [ -z "$TARBALL" ]; then
    # pip reads the sdist's metadata through its build backend, taken from this environment (--no-build-isolation)
    python3 -c "import scikit_build_core" 2>/dev/null || python3 -m pip install -q scikit-build-core
    python3 -m pip download -q --no-binary llama-cpp-python --no-deps --no-build-isolation \
      -d "$CACHE" "llama-cpp-python==$VERSION"
    TARBALL="$CACHE/llama_cpp_python-$VERSION.tar.gz"
  fi
  tar -xzf "$TARBALL" -C "$CACHE"
fi
ISA=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
  -DGGML_AVX_VNNI="$AVX_VNNI" -DGGML_AVX512="$AVX512" -DGGML_AVX512_VBMI="$AVX512" -DGGML_AVX512_VNNI="$AVX512"
  -DGGML_AVX512_BF16="$AVX512" -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
cmake -S "$SRC/vendor/llama.cpp" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release "${ISA[@]}" \
  -DGGML_CPU_ALL_VARIANTS=OFF -DGGML_BACKEND_DL=OFF -DGGML_OPENMP=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DBUILD_SHARED_LIBS=OFF >"$CACHE/cmake.log"
cmake --build "$CACHE/build" --target llama-bench -j "$JOBS" >"$CACHE/build.log"
echo "$BIN"
