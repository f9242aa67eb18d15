"""How each pass begins, so that a visitor who stays cannot learn the openings.

The piece's own openings are the first sentences of the coherent corpus, about a thousand,
each file one of the seed's central thoughts. The themes take turns in an order shuffled
afresh each round, so every thought comes back within a few passes and no sequence can be
learnt; within a theme the openings are dealt from a shuffled deck, so none is seen again
until all of that theme's have been. A config's own list is dealt the same way, as one
theme. An empty list starts no sentence: the model begins each pass itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ...events import ends_sentence
from .adapter import COHERENT_CORPUS, read_corpus

FREE = ""   # the opening of a pass the model begins itself


def first_sentence(passage: str) -> str:
    """The passage up to its first sentence end (the whole passage if it has none)."""
    for end in range(1, len(passage) + 1):
        if ends_sentence(passage[:end]) and (end == len(passage) or passage[end].isspace()):
            return passage[:end].strip()
    return passage.strip()


def piece_openings(folder: Path = COHERENT_CORPUS) -> dict[str, list[str]]:
    """theme -> its openings: the first sentence of each passage, a file per theme."""
    return {file.stem: [first_sentence(p) for p in read_corpus(file)]
            for file in sorted(Path(folder).glob("*.txt"))}


@dataclass
class _Deck:
    cards: list[str]
    dealt: list[str] = field(default_factory=list)

    def deal(self, rng: random.Random) -> str:
        if not self.dealt:
            self.dealt = self.cards[:]
            rng.shuffle(self.dealt)
        return self.dealt.pop()


class Openings:
    """The opening of each next pass, and the theme it belongs to."""

    def __init__(self, configured: list[str] | None, rng: random.Random):
        self.rng = rng
        if configured is None:
            themes = piece_openings()
        else:
            given = [o.strip() for o in configured if o.strip()]
            themes = {"": given or [FREE]}
        self.decks = {theme: _Deck(cards) for theme, cards in themes.items()}
        self.turns: list[str] = []

    @property
    def every(self) -> list[str]:
        return [card for deck in self.decks.values() for card in deck.cards]

    def next(self) -> tuple[str, str]:
        """(theme, opening) for the next pass; the theme is "" where there are none."""
        if not self.turns:
            self.turns = list(self.decks)
            self.rng.shuffle(self.turns)
        theme = self.turns.pop()
        return theme, self.decks[theme].deal(self.rng)
