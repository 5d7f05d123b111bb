"""The gates' training set: (prompt, expert) rows, from mistral.rs's JSON ({"rows": [{"prompt", "expert"}]}) or given
in Python; each row checked (a non-empty prompt, an expert index in range)."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import InvalidRequestError
from .config import AnyMoeConfig


def read_dataset(config: AnyMoeConfig) -> list[tuple[str, int]]:
    if config.dataset is not None:
        rows, where = config.dataset, "anymoe dataset"
    else:
        where = config.dataset_json
        try:
            raw = json.loads(Path(where).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise InvalidRequestError(f"cannot read the AnyMoE dataset {where}: {e}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("rows"), list):
            raise InvalidRequestError(f"{where}: an AnyMoE dataset is an object with a list of rows under 'rows'")
        rows = [(r.get("prompt"), r.get("expert")) if isinstance(r, dict) else (None, None) for r in raw["rows"]]
    checked = []
    for i, row in enumerate(rows):
        prompt, expert = row if isinstance(row, tuple | list) and len(row) == 2 else (None, None)
        if not isinstance(prompt, str) or not prompt:
            raise InvalidRequestError(f"{where}: row {i} needs a non-empty prompt")
        if not isinstance(expert, int) or isinstance(expert, bool) or not 0 <= expert < config.num_experts:
            raise InvalidRequestError(
                f"{where}: row {i}'s expert must be an index in [0, {config.num_experts}) (0: the base MLP), "
                f"got {expert!r}"
            )
        checked.append((prompt, expert))
    if not checked:
        raise InvalidRequestError(f"{where}: the AnyMoE dataset has no rows")
    return checked
