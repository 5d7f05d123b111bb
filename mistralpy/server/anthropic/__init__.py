"""Anthropic's Messages API (POST /v1/messages, /v1/messages/count_tokens) over the chat completion path: a request
is translated to a ChatCompletionRequest, its response or chunk stream translated back into Anthropic's shapes."""
