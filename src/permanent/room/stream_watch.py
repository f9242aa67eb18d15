"""Whether the hum's sound is still reaching the room.

pyo counts the samples its audio callback has computed since the server started, and the
callback only runs when the output asks for more: the count stops when the sound server
freezes, when its device goes, or when PortAudio's stream hangs. The hum's own loop reads
that count a few times a second; a count that stands still means nobody is listening.
"""

from __future__ import annotations

from typing import Optional


class StreamWatch:
    """Reads pyo's sample count at each turn of the hum's loop and says, once each, when
    the sound began to flow and when it stopped."""

    # A new stream fills its buffers at once, then may wait over a second for the sound
    # server before the next: flowing means this much audio computed beyond that.
    FLOWING_SECONDS = 0.5
    # A stream that has not begun to flow by then never will; an output that wakes
    # slowly (a Bluetooth speaker) is given a few seconds more than the null sink needs.
    START_SECONDS = 10.0
    STALL_SECONDS = 3.0   # a stream that flowed and then stands still this long is lost

    def __init__(self, sample_rate: int, now: float):
        self._flowing_after = int(self.FLOWING_SECONDS * sample_rate)
        self._started = now
        self._first: Optional[int] = None    # the count at the first reading
        self._last: Optional[int] = None
        self.moved_at = now                  # when the count last advanced
        self.flowing = False
        self.stopped = False

    def observe(self, samples: int, now: float) -> Optional[str]:
        """"flowing" the first time the sound flows, "stopped" the first time it is found
        stopped, otherwise None."""
        if self.stopped:
            return None
        if self._first is None:
            self._first = samples
        if samples != self._last:   # only change counts: a count that wraps is no loss
            self._last, self.moved_at = samples, now
        if not self.flowing:
            if samples - self._first >= self._flowing_after:
                self.flowing = True
                return "flowing"
            if now - self._started > self.START_SECONDS:
                self.stopped = True
                return "stopped"
            return None
        if now - self.moved_at > self.STALL_SECONDS:
            self.stopped = True
            return "stopped"
        return None
