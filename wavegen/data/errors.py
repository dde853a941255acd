"""Error text for one-line messages (failed.jsonl details, log lines, CLI errors)."""

from __future__ import annotations


def one_line(error: BaseException | str) -> str:
    """An exception's text (or any text) on one line: whitespace runs, newlines included,
    become one space; an exception without text gives its type's name."""
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        return type(error).__name__
    return text
