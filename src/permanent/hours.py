"""Opening hours: when the piece shows itself, in the machine's own time zone."""

from __future__ import annotations

import datetime as dt

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_time(text: str) -> dt.time:
    """'10:00' or '18:30:15' -> a time of day; ValueError with a readable message if not."""
    try:
        parts = [int(p) for p in text.split(":")]
        if len(parts) not in (2, 3):
            raise ValueError
        return dt.time(*parts)
    except (ValueError, TypeError):
        raise ValueError(f"{text!r} is not a time of day like 10:00 or 18:30") from None


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
