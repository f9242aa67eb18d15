"""Opening hours: when the piece shows itself, in the machine's own time zone."""

from __future__ import annotations

import datetime as dt
from typing import Callable, Optional

from ..config import DAYS, parse_time

def is_open(now: dt.datetime, days: list[str], opens: str, closes: str) -> bool:
    """Open from `opens` to `closes` on `days`; a closing time before the opening time
    runs past midnight and counts as the day it opened."""
    start, end, t = parse_time(opens), parse_time(closes), now.time()
    today = DAYS[now.weekday()]
    yesterday = DAYS[(now.weekday() - 1) % 7]
    if start == end:
        return today in days                    # open all day
    if start < end:
        return today in days and start <= t < end
    return (today in days and t >= start) or (yesterday in days and t < end)


class OpeningHours:
    """Whether the piece is open, looked at once a second on an injected wall clock;
    `change` says only when that flips, so the caller acts once per opening or closing."""

    CHECK_SECONDS = 1.0

    def __init__(self, wall_clock: Callable[[], dt.datetime]):
        self.wall_clock = wall_clock
        self.open = True
        self._next_check = 0.0

    def change(self, now: float, enabled: bool, days: list[str], opens: str,
               closes: str) -> Optional[bool]:
        """True at opening, False at closing, None otherwise. `now` is monotonic seconds."""
        if now < self._next_check:
            return None
        self._next_check = now + self.CHECK_SECONDS
        opened = not enabled or is_open(self.wall_clock(), days, opens, closes)
        if opened == self.open:
            return None
        self.open = opened
        return opened
