"""mistralpy's own table of GGML types and GGUF constants (so that loading does not import the gguf package) equals
the gguf package's."""

from __future__ import annotations

import subprocess
import sys

from gguf import constants

from mistralpy.loader import gguf_header
from mistralpy.quant import ggml_types


def test_types_and_block_sizes_equal_the_gguf_package() -> None:
    ours = {t.name: (t.value, ggml_types.GGML_QUANT_SIZES[t]) for t in ggml_types.GGMLQuantizationType}
    theirs = {t.name: (t.value, constants.GGML_QUANT_SIZES[t]) for t in constants.GGMLQuantizationType}
    assert ours == theirs
    assert ggml_types.QK_K == constants.QK_K


def test_header_constants_equal_the_gguf_package() -> None:
    assert {v.name: v.value for v in gguf_header.GGUFValueType} == {v.name: v.value for v in constants.GGUFValueType}
    assert (gguf_header.GGUF_MAGIC, gguf_header.GGUF_DEFAULT_ALIGNMENT) == (
        constants.GGUF_MAGIC,
        constants.GGUF_DEFAULT_ALIGNMENT,
    )


def test_the_engine_does_not_import_gguf(tiny_llama) -> None:
    code = f"import sys; from mistralpy import LLM; LLM({str(tiny_llama[2])!r}); print('gguf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
