"""XLoraManager: the engine's side of an X-LoRA model, in the LoRAManager's shape (a request's adapter -> a slot, the
step's per-token slots, the prefix cache's digest). Slot 0 is the X-LoRA model; -1 (a request naming no adapter) runs
the plain base model in the same batch: its tokens get zero adapter weights in the real pass."""

from __future__ import annotations

from pathlib import Path

import torch

from ...errors import InvalidRequestError
from ..request import LoRARequest
from .checkpoint import read_xlora
from .config import XLORA_ID
from .model import XLoraModel
from .non_granular import NonGranularScalings
from .scalings_log import ScalingsLog


class XLoraManager:
    def __init__(
        self, model: XLoraModel, request: LoRARequest, log: ScalingsLog | None = None,
        non_granular: NonGranularScalings | None = None,
    ) -> None:  # fmt: skip
        self.model, self.request, self.log, self.non_granular = model, request, log, non_granular
        self.checkpoint_digest = model.digest

    def read(self, request: LoRARequest) -> None:
        """Checks that `request` names this engine's X-LoRA model (the server checks its adapters before serving)."""
        if Path(request.lora_path).resolve() != Path(self.request.lora_path).resolve():
            raise InvalidRequestError(
                f"this engine runs the X-LoRA model {self.request.lora_path}; the adapter {request.lora_path} cannot "
                "be added to it (X-LoRA and LoRA adapters are not served together)"
            )

    def acquire(self, request: LoRARequest, busy: set[int]) -> int:
        self.read(request)
        return 0

    def slot_of(self, lora_int_id: int) -> int | None:
        return 0 if lora_int_id == self.request.lora_int_id else None

    def digest(self, slot: int) -> bytes:
        return self.checkpoint_digest

    def loaded(self) -> list[LoRARequest]:
        return [self.request]

    def unload(self, lora_int_id: int, busy: set[int]) -> None:
        raise InvalidRequestError("the X-LoRA model is part of this engine; it cannot be unloaded")

    def begin_step(self, slots: list[int]) -> None:
        self.model.token_mask = None if -1 not in slots else torch.tensor(slots) == 0

    def plan_step(self, inputs) -> None:
        """The step's fixed scalings, with tgt_non_granular_index (`inputs`: the model runner's StepInputs)."""
        if self.non_granular is not None:
            self.model.plan = self.non_granular.plan(inputs.order)

    def end_step(self) -> None:
        self.model.token_mask = None
        self.model.plan = None

    @property
    def adapters_active(self) -> bool:
        return True  # every step runs the X-LoRA model's passes (the native decoder stack never does)

    def record_step(self, inputs) -> None:
        """The step's scalings into the log, per X-LoRA request (`inputs`: the model runner's StepInputs)."""
        latest = self.model.latest
        if latest is not None and self.model.plan is not None:
            self.non_granular.record(self.model.plan, latest)
        if self.log is None or latest is None:
            return
        offset = 0
        for s in inputs.order:
            if s.request.lora_slot == 0:
                self.log.write(s.request.request_id, s.start, latest[offset : offset + s.num_new_tokens])
            offset += s.num_new_tokens
        self.log.flush()


def attach_xlora(
    model: torch.nn.Module, path: str, dtype: torch.dtype, name: str | None = None, log: str | None = None,
    non_granular: int | None = None,
) -> tuple[XLoraModel, XLoraManager]:  # fmt: skip
    """The loaded base model wrapped with the X-LoRA model at `path`, and its manager (`log`: a scalings log file;
    `non_granular`: mistral.rs's tgt_non_granular_index)."""
    xmodel = XLoraModel(model, read_xlora(path), dtype)
    request = LoRARequest(name or Path(path).resolve().name or "xlora", XLORA_ID, str(path))
    fixed = None if non_granular is None else NonGranularScalings(non_granular)
    return xmodel, XLoraManager(xmodel, request, None if log is None else ScalingsLog(log), fixed)
