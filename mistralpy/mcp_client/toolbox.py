"""McpToolbox: every configured MCP server's tools, offered to the model as OpenAI function tools (named
<tool_prefix>_<tool> where a server has a prefix, else by their own names; a name two servers share is an error),
and the calls the model makes executed on their server (at most max_concurrent_calls at once, each within
tool_timeout_secs). A failed call's error becomes the tool's result: the model reads it, as agents do."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ..errors import InvalidRequestError
from .config import McpClientConfig
from .connection import McpConnection

logger = logging.getLogger(__name__)


class McpToolbox:
    def __init__(self, config: McpClientConfig) -> None:
        self.config = config
        self.connections = [McpConnection(server) for server in config.servers]
        self._tools: dict[str, tuple[McpConnection, Any]] = {}  # offered name -> (its server, mcp_types.Tool)
        self._slots: asyncio.Semaphore | None = None

    async def start(self) -> None:
        self._slots = asyncio.Semaphore(self.config.max_concurrent_calls)
        try:
            for connection in self.connections:
                await connection.start()
                self._register(connection)
        except BaseException:
            await self.stop()
            raise
        logger.info("MCP tools: %s", ", ".join(self._tools) or "none")

    async def stop(self) -> None:
        for connection in self.connections:
            await connection.stop()

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def owns(self, name: str) -> bool:
        return name in self._tools

    def function_tools(self) -> list[dict[str, Any]]:
        """The tools as a chat request's `tools` entries."""
        return [
            {"type": "function", "function": {
                "name": name, "description": tool.description or "",
                "parameters": tool.input_schema or {"type": "object", "properties": {}},
            }}
            for name, (_, tool) in self._tools.items()
        ]  # fmt: skip

    async def call(self, name: str, arguments: str) -> str:
        """Run one call the model made (`arguments`: its JSON text) and return the text the model reads next."""
        connection, tool = self._tools[name]
        try:
            args = json.loads(arguments or "{}")
            if not isinstance(args, dict):
                return "error: the arguments must be a JSON object"
        except ValueError as e:
            return f"error: the arguments are not valid JSON ({e})"
        async with self._slots:
            try:
                result = await connection.call(tool.name, args, self.config.tool_timeout_secs)
            except asyncio.TimeoutError:
                return f"error: the tool '{name}' did not answer within {self.config.tool_timeout_secs} s"
            except Exception as e:  # noqa: BLE001 - whatever the server or transport raised goes to the model
                return f"error: the tool '{name}' failed: {e}"
        text = _text_of(result)
        return f"error: {text}" if result.is_error else text

    def _register(self, connection: McpConnection) -> None:
        prefix = connection.config.tool_prefix
        for tool in connection.tools:
            name = f"{prefix}_{tool.name}" if prefix else tool.name
            if name in self._tools:
                other = self._tools[name][0].config.name
                raise InvalidRequestError(
                    f"the MCP servers '{other}' and '{connection.config.name}' both offer a tool '{name}': "
                    "give one a tool_prefix"
                )
            self._tools[name] = (connection, tool)


def _text_of(result: Any) -> str:
    """Text parts joined; other parts by their type; the structured content where there is no text."""
    parts = []
    for item in result.content or []:
        parts.append(item.text if getattr(item, "type", None) == "text" else f"[{getattr(item, 'type', 'content')}]")
    if not any(parts) and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(parts)
