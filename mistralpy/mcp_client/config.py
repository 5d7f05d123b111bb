"""`--mcp-config servers.json`: the MCP servers to connect to, in mistral.rs's shape (`servers` with a `source` of
type Process or Http, `tool_prefix`, `bearer_token`, `enabled`; `tool_timeout_secs`, `max_concurrent_calls`,
`auto_register_tools`) or Claude Desktop's (`mcpServers`: name -> `command`/`args`/`env` or `url`/`headers`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError


@dataclass
class McpServerConfig:
    name: str
    command: str | None = None  # a stdio server's executable
    args: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str | None = None  # a streamable-HTTP server's endpoint
    headers: dict[str, str] = field(default_factory=dict)
    tool_prefix: str | None = None  # tools offered as <prefix>_<tool> (mistral.rs's); None: the tools' own names


@dataclass
class McpClientConfig:
    servers: list[McpServerConfig]
    tool_timeout_secs: float | None = None  # None: no timeout
    max_concurrent_calls: int = 1
    max_rounds: int = 8  # model turns of one request that may call tools; one more answers without tools


def read_mcp_config(path: str) -> McpClientConfig:
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as e:
        raise InvalidRequestError(f"cannot read the MCP config {path}: {e.strerror}") from None
    except ValueError as e:
        raise InvalidRequestError(f"the MCP config {path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or ("servers" in doc) == ("mcpServers" in doc):
        raise InvalidRequestError(f"{path}: give either 'servers' (mistral.rs's form) or 'mcpServers' (Claude's)")
    try:
        config = _mistralrs(doc) if "servers" in doc else _claude(doc)
    except (TypeError, ValueError, KeyError) as e:
        raise InvalidRequestError(f"{path}: {e}") from None
    if not config.servers:
        raise InvalidRequestError(f"{path}: no enabled MCP server")
    return config


def _mistralrs(doc: dict[str, Any]) -> McpClientConfig:
    _only(doc, {"servers", "auto_register_tools", "tool_timeout_secs", "max_concurrent_calls", "max_rounds"}, "")
    if doc.get("auto_register_tools", True) is not True:
        raise ValueError("auto_register_tools: false is not supported (every tool of the servers is offered)")
    servers = []
    for i, entry in enumerate(_list(doc["servers"], "servers")):
        _only(entry, {"id", "name", "source", "enabled", "tool_prefix", "bearer_token", "resources"}, f"servers[{i}]")
        if not entry.get("enabled", True):
            continue
        source = _dict(entry["source"], f"servers[{i}].source")
        kind = source.get("type")
        headers = dict(_dict(source.get("headers") or {}, "headers"))
        if entry.get("bearer_token"):
            headers["Authorization"] = f"Bearer {entry['bearer_token']}"
        name = _text(entry["name"], f"servers[{i}].name")
        if kind == "Process":
            _only(source, {"type", "command", "args", "work_dir", "env"}, f"servers[{i}].source")
            server = McpServerConfig(name, _text(source["command"], "command"), _strings(source.get("args", [])),
                                     source.get("env"), source.get("work_dir"))  # fmt: skip
        elif kind == "Http":
            _only(source, {"type", "url", "timeout_secs", "headers"}, f"servers[{i}].source")
            server = McpServerConfig(name, url=_text(source["url"], "url"), headers=headers)
        else:
            raise ValueError(f"servers[{i}].source.type must be Process or Http, got {kind!r}")
        server.tool_prefix = entry.get("tool_prefix")
        servers.append(server)
    return McpClientConfig(servers, **_limits(doc))


def _claude(doc: dict[str, Any]) -> McpClientConfig:
    _only(doc, {"mcpServers", "tool_timeout_secs", "max_concurrent_calls", "max_rounds"}, "")
    servers = []
    for name, entry in _dict(doc["mcpServers"], "mcpServers").items():
        entry = _dict(entry, f"mcpServers.{name}")
        if entry.get("disabled"):
            continue
        if "command" in entry:
            _only(entry, {"command", "args", "env", "cwd", "type", "disabled"}, f"mcpServers.{name}")
            servers.append(McpServerConfig(name, _text(entry["command"], "command"), _strings(entry.get("args", [])),
                                           entry.get("env"), entry.get("cwd")))  # fmt: skip
        elif "url" in entry:
            _only(entry, {"url", "headers", "type", "disabled"}, f"mcpServers.{name}")
            if entry.get("type", "http") not in ("http", "streamable-http", "streamableHttp"):
                raise ValueError(f"mcpServers.{name}: type {entry['type']!r}: only streamable HTTP is supported")
            servers.append(McpServerConfig(name, url=_text(entry["url"], "url"), headers=entry.get("headers") or {}))
        else:
            raise ValueError(f"mcpServers.{name} needs 'command' (stdio) or 'url' (streamable HTTP)")
    return McpClientConfig(servers, **_limits(doc))


def _limits(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    timeout = doc.get("tool_timeout_secs")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"tool_timeout_secs must be a number > 0, got {timeout!r}")
        out["tool_timeout_secs"] = float(timeout)
    for key in ("max_concurrent_calls", "max_rounds"):
        if doc.get(key) is not None:
            value = doc[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
            out[key] = value
    return out


def _only(entry: dict[str, Any], keys: set[str], where: str) -> None:
    unknown = set(_dict(entry, where or "the file")) - keys
    if unknown:
        raise ValueError(f"{where or 'the file'}: unknown keys {sorted(unknown)}")


def _dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty string")
    return value


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("args must be a list of strings")
    return value
