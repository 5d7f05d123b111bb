"""BoundedSandbox: Jinja's immutable sandbox, as transformers renders chat templates in, with every escape refused
outright and every operation held to a RenderBudget (see budget.py).

Where the work happens, and which hook bounds it:
- `*`, `+`, `**`, `%`: `intercepted_binops` + `call_binop` check the result's size first;
- calls (methods, macros, globals): `call` charges a step and checks str methods that take a size;
- filters: each builtin is wrapped (bounds.bounded_filter); `str.format`: `wrap_str_format`'s formatter;
- `{{ ... }}` output: `finalize` checks and charges what it writes;
- loops, `~` and slices: no sandbox hook sees them, so `compile_bounded` rewrites the parsed template: each `for`
  reads its iterable through a filter that charges every iteration (a step plus the loop body's text), each `~`
  becomes a filter that checks what it joins, and each slice passes through one that charges what it copied. The
  rewritten template renders exactly as the original.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

import jinja2
from jinja2 import nodes, pass_eval_context
from jinja2.nodes import EvalContext
from jinja2.runtime import Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

from .bounds import (
    BoundedEscapeFormatter,
    BoundedFormatter,
    bounded_filter,
    bounded_lipsum,
    check_binop,
    check_str_method,
)
from .budget import MACRO_COST, STEP_COST, RenderBudget, current, made, rendering, text_size

_LOOP_FILTER, _CONCAT_FILTER, _SLICE_FILTER = "mistralpy_loop", "mistralpy_concat", "mistralpy_slice"


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def __init__(self, filters: dict[str, Callable[..., Any]] | None = None, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.filters.update(filters or {})
        self.filters = {name: bounded_filter(name, func) for name, func in self.filters.items()}
        self.filters.update({_LOOP_FILTER: _loop_iterations, _CONCAT_FILTER: _concat, _SLICE_FILTER: _sliced})
        self.globals["lipsum"] = bounded_lipsum(self.globals["lipsum"])

    def compile_bounded(self, source: str) -> jinja2.Template:
        """`from_string` with loops, `~` and slices rewritten to charge the budget. Jinja computes constant parts
        (such as `'x'|center(1000)`) as it compiles: they have a budget of their own, past which it leaves them to
        the render."""
        with rendering(RenderBudget.for_compiling(source)):
            tree = _Instrument().visit(self.parse(source))
            tree.set_environment(self)
            return self.from_string(tree)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return made(super().call_binop(context, operator, left, right), f"a '{operator}' result")

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # Jinja's names: kwargs never clash
        current().charge(MACRO_COST if isinstance(__obj, Macro) else STEP_COST)
        args = check_str_method(__obj, args, kwargs)
        return made(super().call(__context, __obj, *args, **kwargs), "a call's result")

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        # Jinja returns an Undefined that fails only once used ('{{ x.__class__ }}' prints nothing); refuse at once
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Jinja's own str.format / format_map sandboxing, with the bounded formatter."""
        method = value.__name__ if isinstance(value, (types.MethodType, types.BuiltinMethodType)) else None
        text = getattr(value, "__self__", None)
        if method not in ("format", "format_map") or not isinstance(text, str):
            return None
        formatter = BoundedEscapeFormatter(self, escape=text.escape) if isinstance(text, Markup) else None
        formatter = formatter or BoundedFormatter(self)

        def format_text(*args: Any, **kwargs: Any) -> str:
            if method == "format_map":
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                args, kwargs = (), args[0]
            return type(text)(formatter.vformat(text, args, kwargs))

        return functools.update_wrapper(format_text, value)


def _finalize(value: Any) -> Any:
    """Every `{{ ... }}` passes here before it is written: check and charge its text."""
    budget = current()
    size = text_size(value, budget.value_limit)
    budget.check(size, "a value written by the template")
    budget.charge(size)
    return value


def _loop_iterations(iterable: Iterable[Any], body_text: int) -> Iterator[Any]:
    cost = STEP_COST + body_text
    for item in iterable:
        current().charge(cost)
        yield item


def _sliced(value: Any) -> Any:
    return made(value, "a slice")


@pass_eval_context
def _concat(eval_ctx: EvalContext, parts: list[Any]) -> str:
    budget = current()
    budget.check(sum(text_size(part, budget.value_limit) for part in parts), "a '~' result")
    return made((markup_join if eval_ctx.autoescape else str_join)(parts), "a '~' result")


class _Instrument(NodeTransformer):
    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        text = nodes.Const(_body_text(node.body))
        node.iter = nodes.Filter(node.iter, _LOOP_FILTER, [text], [], None, None).set_lineno(node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Expr:
        self.generic_visit(node)
        try:
            node.as_const()  # Jinja folds it when it compiles (as plain text, even where it autoescapes): as it was
            return node
        except nodes.Impossible:
            return nodes.Filter(nodes.List(node.nodes), _CONCAT_FILTER, [], [], None, None).set_lineno(node.lineno)

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Expr:
        self.generic_visit(node)
        if not isinstance(node.arg, nodes.Slice):  # Jinja slices without the sandbox's getitem
            return node
        return nodes.Filter(node, _SLICE_FILTER, [], [], None, None).set_lineno(node.lineno)


def _body_text(body: list[nodes.Node]) -> int:
    """Characters of template text one iteration of a loop writes, not counting inner loops' bodies and macros
    (they are charged as they iterate or are called)."""
    total, stack = 0, list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.TemplateData):
            total += len(node.data)
        elif isinstance(node, nodes.For):
            stack.extend(node.else_)
        elif not isinstance(node, (nodes.Macro, nodes.CallBlock)):
            stack.extend(node.iter_child_nodes())
    return total
