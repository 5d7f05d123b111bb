"""Chat templates: rendered in a bounded Jinja sandbox (render.py), which refuses escapes (sandbox.py) and bounds the
memory and work a template may spend (bounds.py, budget.py)."""

from .render import check_chat_template, compile_template, read_chat_template, render_chat_template

__all__ = ["check_chat_template", "compile_template", "read_chat_template", "render_chat_template"]
