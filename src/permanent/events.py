"""The small, frozen messages that cross process boundaries."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenEvent:
    """One piece of text the model wrote, and how unsure it was when it wrote it."""
    pass_id: int
    index: int
    text: str
    entropy_bits: float
    is_last: bool


@dataclass(frozen=True)
class Status:
    """A child process reporting in: `kind` is e.g. "ready", "silent", "error"."""
    source: str          # "audio" or "generator"
    kind: str
    message: str = ""
    seconds: float = 0.0  # when it happened, on the sender's monotonic clock
