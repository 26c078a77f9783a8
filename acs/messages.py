"""Errors quoted inside other messages, which must stay one line (a console line, a summary field)."""
from __future__ import annotations


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line, for an error quoted inside another's message."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
