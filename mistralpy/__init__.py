"""mistralpy: a fast LLM inference engine and server in Python on PyTorch."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mistralpy")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

# Public names -> defining module, imported on first use so that `import mistralpy` (and the CLI's --help)
# does not pay for torch.
_EXPORTS = {
    "LLM": "llm",
    "SamplingParams": "sampling_params",
    "StructuredOutputsParams": "structured.params",
    "RequestOutput": "outputs",
    "CompletionOutput": "outputs",
    "Logprob": "outputs",
    "EmbeddingRequestOutput": "embed.outputs",
    "EmbeddingOutput": "embed.outputs",
    "MistralpyError": "errors",
    # mistral.rs's in-process API: requests and responses are the server's own OpenAI models
    "Runner": "runner",
    "Which": "which",
    "ModelDType": "which",
    "ToolChoice": "tools.spec",
    "ToolCall": "tools.calls",
    "ChatCompletionRequest": "server.protocol",
    "CompletionRequest": "server.protocol",
    "ChatCompletionResponse": "server.responses",
    "ChatCompletionChunk": "server.responses",
    "CompletionResponse": "server.responses",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mistralpy' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
