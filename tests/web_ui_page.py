"""Driving the chat page in the browser tests: opening it past the key prompt, sending a message, waiting for an
answer, reading the stored conversations, the API's own answer to compare with, and a chat route answered by the
browser itself."""

from __future__ import annotations

import json

import httpx

from .server_process import KEY

MODEL = "smollm2"  # the served model's name in the UI tests


def open_chat(context, server, key: str = KEY):
    """The page, past its API-key prompt."""
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(f"{server.url}/ui/")
    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#api-key", key)
    page.click("#save-key")
    expect(page.locator("#model")).to_have_value(MODEL)
    return page


def send(page, text: str, **settings: str) -> None:
    for field, value in settings.items():
        page.fill(f"#{field}", value)
    page.fill("#message", text)
    page.press("#message", "Enter")


def wait_answer(page) -> str:
    """The last answer's figures line, once it has ended."""
    from playwright.sync_api import expect

    stats = page.locator(".msg.assistant .stats").last
    expect(stats).not_to_have_text("", timeout=60_000)
    return stats.inner_text()


def stored(page) -> list[dict]:
    return page.evaluate("JSON.parse(localStorage.getItem('mistralpy.ui.conversations'))")


def api_answer(server, messages: list[dict], max_tokens: int) -> dict:
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60).json()


def fake_answer(page, content: str) -> None:
    """The chat route answered by the browser itself with `content` as one SSE chunk: the page's rendering of text
    no model here would write."""
    chunk = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": "stop"}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}
    body = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n"
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"content-type": "text/event-stream"}, body=body))  # fmt: skip
