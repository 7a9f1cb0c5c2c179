"""One helper for the one-line error messages the package gives."""

from typing import Optional


def first_line(error: BaseException, limit: Optional[int] = 200) -> str:
    """The first line of ``error``'s message (at most ``limit`` characters, any length
    for None), or the exception's type name when the message is empty."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__
