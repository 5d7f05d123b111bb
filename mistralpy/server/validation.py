"""pydantic validation errors -> one readable message, the same at the HTTP edge (400) and in-process."""

from __future__ import annotations

from typing import Any

_MAX_LISTED_ERRORS = 5
NOT_A_JSON_OBJECT = "the request body must be a JSON object, sent with Content-Type: application/json"


def describe_validation_errors(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """pydantic errors -> one message naming each bad field, and the first field's path as `param`."""
    parts, params = [], []
    for err in errors[:_MAX_LISTED_ERRORS]:
        kind = err.get("type")
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        path = ".".join(loc) if loc and kind != "json_invalid" else None  # a JSON error's loc is a byte offset
        params.append(path)
        if kind == "extra_forbidden":
            parts.append(f"unknown or unsupported field '{path}'")
        elif kind == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "")
            parts.append(f"the request body is not valid JSON: {detail}".rstrip(": "))
        elif path is None and kind in ("missing", "model_attributes_type", "model_type", "dict_type"):
            parts.append(NOT_A_JSON_OBJECT)
        else:
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            parts.append(f"{path}: {msg}" if path else msg)
    if len(errors) > _MAX_LISTED_ERRORS:
        parts.append(f"and {len(errors) - _MAX_LISTED_ERRORS} more")
    return "; ".join(parts), params[0] if params else None
