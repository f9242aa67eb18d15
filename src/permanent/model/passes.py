"""The rules of a pass, the same whichever model writes it, and what a writer offers.

A pass is a run of (text, entropy) pieces. It ends at the model's end token, at the first
sentence end after `text.min_tokens` tokens, or at `text.max_tokens`; its last event says
so (`is_last`), which is why one event is always held back until the next arrives.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterable, Iterator, Protocol

from ..config import TextConfig
from ..events import TokenEvent, ends_sentence


class TextGenerator(Protocol):
    """What the model's process, the render and the bench use of a writer."""

    label: str              # which model, for the log
    runtime: str            # how it runs, for the log
    voice: str              # which voice, for the log
    tokens_sampled: int     # every token the model produced, shown or not
    tokens_shown: int       # those of them shown (fewer where drafts were not chosen)
    progress: Callable[[], None]   # set by its process, called while it writes unseen drafts

    def update_text(self, text: TextConfig) -> None:
        """Prompt, sampling and pass length for the passes from now on."""

    def write_pass(self, pass_id: int) -> Iterator[TokenEvent]:
        """Yield the tokens of one pass; the last one has is_last=True."""

    def keep_warm(self) -> None:
        """Keep what it holds for a quicker next start, where it can (else nothing)."""


def numbered(pass_id: int, pieces: Iterable[tuple[str, float]]) -> Iterator[TokenEvent]:
    """The pieces as the pass's TokenEvents, the last one marked as last."""
    held = None
    for index, (text, bits) in enumerate(pieces):
        if held is not None:
            yield held
        held = TokenEvent(pass_id, index, text, bits, False)
    if held is not None:
        yield replace(held, is_last=True)


def long_enough(tokens: int, written: str, text: TextConfig) -> bool:
    """A pass ends at the first sentence end once it has its minimum of tokens."""
    return tokens >= text.min_tokens and ends_sentence(written)
