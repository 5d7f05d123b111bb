"""A chat completion's chunk stream as the Responses API's named events: response.created and .in_progress, each
output item opened, its deltas, closed, then exactly one of response.completed / .incomplete / .failed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..errors import status_of
from ..responses import ChatCompletionChunk
from .convert import call_item, fail, finish, message_item, new_id, reasoning_item, text_part


class ResponseEvents:
    def __init__(self, response: dict[str, Any], on_end: Callable[[], None]) -> None:
        """`on_end` runs once the Response is final (completed, incomplete or failed), to store it."""
        self.response, self.on_end = response, on_end
        self.items: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None
        self.sequence = 0
        self.finish_reason: str | None = None
        self.usage: Any = None

    def event(self, kind: str, **data: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"

    def start(self) -> list[str]:
        return [
            self.event("response.created", response=self.response),
            self.event("response.in_progress", response=self.response),
        ]

    def of_chunk(self, chunk: ChatCompletionChunk) -> list[str]:
        self.usage = chunk.usage or self.usage
        out: list[str] = []
        for choice in chunk.choices:
            delta = choice.delta
            if delta.get("reasoning_content"):
                out += self._open("reasoning", lambda: reasoning_item(new_id("rs"), ""))
                self.open["content"][0]["text"] += delta["reasoning_content"]
                out.append(self._delta("response.reasoning_text.delta", delta["reasoning_content"], content_index=0))
            if delta.get("content"):
                out += self._open("message", lambda: message_item(new_id("msg"), "", "in_progress"))
                self.open["content"][0]["text"] += delta["content"]
                out.append(self._delta("response.output_text.delta", delta["content"], content_index=0, logprobs=[]))
            for call in delta.get("tool_calls") or []:
                if "id" in call:
                    item = call_item(new_id("fc"), call["id"], call["function"]["name"], "", "in_progress")
                    out += self._close() + self._open("function_call", lambda item=item: item)
                if call["function"].get("arguments"):
                    self.open["arguments"] += call["function"]["arguments"]
                    out.append(self._delta("response.function_call_arguments.delta", call["function"]["arguments"]))
            self.finish_reason = choice.finish_reason or self.finish_reason
        return out

    def end(self) -> list[str]:
        out = self._close()
        finish(self.response, self.items, self.finish_reason, self.usage)
        kind = "response.incomplete" if self.response["status"] == "incomplete" else "response.completed"
        self.on_end()
        return out + [self.event(kind, response=self.response)]

    def fail(self, error: BaseException) -> list[str]:
        out = self._close()
        self.response["output"] = self.items
        fail(self.response, *status_of(error))
        self.on_end()
        return out + [self.event("response.failed", response=self.response)]

    def _open(self, kind: str, make: Callable[[], dict[str, Any]]) -> list[str]:
        if self.open is not None and self.open["type"] == kind and kind != "function_call":
            return []
        out = self._close()
        item = make()
        self.open = item
        self.items.append(item)
        index = len(self.items) - 1
        shown = {**item, "content": []} if kind == "message" else item
        out.append(self.event("response.output_item.added", output_index=index, item=shown))
        if kind == "message":
            part = text_part("")
            out.append(
                self.event(
                    "response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part
                )
            )
        return out

    def _delta(self, kind: str, text: str, **fields: Any) -> str:
        return self.event(kind, item_id=self.open["id"], output_index=len(self.items) - 1, delta=text, **fields)

    def _close(self) -> list[str]:
        item, self.open = self.open, None
        if item is None:
            return []
        index = len(self.items) - 1
        at = {"item_id": item["id"], "output_index": index}
        out = []
        if item["type"] == "message":
            part = item["content"][0]
            out.append(self.event("response.output_text.done", **at, content_index=0, text=part["text"], logprobs=[]))
            out.append(self.event("response.content_part.done", **at, content_index=0, part=part))
        elif item["type"] == "function_call":
            out.append(self.event("response.function_call_arguments.done", **at, arguments=item["arguments"]))
        elif item["type"] == "reasoning":
            out.append(
                self.event("response.reasoning_text.done", **at, content_index=0, text=item["content"][0]["text"])
            )
        item["status"] = "completed"
        return out + [self.event("response.output_item.done", output_index=index, item=item)]
