"""When each token is shown, and how a pass ends: hold, fade, gap.

The display decides when a token appears; the generator only runs ahead. `Conductor`
is pure: it is given the time and a way to take the next token, and answers with cues.
Driven by the wall clock it is the live piece; driven by a virtual clock it is a render
or a test, and the timings come out the same.
"""

from __future__ import annotations

import enum
import math
import random
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Protocol

from ..config import PacingConfig
from ..events import TokenEvent, ends_sentence

_CLAUSE_END = re.compile(r"[,;:—–][\"'”’)\]]*$")


def token_delay(token: TokenEvent, pacing: PacingConfig, rng: random.Random) -> float:
    """Seconds to wait after showing `token` before showing the next one."""
    delay = 1.0 / pacing.tokens_per_second
    delay *= 1.0 + pacing.jitter * rng.uniform(-1.0, 1.0)   # a hand, not a metronome
    tail = token.text.rstrip(" ")
    if "\n" in token.text:
        delay += pacing.line_break_pause_seconds
    elif ends_sentence(tail):
        delay += pacing.sentence_pause_seconds
    elif _CLAUSE_END.search(tail):
        delay += pacing.comma_pause_seconds
    # The model hesitated: so does the text.
    excess = max(0.0, token.entropy_bits - pacing.uncertainty_threshold_bits)
    return delay + excess * pacing.uncertainty_pause_seconds_per_bit


def ease_in_out(x: float) -> float:
    """0 -> 1 with zero slope at both ends (half a cosine)."""
    x = min(1.0, max(0.0, x))
    return 0.5 - 0.5 * math.cos(math.pi * x)


class Phase(enum.Enum):
    WRITING = "writing"   # tokens appear (or the next pass is awaited)
    HOLDING = "holding"   # the finished pass stays on screen
    FADING = "fading"     # ... and fades to black
    GAP = "gap"           # an empty screen before the next pass


@dataclass(frozen=True)
class Cue:
    """Something the display and the hum act on: "reveal", "pass_end", "fade", "clear"."""
    kind: str
    at: float
    token: Optional[TokenEvent] = None


class Stage(Protocol):
    """What the Conductor's cues act on: the live piece, or the render on its clock."""

    def reveal(self, token: TokenEvent, due: float, now: float) -> None:
        """Show the token in the frame drawn at `now`; the fans hear its entropy from
        `due`, when the pacing wanted it."""

    def pass_ended(self, due: float) -> None:
        """The pass is whole: the fans settle, the pass is kept."""

    def cleared(self) -> None:
        """The faded page is gone."""


def perform(cues: Iterable[Cue], stage: Stage, now: float) -> bool:
    """Act on each cue of the frame drawn at `now`, in order; True when the page was
    cleared (a pass boundary, where new settings may take effect). A fade needs no
    action: it is the page's opacity."""
    boundary = False
    for cue in cues:
        if cue.kind == "reveal":
            stage.reveal(cue.token, cue.at, now)
        elif cue.kind == "pass_end":
            stage.pass_ended(cue.at)
        elif cue.kind == "clear":
            stage.cleared()
            boundary = True
    return boundary


class Conductor:
    def __init__(self, pacing: PacingConfig, rng: random.Random | None = None):
        self.pacing = pacing
        self.rng = rng or random.Random()
        self.phase = Phase.WRITING
        self.pass_id: Optional[int] = None
        self._due: Optional[float] = None        # when the next token may appear
        self._phase_end = 0.0                    # when HOLDING / FADING / GAP ends
        self._fade_start = 0.0
        self._waiting = True                     # nothing was ready when it was due
        self._held: Optional[TokenEvent] = None  # taken early: belongs to the next pass
        self._opacity = 1.0

    @property
    def opacity(self) -> float:
        """How visible the page is now (1 unless fading); call after `tick`."""
        return self._opacity

    def tick(self, now: float, take: Callable[[], Optional[TokenEvent]]) -> list[Cue]:
        cues: list[Cue] = []
        while True:
            if self.phase is Phase.WRITING:
                if not self._write(now, take, cues):
                    break
            elif now >= self._phase_end:
                self._advance(cues)
            else:
                break
        if self.phase is Phase.FADING:
            fade = self.pacing.fade_seconds
            progress = (now - self._fade_start) / fade if fade > 0 else 1.0
            self._opacity = 1.0 - ease_in_out(progress)
        elif self.phase is Phase.GAP:
            self._opacity = 0.0
        else:
            self._opacity = 1.0
        return cues

    def _write(self, now, take, cues) -> bool:
        """Reveal the next token if it is due and ready; False when there is nothing to do."""
        if self._due is not None and now < self._due:
            return False
        token = self._held or take()
        self._held = None
        if token is None:
            self._waiting = True
            return False
        if self.pass_id is not None and token.pass_id != self.pass_id:
            # A new pass began without the old one's last token (a generator restart):
            # end the old pass calmly, keep the token for the next.
            self._held = token
            self._end_pass(self._due if self._due is not None else now, cues)
            return True
        # On time if it was ready when due; otherwise the moment it arrived.
        at = now if self._waiting or self._due is None else self._due
        self._waiting = False
        self.pass_id = token.pass_id
        cues.append(Cue("reveal", at, token))
        if token.is_last:
            self._end_pass(at, cues)
        else:
            self._due = at + token_delay(token, self.pacing, self.rng)
        return True

    def interrupt(self, now: float) -> list[Cue]:
        """The model stopped mid-pass (it died): fade what is there now, without the hold."""
        if self.phase is not Phase.WRITING or self.pass_id is None:
            return []
        cues: list[Cue] = []
        self._end_pass(now, cues, hold=0.0)
        return cues

    def _end_pass(self, at, cues, hold=None):
        cues.append(Cue("pass_end", at))
        hold = self.pacing.hold_seconds if hold is None else hold
        self.phase, self._phase_end = Phase.HOLDING, at + hold

    def _advance(self, cues):
        at = self._phase_end
        if self.phase is Phase.HOLDING:
            cues.append(Cue("fade", at))
            self.phase, self._fade_start = Phase.FADING, at
            self._phase_end = at + self.pacing.fade_seconds
        elif self.phase is Phase.FADING:
            cues.append(Cue("clear", at))
            self.phase, self._phase_end = Phase.GAP, at + self.pacing.gap_seconds
        elif self.phase is Phase.GAP:
            self.phase, self.pass_id = Phase.WRITING, None
            self._due, self._waiting = at, False
