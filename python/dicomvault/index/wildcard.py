"""C.2.2.2 wildcard patterns (`*` any run of characters, `?` any one character), matched without
backtracking.

A regular expression of `.*` runs backtracks: QIDO `SOPClassUID=1.2.,,,,***...` took seconds per
stored value (found by fuzz/python/targets/qido_params.py), and `*a*a*a*...b` grows exponentially
with the number of stars. Here the pattern is cut at its stars and each piece is placed at its
leftmost fit after the previous one: exact for these two wildcards (a later fit can only leave
less room to the pieces that follow), and at most len(pattern) x len(value) character tests.
"""

from __future__ import annotations


def _fits(piece: str, text: str, at: int) -> bool:
    """Does `piece` (`?` matching any character) match `text` at offset `at`?"""
    if at < 0 or at + len(piece) > len(text):
        return False
    if "?" not in piece:
        return text.startswith(piece, at)
    return all(p == "?" or p == c for p, c in zip(piece, text[at: at + len(piece)], strict=True))


def _find(piece: str, text: str, start: int, end: int) -> int:
    """Leftmost offset >= start where `piece` fits and ends by `end`, or -1."""
    if "?" not in piece:
        return text.find(piece, start, end)
    for at in range(start, end - len(piece) + 1):
        if _fits(piece, text, at):
            return at
    return -1


class Wildcard:
    """One pattern; `fullmatch(value)` says whether the whole value matches it."""

    __slots__ = ("pattern", "_pieces")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._pieces = pattern.split("*")

    def fullmatch(self, text: str) -> bool:
        pieces = self._pieces
        if len(pieces) == 1:
            return len(text) == len(pieces[0]) and _fits(pieces[0], text, 0)
        first, last = pieces[0], pieces[-1]
        end = len(text) - len(last)  # the last piece is anchored at the end
        if end < len(first) or not _fits(first, text, 0) or not _fits(last, text, end):
            return False
        pos = len(first)
        for piece in pieces[1:-1]:
            if piece:
                at = _find(piece, text, pos, end)
                if at < 0:
                    return False
                pos = at + len(piece)
        return True

    def __repr__(self) -> str:
        return f"Wildcard({self.pattern!r})"
