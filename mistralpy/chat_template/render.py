"""Chat templates rendered in a sandboxed Jinja environment, set up as transformers sets it up, within bounds on what
a template may make and spend (sandbox.py): a template that tries an escape or asks for more memory or work
than a prompt needs is refused as the request's error, and the process carries on."""

from __future__ import annotations

import functools
import json
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import jinja2
import jinja2.ext
from jinja2.sandbox import SecurityError

from ..errors import InvalidRequestError
from .budget import RenderBudget, TemplateBoundError, rendering
from .sandbox import BoundedSandbox

# What a template raises on its own account (its syntax, its sandbox, its bounds, odd values in the messages it is
# given); anything else is a bug of mistralpy's and surfaces as one.
TEMPLATE_FAILURES = (jinja2.TemplateError, TypeError, ValueError, ArithmeticError, LookupError, RecursionError)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:  # fmt: skip
    # Jinja's own tojson escapes HTML characters and non-ASCII, which templates trained with transformers never saw
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class TemplateRejection(jinja2.TemplateError):
    """Raised by a template's own `raise_exception(...)`: the conversation breaks the model's rules (a system role
    it has no place for, roles that do not alternate...), which is the caller's error, not the template's."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateRejection(message)


def compile_template(source: str | None) -> jinja2.Template:
    if not source:
        raise InvalidRequestError("this model has no chat template; send a plain prompt instead of chat messages")
    try:
        return _compile(source)
    except jinja2.TemplateSyntaxError as e:
        raise InvalidRequestError(f"the model's chat template does not parse: {e}") from None


def check_chat_template(source: Any, origin: str = "chat_template") -> str:
    """A template given in place of the model's (`origin` names where from): its text, once known to parse."""
    if not isinstance(source, str):
        raise InvalidRequestError(f"{origin} must be a chat template's text, got {type(source).__name__}")
    if "{{" not in source and "{%" not in source:  # it could never show a message: most likely a file's name
        raise InvalidRequestError(
            f"{origin} has no Jinja tags, so it cannot lay out messages: it must be a template's text, not a file's "
            "name (read the file: Path(name).read_text())"
        )
    try:
        _compile(source)
    except jinja2.TemplateSyntaxError as e:
        raise InvalidRequestError(f"{origin} does not parse: {e}") from None
    return source


def read_chat_template(path: str) -> str:
    """The template in a file (`--chat-template FILE`), checked."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRequestError(f"cannot read the chat template {path}: {e}") from None
    return check_chat_template(text, f"the chat template {path}")


@functools.lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    # the same environment as transformers, so templates written for it render identically
    env = BoundedSandbox(
        filters={"tojson": _tojson}, trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.compile_bounded(source)


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list of {'role': ..., 'content': ...} objects")
    return [_normalize_message(index, message) for index, message in enumerate(messages)]


def _normalize_message(index: int, message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise InvalidRequestError(f"messages[{index}] must be an object with 'role' and 'content'")
    if not isinstance(message.get("role"), str) or not message["role"]:
        raise InvalidRequestError(f"messages[{index}].role must be a non-empty string")
    content = message.get("content")
    if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image" for p in content):
        content = [part if part.get("type") == "image" else _text_dict(index, part) for part in content]
    elif isinstance(content, list):
        content = "\n".join(_text_part(index, part) for part in content)
    elif content is None and not message.get("tool_calls"):
        raise InvalidRequestError(f"messages[{index}] has no 'content'")
    elif content is not None and not isinstance(content, str):
        raise InvalidRequestError(f"messages[{index}].content must be a string or a list of text parts")
    return {**message, "content": content}


def _text_part(index: int, part: Any) -> str:
    if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        raise InvalidRequestError(f"messages[{index}].content: only text parts are supported, got {kind!r}")
    return part["text"]


def _text_dict(index: int, part: Any) -> dict[str, str]:
    """A text part beside images: kept a part, as vision-language templates read them (images: {"type": "image"})."""
    return {"type": "text", "text": _text_part(index, part)}


def render_chat_template(source: str | None, messages: Any, add_generation_prompt: bool, **variables: Any) -> str:
    template = compile_template(source)
    inputs = {"messages": normalize_messages(messages), "add_generation_prompt": add_generation_prompt, **variables}
    try:
        with rendering(RenderBudget.for_inputs(inputs)):
            return template.render(inputs)
    except TemplateRejection as e:
        raise InvalidRequestError(f"the model's chat template rejects these messages: {e}") from None
    except TemplateBoundError as e:
        raise InvalidRequestError(f"the chat template was stopped: {e}") from None
    except SecurityError as e:
        raise InvalidRequestError(f"the chat template tried an unsafe operation: {e}") from None
    except TEMPLATE_FAILURES as e:
        raise InvalidRequestError(f"chat template error: {type(e).__name__}: {e}") from None
