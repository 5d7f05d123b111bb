"""The generic format, for chat templates that know nothing of tools (the embedded SmolLM2's, Gemma's, Phi-3's...):
the tool list and the calling convention go into the system prompt, calls come back as Hermes-style blocks

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

and earlier calls and their results are written into the conversation in that same form (the assistant's calls as
its text, the results as a user turn of `<tool_response>` blocks), so any template can lay them out."""

from __future__ import annotations

import json
from typing import Any

from .hermes import CLOSE, OPEN, HermesFormat
from .spec import ToolsSpec

INSTRUCTIONS = (
    "You can call the following tools (functions). Each is described by a JSON schema:\n<tools>\n{tools}\n</tools>\n"
    "To call tools, answer with one block per call and nothing else:\n"
    '<tool_call>\n{{"name": <function name>, "arguments": <the arguments as a JSON object>}}\n</tool_call>\n'
    "Each result comes back in a <tool_response></tool_response> block. When no tool is needed, answer normally."
)


class GenericFormat(HermesFormat):
    name = "generic"
    calls_in_history = False

    def system_prompt(self, spec: ToolsSpec) -> str:
        tools = "\n".join(json.dumps(t.to_openai(), ensure_ascii=False) for t in spec.tools)
        return INSTRUCTIONS.format(tools=tools)

    def history(self, messages: list[dict[str, Any]], spec: ToolsSpec) -> list[dict[str, Any]]:
        """The conversation with the tool list in its system message, calls as assistant text and tool results as
        user turns."""
        out: list[dict[str, Any]] = []
        for message in messages:
            role = message.get("role")
            if role == "tool":
                block = f"<tool_response>\n{message.get('content') or ''}\n</tool_response>"
                if out and out[-1].get("_tool_results"):
                    out[-1]["content"] += "\n" + block
                else:
                    out.append({"role": "user", "content": block, "_tool_results": True})
            elif role == "assistant" and message.get("tool_calls"):
                blocks = [_call_block(c) for c in message["tool_calls"]]
                text = "\n".join(([message["content"]] if message.get("content") else []) + blocks)
                out.append({"role": "assistant", "content": text})
            else:
                out.append(dict(message))
        for message in out:
            message.pop("_tool_results", None)
        if not spec.tools:  # earlier calls and results, but no tools offered now
            return out
        system = self.system_prompt(spec)
        if out and out[0].get("role") == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{system}"}
        else:
            out.insert(0, {"role": "system", "content": system})
        return out


def _call_block(call: dict[str, Any]) -> str:
    function = call.get("function", {})
    body = {"name": function.get("name"), "arguments": function.get("arguments")}
    return f"{OPEN}\n{json.dumps(body, ensure_ascii=False)}\n{CLOSE}"
