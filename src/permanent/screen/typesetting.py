"""Word wrap for text that arrives a token at a time.

Pure: it is given a `measure(text) -> width` function (a pygame font's, or a fixed-width
one in tests), so the layout is testable without a screen. Only the last line ever
changes, so the display can keep every earlier line as a finished picture.
"""

from __future__ import annotations

from typing import Callable


class Page:
    def __init__(self, width: int, measure: Callable[[str], int]):
        self.width = width
        self.measure = measure
        self.lines: list[str] = [""]

    def clear(self) -> None:
        self.lines = [""]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def append(self, text: str) -> None:
        for i, part in enumerate(text.split("\n")):
            if i:
                self.lines.append("")
            if part:
                self._append_inline(part)

    def _append_inline(self, part: str) -> None:
        line = self.lines[-1] + part
        if not self.lines[-1]:
            line = line.lstrip(" ")   # a line never starts with the space before its word
        while self.measure(line) > self.width:
            cut = self._break_at(line)
            self.lines[-1] = line[:cut].rstrip(" ")
            self.lines.append("")
            line = line[cut:].lstrip(" ")
        self.lines[-1] = line

    def _break_at(self, line: str) -> int:
        """Where to break an over-long line: the last space that fits, else mid-word."""
        space = line.rfind(" ")
        while space > 0:
            if self.measure(line[:space].rstrip(" ")) <= self.width:
                return space
            space = line.rfind(" ", 0, space)
        # One word wider than the page: break it where it stops fitting.
        fit = 1
        while fit < len(line) and self.measure(line[:fit + 1]) <= self.width:
            fit += 1
        return fit
