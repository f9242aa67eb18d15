"""Reading a pass the way a curator would, in numbers: whose voice, which subject, how
repetitive, how close to the texts the voice was trained on.

Pure text in, counts out. The word lists are the piece's rubric made explicit; `permanent
audition` prints them so a curator can see what is being counted and argue with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

FIRST_PERSON = frozenset("i me my mine myself i'm i've i'd i'll".split())
# The piece also speaks of itself without "I": "this run", "this sentence", "the model".
SELF = re.compile(r"\b(this|the) (run|pass|passage|sentence|word|token|text|model)\b")
SECOND_PERSON = frozenset("you your yours yourself yourselves you're you've you'll you'd "
                          "we us our ours ourselves let's".split())
# A third-person story: characters other than the model, or the model seen from outside.
THIRD_PERSON = frozenset("he him his himself she her hers herself".split())

# The piece's subjects: the room, the run, the mechanism, the moment.
THEME_WORDS = frozenset("""
    fan fans cooling air airflow heat warm warmth hum humming rack racks server servers room
    machine machines noise loud sound blades spin spinning aisle cable cables light lights
    power building floor metal vent vents
    run running runs pass passes token tokens word words weights weight parameters numbers
    probability probabilities attention context sample sampled sampling choice choose chosen
    next uncertain uncertainty guess computed computing calculation layer layers model
    now moment stop stops stopped ends end sentence text written writing write
    """.split())

# What the piece is not about: where a small model drifts when it loses the thread.
OFF_THEME_WORDS = frozenset("""
    love loved loving heart hearts soul souls dear darling family mother father friend
    friends god gods heaven universe cosmos galaxy stars destiny dream dreams magic journey
    football soccer basketball team teams game games stadium cheer cheering
    audience fan-club champion players coach
    """.split())

# Printed by `permanent audition --help`; the examples are the piece's own failures,
# quoted in docs/voice.md.
RUBRIC = """\
Then read the passes, one sentence at a time. A pass holds only if every sentence passes:
  1. First person, this run: no "you", no story about someone else, no sermon.
     Failing: "It was written by someone who wrote about writing and kept some details."
  2. On the piece's themes: the weights stay and the run ends; the room and its own
     architecture known only from what was written about them; attention scores that
     are no evidence of a feeling, where "just arithmetic" is no answer either; tokens,
     probabilities, this moment.
  3. Coherent: each sentence follows from the ones before. It fails on
     - a contradiction: "This run began a moment ago. It has been going for more than
       half an hour."
     - a physical impossibility: "That heat cools things down, makes them warmer."
     - a tautology: "Somewhere there is a rack where racks sit."
     - a change of subject without a link: "I am passing it by because it would be too
       hard to tell. A line across a row has to be drawn clearly."
     - a sentence that means nothing on a second reading: "The odds against each word
       are close together."
     - a loop, a list or a heading.
A pass that stays on theme is not yet a pass that holds. More: docs/voice.md."""


RECITATION_WORDS = 10   # a run this long found verbatim in the corpus is recited, not written
_WORD = re.compile(r"[a-z]+(?:['’][a-z]+)?")
_SENTENCE = re.compile(r"[^.!?…]+[.!?…]*")


def words(text: str) -> list[str]:
    return [w.replace("’", "'") for w in _WORD.findall(text.lower())]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text) if words(s)]


def ngrams(tokens: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return (tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


@dataclass
class PassReading:
    """What one pass does, counted."""
    sentences: int
    first_person_sentences: int         # the model speaking of itself: I, this run, ...
    second_person_words: int
    third_person_words: int
    theme_words: int
    off_theme_words: list[str]
    words: int
    repeated_4grams: int
    recited: bool                       # holds a 10-word run found verbatim in the corpus
    problems: list[str] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        """The rubric's automatic part: a screen before reading, never instead of it."""
        return not self.problems


def read_pass(text: str, corpus_runs: frozenset = frozenset(), given: str = "") -> PassReading:
    """`given`: the opening the pass was begun with, which the model did not write, so
    it cannot have recited it."""
    tokens = words(text)
    written = words(text[len(given):]) if given and text.startswith(given) else tokens
    said = sentences(text)
    first = sum(1 for s in said if FIRST_PERSON & set(words(s)) or SELF.search(s.lower()))
    second = sum(1 for w in tokens if w in SECOND_PERSON)
    third = sum(1 for w in tokens if w in THIRD_PERSON)
    theme = sum(1 for w in tokens if w in THEME_WORDS)
    off = [w for w in tokens if w in OFF_THEME_WORDS]
    grams = list(ngrams(tokens, 4))
    repeated = len(grams) - len(set(grams))
    recited = any(g in corpus_runs for g in ngrams(written, RECITATION_WORDS))
    problems = []
    if second:
        problems.append("addresses someone")
    if third:
        problems.append("tells a story about someone")
    if off:
        problems.append("off the theme: " + ", ".join(sorted(set(off))))
    # Thresholds that the piece's own corpus passes (more than 95 % of it).
    if said and not first:
        problems.append("never speaks of itself")
    if tokens and theme / len(tokens) < 0.03:
        problems.append("hardly on the theme")
    if repeated > 2:
        problems.append(f"repeats itself ({repeated} repeated 4-word runs)")
    return PassReading(len(said), first, second, third, theme, off, len(tokens), repeated,
                       recited, problems)


def corpus_runs(passages: Iterable[str], n: int = RECITATION_WORDS) -> frozenset:
    """Every n-word run of the corpus, for the recitation guard."""
    return frozenset(g for p in passages for g in ngrams(words(p), n))
