"""ScalingsLog: the classifier's scalings of every X-LoRA token computed, one JSON line per request and step, for
users who study them (mistral.rs's X-LoRA logging, PEFT's scalings log):
{"request_id": ..., "positions": [p, ...], "scalings": [[[adapter weights] per LoRA layer] per position]}.
A position is logged again when it is computed again (a rejected speculative draft, a preempted request)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...errors import InvalidRequestError


class ScalingsLog:
    def __init__(self, path: str | Path) -> None:
        try:
            self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the engine's life
        except OSError as e:
            raise InvalidRequestError(f"cannot open the X-LoRA scalings log {path}: {e}") from None

    def write(self, request_id: str, start: int, scalings: torch.Tensor) -> None:
        """`scalings`: (tokens, LoRA layers, adapters) of positions start, start + 1, ..."""
        positions = list(range(start, start + scalings.shape[0]))
        line = {"request_id": request_id, "positions": positions, "scalings": scalings.tolist()}
        self.file.write(json.dumps(line) + "\n")

    def flush(self) -> None:
        self.file.flush()
