"""McpConnection: one MCP server, connected with the official SDK's `mcp.Client` for as long as the server runs.
The client's context is entered and left by one task (anyio's cancel scopes require it); requests call tools on the
open session from their own tasks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..errors import InvalidRequestError
from .config import McpServerConfig

logger = logging.getLogger(__name__)


class McpConnection:
    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.tools: list[Any] = []  # mcp_types.Tool: name, description, inputSchema
        self._client: Any = None
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()

    async def start(self, timeout: float = 60.0) -> None:
        """Connect and list the server's tools; a server that cannot be reached is an error naming it."""
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(ready), name=f"mcp-{self.config.name}")
        try:
            await asyncio.wait_for(asyncio.shield(ready), timeout)
        except Exception as e:  # noqa: BLE001 - the SDK raises many kinds; the user needs which server and why
            await self.stop()
            raise InvalidRequestError(f"cannot connect to the MCP server '{self.config.name}': {_reason(e)}") from None

    async def call(self, name: str, arguments: dict[str, Any], timeout: float | None) -> Any:
        """The tool's CallToolResult (its isError set where the tool failed)."""
        return await asyncio.wait_for(self._client.call_tool(name, arguments, read_timeout_seconds=timeout), timeout)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - closing: nothing left to report to
                self._task.cancel()

    async def _run(self, ready: asyncio.Future) -> None:
        from mcp import Client  # the optional `mcp` extra: imported only where MCP servers are configured

        try:
            async with Client(self._target()) as client:
                self._client = client
                self.tools = await _all_tools(client)
                ready.set_result(None)
                await self._stop.wait()
        except BaseException as e:  # noqa: BLE001 - handed to start(), or logged once the server is up
            if not ready.done():
                ready.set_exception(e)
            elif not isinstance(e, asyncio.CancelledError):
                logger.error("the MCP server '%s' failed: %s", self.config.name, _reason(e))
        finally:
            self._client = None

    def _target(self) -> Any:
        from mcp import StdioServerParameters

        c = self.config
        if c.command is not None:
            return StdioServerParameters(command=c.command, args=c.args, env=c.env, cwd=c.cwd)
        if not c.headers:
            return c.url
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        return streamable_http_client(c.url, http_client=httpx2.AsyncClient(headers=c.headers))


async def _all_tools(client: Any) -> list[Any]:
    tools, cursor = [], None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if not cursor:
            return tools


def _reason(error: BaseException) -> str:
    while getattr(error, "exceptions", None):  # an exception group: its first cause
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
