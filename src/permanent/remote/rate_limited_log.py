"""One log line per kind of trouble per while: a sender that floods the piece with bad
messages cannot flood the log with them."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable


class RateLimitedLog:
    """Logs the first `note` of each kind, then at most one a `seconds`, saying how many
    were left unsaid in between."""

    def __init__(self, log: logging.Logger, seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self._log, self._seconds, self._clock = log, seconds, clock
        self._lock = threading.Lock()   # notes come from the listening threads
        self._last: dict[str, float] = {}
        self._unsaid: dict[str, int] = {}

    def note(self, kind: str, message: str, level: int = logging.WARNING) -> bool:
        """True when this note became a line."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._seconds:
                self._unsaid[kind] = self._unsaid.get(kind, 0) + 1
                return False
            self._last[kind] = now
            unsaid = self._unsaid.pop(kind, 0)
        more = f" ({unsaid} more like it since the last line)" if unsaid else ""
        self._log.log(level, "%s%s", message, more)
        return True
