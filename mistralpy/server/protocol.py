"""Pydantic models of the OpenAI request schema (plus vLLM's extensions), each mapped to SamplingParams.

Every model forbids unknown fields and is strict about types: a field we do not implement is a 400 naming it, never
silently ignored, and "0.5" is not a number. Built in Python (the Runner's way in), the same mistakes raise
InvalidRequestError with the same message.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..errors import InvalidRequestError
from ..sampling_params import SamplingParams
from ..tools import ToolsSpec, tools_spec
from ..tools.spec import ToolChoice
from .image_parts import ImagePart, template_content
from .protocol_base import OpenAIModel
from .structured_request import StructuredFields
from .tool_fields import ToolCallIn

# Keys of the model's generation_config.json that fill in request fields left unset (as vLLM does).
_DEFAULTED = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


class TextPart(OpenAIModel):
    type: Literal["text"]
    text: str


class ChatMessage(OpenAIModel):
    """Roles: system, developer (rendered as system), user, assistant (text and/or tool_calls), tool (a call's
    result, naming its tool_call_id)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart | ImagePart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None  # an earlier answer's thinking (Qwen3's template shows it)

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            for part in value:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                if kind not in ("text", "image_url"):
                    raise ValueError(f"only text and image_url content parts are supported, got {kind!r}")
        elif value is not None and not isinstance(value, str):
            raise ValueError("must be a string or a list of text parts")
        return value

    @model_validator(mode="after")
    def _fields_of_role(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages have tool_calls")
        if (self.tool_call_id is not None) != (self.role == "tool"):
            raise ValueError("tool messages need a tool_call_id, and only they have one")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (it may be null only in an assistant message with tool_calls)")
        if self.role != "user" and any(isinstance(p, ImagePart) for p in self.content or ()):
            raise ValueError("image_url parts belong in user messages")
        return self

    def to_template(self) -> dict[str, Any]:
        content = self.content if isinstance(self.content, str) or self.content is None else (
            template_content(self.content))  # fmt: skip
        message = {"role": "system" if self.role == "developer" else self.role, "content": content}
        if self.tool_calls:
            message["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.reasoning_content is not None:
            message["reasoning_content"] = self.reasoning_content
        return message | ({"name": self.name} if self.name is not None else {})


class StreamOptions(OpenAIModel):
    include_usage: bool = False


class SamplingRequest(StructuredFields):
    """Fields shared by chat and text completions; those that constrain the output are StructuredFields'."""

    model: str | None = None  # None: the served model
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = Field(1, ge=1)  # its upper bound is a server limit (limits.py)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted and ignored, as vLLM does (LangChain and others send it); see the README
    # extensions (vLLM's names)
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    # prefix-cache blocks are shared only among requests of the same salt (e.g. one per tenant): Engine.add_request
    cache_salt: str | None = Field(None, min_length=1)
    # mistral.rs's: the LoRA adapters to run with, all at once (lora/selection.py)
    adapters: list[str] | None = Field(None, min_length=1)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_strings(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise ValueError("must be a string or a list of strings")
        return value

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _token_id_keys(cls, value: Any) -> Any:
        # JSON keys are strings; a Python caller may write token ids as ints ({1234: -100}), as mistral.rs takes them.
        if isinstance(value, dict):
            return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def _params(self, defaults: dict[str, Any], max_tokens: int | None, **extra: Any) -> SamplingParams:
        chosen = {key: getattr(self, key) for key in _DEFAULTED}
        for key, value in chosen.items():
            if value is None and key in defaults:
                chosen[key] = defaults[key]
        kwargs = {key: value for key, value in chosen.items() if value is not None}
        return SamplingParams(
            n=self.n,
            max_tokens=max_tokens,
            stop=self.stop,
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            logit_bias=self.logit_bias,
            min_tokens=self.min_tokens,
            ignore_eos=self.ignore_eos,
            stop_token_ids=self.stop_token_ids,
            skip_special_tokens=self.skip_special_tokens,
            include_stop_str_in_output=self.include_stop_str_in_output,
            structured_outputs=self.structured_spec(),
            **kwargs,
            **extra,
        )


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    # tool calling: the definitions and choice checked by mistralpy.tools.spec (shared with LLM.chat)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    tool_schemas: list[str] | None = None  # mistral.rs's Runner field: each tool as its JSON text
    # the chat template's extra variables (vLLM's field), e.g. {"enable_thinking": false}; mistral.rs's enable_thinking
    chat_template_kwargs: dict[str, Any] | None = None
    chat_template: str | None = None  # a template for this request (servers started with --trust-request-chat-template)
    enable_thinking: bool | None = None

    def template_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.chat_template_kwargs or {})
        if self.enable_thinking is not None:
            if "enable_thinking" in kwargs:
                raise InvalidRequestError("set enable_thinking or chat_template_kwargs.enable_thinking, not both")
            kwargs["enable_thinking"] = self.enable_thinking
        return kwargs

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _tool_choice_enum(cls, value: Any) -> Any:
        return value.value if isinstance(value, ToolChoice) else value  # mistral.rs's ToolChoice.Auto / NoTools

    def tools_spec(self) -> ToolsSpec | None:
        tools = self.tools
        if self.tool_schemas is not None:
            if tools is not None:
                raise InvalidRequestError("give tools or tool_schemas, not both")
            tools = [_tool_from_json(i, text) for i, text in enumerate(self.tool_schemas)]
        return tools_spec(tools, self.tool_choice, self.parallel_tool_calls)

    def to_sampling_params(self, defaults: dict[str, Any] | None = None) -> SamplingParams:
        """max_tokens unset means "up to the context length", as OpenAI does for chat."""
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidRequestError("top_logprobs requires logprobs to be true")
        max_tokens = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        return self._params(defaults or {}, max_tokens, logprobs=logprobs)


def _tool_from_json(index: int, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise InvalidRequestError(f"Invalid tool_schemas[{index}]: not JSON ({e})") from None


Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(SamplingRequest):
    prompt: Prompt
    max_tokens: int | None = 16  # OpenAI's default for completions
    logprobs: int | None = None
    echo: bool = False

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, value: Any) -> Any:
        def ids(x: Any) -> bool:
            return isinstance(x, list) and bool(x) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)

        if isinstance(value, str) or ids(value):
            return value
        if isinstance(value, list) and value and (all(isinstance(p, str) for p in value) or all(map(ids, value))):
            return value
        raise ValueError("must be a string, a list of strings, a list of token ids or a list of token-id lists")

    def prompts(self) -> list[str | list[int]]:
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], int):
            return [self.prompt]
        return list(self.prompt)

    def to_sampling_params(self, defaults: dict[str, Any] | None = None) -> SamplingParams:
        # echo + logprobs also scores the prompt. At least 1 prompt logprob is requested because the engine drops
        # prompt_logprobs=0; the extra alternative is filtered out when the response is built.
        prompt_logprobs = max(self.logprobs, 1) if self.echo and self.logprobs is not None else None
        return self._params(defaults or {}, self.max_tokens, logprobs=self.logprobs, prompt_logprobs=prompt_logprobs)


