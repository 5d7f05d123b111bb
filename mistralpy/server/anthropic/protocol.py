"""Pydantic models of Anthropic's Messages request: text, tool_use and tool_result blocks, tools and tool_choice.
Unknown fields and block types are 400s naming them, as for the OpenAI models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from ..protocol_base import OpenAIModel


class TextBlock(OpenAIModel):
    type: Literal["text"]
    text: str
    cache_control: dict[str, Any] | None = None  # a prompt-caching hint: our prefix cache needs none


class ToolUseBlock(OpenAIModel):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class ToolResultBlock(OpenAIModel):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[TextBlock] = ""
    is_error: bool = False
    cache_control: dict[str, Any] | None = None

    def text(self) -> str:
        text = self.content if isinstance(self.content, str) else "".join(b.text for b in self.content)
        return f"Error: {text}" if self.is_error else text


class ThinkingBlock(OpenAIModel):
    type: Literal["thinking"]
    thinking: str
    signature: str = ""


Block = Annotated[TextBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock, Field(discriminator="type")]


class Message(OpenAIModel):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class Tool(OpenAIModel):
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None  # Anthropic's server tools (web search...) are other types: 400s
    cache_control: dict[str, Any] | None = None


class ToolChoice(OpenAIModel):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(OpenAIModel):
    user_id: str | None = None  # Anthropic's abuse-tracking id, like OpenAI's `user`: it changes nothing generated


class JSONOutputFormat(OpenAIModel):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(OpenAIModel):
    format: JSONOutputFormat | None = None
    effort: None = None  # how hard Claude thinks: nothing here to set


class MessagesRequest(OpenAIModel):
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = None
    top_k: int | None = None
    stream: bool = False
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None  # `format`: structured output (a JSON schema)
    cache_control: dict[str, Any] | None = None  # a prompt-caching hint: every prompt's prefix is cached already


class CountTokensRequest(OpenAIModel):
    model: str
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
