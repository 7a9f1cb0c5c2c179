"""One helper for the one-line error messages the package gives."""

from typing import Optional


def first_line(error: BaseException, limit: Optional[int] = 200, *, with_type: bool = False) -> str:
    """The first line of ``error``'s message (at most ``limit`` characters, any length
    for None), or the exception's type name when the message is empty. ``with_type``
    puts the type name before a message (``ValueError: checksum mismatch``), for causes
    the reader cannot tell from the message alone."""
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__
    return f"{type(error).__name__}: {lines[0][:limit]}" if with_type else lines[0][:limit]