class TokenizeRequest(OpenAIModel):
    """vLLM's /tokenize: either a prompt or chat messages (rendered with the chat template); or llama.cpp's: a
    `content` string, `add_special` (default false), `with_pieces` (answered in llama.cpp's shape: llama_cpp_shape)."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)
    add_generation_prompt: bool = True
    add_special_tokens: bool | None = None  # default: True for a prompt, False for messages (the template has BOS)
    return_token_strs: bool = False
    content: str | None = None
    add_special: bool | None = None
    with_pieces: bool = False
    parse_special: bool = True  # special tokens' texts are always read as those tokens here

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if sum(x is not None for x in (self.prompt, self.messages, self.content)) != 1:
            raise ValueError("give exactly one of prompt, messages or content (llama.cpp's name)")
        if not self.parse_special:
            raise ValueError("parse_special=false is not supported: special tokens' texts are read as those tokens")
        if self.content is None and (self.add_special is not None or self.with_pieces):
            raise ValueError("add_special and with_pieces go with content (llama.cpp's request shape)")
        if self.content is not None:
            if self.add_special_tokens is not None or self.return_token_strs:
                raise ValueError("with content (llama.cpp's shape) use add_special and with_pieces")
            self.prompt, self.add_special_tokens = self.content, bool(self.add_special)
        return self

    @property
    def llama_cpp_shape(self) -> bool:
        return self.content is not None


class DetokenizeRequest(OpenAIModel):
    model: str | None = None
    tokens: list[int]
