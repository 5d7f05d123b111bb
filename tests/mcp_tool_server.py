"""A small MCP server for the MCP client tests, on the official SDK: `python mcp_tool_server.py LOG` serves stdio,
`python mcp_tool_server.py LOG PORT` streamable HTTP at http://127.0.0.1:PORT/mcp. Every call is appended to LOG as
one JSON line, so the tests see what the server really received."""

from __future__ import annotations

import json
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("mistralpy-test-tools")


def _log(tool: str, arguments: dict) -> None:
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")


@server.tool()
def secret_word(topic: str) -> str:
    """The secret word of a topic."""
    _log("secret_word", {"topic": topic})
    return f"The secret word for {topic!r} is PINEAPPLE-{len(topic)}."


@server.tool()
def add(a: int, b: int) -> int:
    """The sum of two integers."""
    _log("add", {"a": a, "b": b})
    return a + b


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise ToolError(f"failed on purpose: {reason}")


if __name__ == "__main__":
    if len(sys.argv) > 2:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
