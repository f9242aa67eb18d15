"""The piece's moments as data, for `permanent bench`: one JSON object a line, such as
{"event": "first_token", "after_launch_s": 2.41, "monotonic_s": 81234.567, ...}, in the
file that the environment variable PERMANENT_TIMINGS names.

The log reports the same moments in words, for people; the bench reads these instead, so
rewording a log line cannot change a measurement. Without the variable nothing is opened
or written. `monotonic_s` is the system's monotonic clock, the same in every process of
the machine: a reader can set it against its own moments (when it killed a process).
"""

from __future__ import annotations

import json
import logging
import os
from array import array
from pathlib import Path
from typing import Mapping, Optional

ENVIRONMENT = "PERMANENT_TIMINGS"
MAX_FRAMES = 1_000_000   # frame times kept: over four hours at 60 fps

log = logging.getLogger("permanent")


class Timings:
    """Writes the piece's events; every method does nothing when no file was named."""

    def __init__(self, path: Optional[Path], launched: float):
        self.path, self.launched = path, launched
        self._file = None
        self._restarts = 0
        self._token_since_start = False   # the current model process has shown a token
        self._frames: Optional[array] = None   # frame times from the first token, seconds
        self._last_at = launched   # the latest event's time: the frames' summary is given it

    @classmethod
    def from_environment(cls, launched: float,
                         environ: Mapping[str, str] = os.environ) -> "Timings":
        named = environ.get(ENVIRONMENT)
        return cls(Path(named) if named else None, launched)

    def write(self, event: str, at: float, **fields) -> None:
        """One event at monotonic time `at`, with whatever else describes it."""
        if self.path is None:
            return
        self._last_at = at
        record = {"event": event, "after_launch_s": round(at - self.launched, 2),
                  "monotonic_s": round(at, 3), **fields}
        try:
            if self._file is None:
                self._file = open(self.path, "a", encoding="utf-8", buffering=1)
            self._file.write(json.dumps(record) + "\n")
        except OSError as e:   # a measurement aid: the piece carries on without it
            log.warning("cannot write timings to %s (%s); no more are written", self.path, e)
            self.path = None

    def token_shown(self, at: float) -> None:
        """The first token each model process gets onto the screen is an event: at launch,
        and again after every restart (how long the screen waited for the new one)."""
        if not self._token_since_start:
            self._token_since_start = True
            self.write("first_token", at, restarts=self._restarts)
            if self._frames is None and self.path is not None:
                self._frames = array("f")

    def frame_made(self, seconds: float) -> None:
        """The main loop's work for one frame; from the first token on, summed up as the
        event "frames" at `close` (4 bytes a frame: an hour at 60 fps is under 1 MB)."""
        if self._frames is not None and len(self._frames) < MAX_FRAMES:
            self._frames.append(seconds)

    def model_restarted(self, at: float, pid: Optional[int]) -> None:
        self._restarts += 1
        self._token_since_start = False
        self.write("model_restarted", at, pid=pid)

    def close(self) -> None:
        if self._frames:
            ms = sorted(1000 * f for f in self._frames)
            pick = lambda q: round(ms[min(len(ms) - 1, int(q * len(ms)))], 2)
            self.write("frames", self._last_at, count=len(ms), p50_ms=pick(0.5),
                       p99_ms=pick(0.99), max_ms=round(ms[-1], 2))
            self._frames = None
        if self._file is not None:
            self._file.close()
            self._file = None


def read_timings(path: Path) -> list[dict]:
    """The events written so far; a line still being written is left for the next read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True)
            if line.endswith("\n") and line.strip()]


def first_event(events: list[dict], name: str) -> Optional[dict]:
    """The first event called `name`, or None."""
    return next((e for e in events if e["event"] == name), None)
