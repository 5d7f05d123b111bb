"""A chat completion's chunk stream as Anthropic's server-sent events: message_start, one content block at a time
(thinking, text, each tool_use) with its deltas, message_delta with the stop reason and usage, message_stop; an error
after the header as Anthropic's `error` event."""

from __future__ import annotations

import json
from typing import Any

from ..errors import status_of
from ..responses import ChatCompletionChunk
from .convert import message_id, stop_of
from .errors import anthropic_body


def event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data}, ensure_ascii=False)}\n\n"


class MessageEvents:
    """The events of one streamed message; blocks are numbered in the order they open."""

    def __init__(self, model: str, input_tokens: int) -> None:
        self.model, self.input_tokens, self.output_tokens = model, input_tokens, 0
        self.open: str | None = None  # the kind of the block being streamed
        self.index = -1
        self.stop: tuple[str | None, str | None] = (None, None)

    def start(self) -> list[str]:
        message = {
            "id": message_id(),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return [event("message_start", {"message": message}), event("ping", {})]

    def of_chunk(self, chunk: ChatCompletionChunk) -> list[str]:
        if chunk.usage is not None:
            self.output_tokens = chunk.usage.completion_tokens
        out: list[str] = []
        for choice in chunk.choices:
            delta = choice.delta
            if delta.get("reasoning_content"):
                out += self._block("thinking", {"thinking": ""})
                out.append(self._delta({"type": "thinking_delta", "thinking": delta["reasoning_content"]}))
            if delta.get("content"):
                out += self._block("text", {"text": ""})
                out.append(self._delta({"type": "text_delta", "text": delta["content"]}))
            for call in delta.get("tool_calls") or []:
                if "id" in call:  # a new call: its own block
                    out += self._close() + self._block(
                        "tool_use", {"id": call["id"], "name": call["function"]["name"], "input": {}}
                    )
                if call["function"].get("arguments"):
                    out.append(self._delta({"type": "input_json_delta", "partial_json": call["function"]["arguments"]}))
            if choice.finish_reason is not None:
                self.stop = stop_of(choice.finish_reason, choice.stop_reason)
        return out

    def end(self) -> list[str]:
        stop_reason, stop_sequence = self.stop
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        usage = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        return self._close() + [event("message_delta", {"delta": delta, "usage": usage}), event("message_stop", {})]

    def fail(self, error: BaseException) -> list[str]:
        return [event("error", {"error": anthropic_body(*status_of(error))["error"]})]

    def _block(self, kind: str, fields: dict[str, Any]) -> list[str]:
        if self.open == kind and kind != "tool_use":
            return []
        out = self._close()
        self.index += 1
        self.open = kind
        return out + [event("content_block_start", {"index": self.index, "content_block": {"type": kind, **fields}})]

    def _delta(self, delta: dict[str, Any]) -> str:
        return event("content_block_delta", {"index": self.index, "delta": delta})

    def _close(self) -> list[str]:
        if self.open is None:
            return []
        self.open = None
        return [event("content_block_stop", {"index": self.index})]
