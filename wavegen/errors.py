"""The project's one error base class for problems with the user's input or settings, and
one-line error text.

Entry points print a `UserError` as one line and exit non-zero; every other exception is a
bug (or a failure wavegen does not understand) and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input, data or settings; its message is one line naming
    the input (flag, file, setting) and the problem. A ValueError, so code that checks
    values keeps catching it."""


def one_line(error: BaseException | str) -> str:
    """An exception's text (or any text) on one line: whitespace runs, newlines included,
    become one space; an exception without text gives its type's name."""
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        return type(error).__name__
    return text
