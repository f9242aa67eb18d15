"""What the status server knows of the piece: written by the main loop, read by the
server's threads.

The main loop writes plain values (a frame's time is one assignment) and appends the
page's live events to a bounded ring; the server's threads read them under a lock and
wait on it for the next event. Ages are taken when a request asks, on the server's own
thread, so a main loop that stands still shows as an age that grows.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

MAX_TEXT_CHARS = 8000   # the page's text: a pass is a few hundred tokens
EVENTS_KEPT = 256       # a client that falls further behind starts again from the text
FAN_POINTS = 120        # seconds of the lead fan's line on the page


@dataclass
class Vitals:
    """What /health and the page's counters read; replaced whole, never edited in place."""
    model: str = "loading"          # writing | waiting | down | loading
    waiting_for: str = ""           # closed hours, hold
    processes: dict = field(default_factory=lambda: {"hum": False, "model": False})
    restarts: dict = field(default_factory=lambda: {"hum": 0, "model": 0})
    hours: str = "open"             # open | closed
    held: bool = False
    passes: int = 0
    tokens: int = 0
    fan_hz: float = 0.0
    hum_level: float = 0.0
    hum_sound_at: Optional[float] = None   # monotonic; None: no sound (silent, or not yet)
    last_error: str = ""


class PieceState:
    def __init__(self, launched: float, token_within_seconds: float):
        self.launched = launched
        self.token_within_seconds = token_within_seconds   # the longest healthy pause
        self.last_frame_at: Optional[float] = None
        self.last_token_at: Optional[float] = None
        self.vitals = Vitals()
        self.thumbnail: Optional[tuple[bytes, tuple[int, int], float]] = None  # RGB, size, when
        self._lock = threading.Condition()
        self._events: deque = deque(maxlen=EVENTS_KEPT)   # (number, kind, data)
        self._number = 0
        self._pass: Optional[int] = None
        self._text: list[str] = []
        self._chars = 0
        self.fan_line: deque = deque(maxlen=FAN_POINTS)
        self.closed = False

    # The main loop's side.

    def frame_drawn(self, at: float) -> None:
        self.last_frame_at = at

    def token_shown(self, pass_id: int, text: str, at: float) -> None:
        self.last_token_at = at
        with self._lock:
            if pass_id != self._pass:
                self._pass, self._text, self._chars = pass_id, [], 0
            if self._chars + len(text) <= MAX_TEXT_CHARS:
                self._text.append(text)
                self._chars += len(text)
            self._publish("token", {"pass": pass_id, "text": text})

    def cleared(self) -> None:
        with self._lock:
            self._text, self._chars = [], 0
            self._publish("clear", {})

    def each_second(self, vitals: Vitals) -> None:
        self.vitals = vitals
        with self._lock:
            self.fan_line.append(round(vitals.fan_hz, 2))
            self._publish("fan", {"hz": round(vitals.fan_hz, 2)})

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._lock.notify_all()

    def _publish(self, kind: str, data: dict) -> None:
        self._number += 1
        self._events.append((self._number, kind, data))
        self._lock.notify_all()

    # The server's side.

    def page_now(self) -> tuple[int, Optional[int], str, list]:
        """The last event's number, the pass and its text so far, the fan's line."""
        with self._lock:
            return self._number, self._pass, "".join(self._text), list(self.fan_line)

    def events_after(self, number: int, timeout: float) -> Optional[list]:
        """The events after `number`, waiting up to `timeout` for one; None when the
        client fell so far behind that some are gone (it starts again from the text)."""
        with self._lock:
            if self._number == number and not self.closed:
                self._lock.wait(timeout)
            if self._number - number > len(self._events):
                return None
            return [e for e in self._events if e[0] > number]
