"""The small, frozen messages that cross process boundaries, and the one rule about
their text that both sides of a boundary need: where a sentence ends."""

from __future__ import annotations

import re
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


# A sentence has ended when the text ends in . ! ? or … , perhaps inside quotes or brackets.
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*\s*$")


def ends_sentence(text: str) -> bool:
    """Whether `text` ends a sentence: where a pass may stop and where reading pauses."""
    return _SENTENCE_END.search(text) is not None
