"""Structured output: a request's output constrained to a JSON schema, a regex, a choice or a Lark grammar, through
llguidance (token masks applied in the sampler)."""

from .params import StructuredOutputsParams

__all__ = ["StructuredOutputsParams"]
