"""OSC out: the piece's moments as OSC messages over UDP, to the gallery's receivers.

UDP, from a non-blocking socket: a receiver that is missing, slow or unplugged costs the
main loop one failed `sendto`, never a wait. The messages the piece sends, in all, are
held to a rate (a token bucket); what exceeds it is dropped and counted.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from typing import Callable, Sequence

from pythonosc.osc_message_builder import OscMessageBuilder

from ..config import parse_endpoint

log = logging.getLogger("permanent.osc")
SAY_DROPS_EVERY_SECONDS = 60.0


def osc_message(address: str, *args) -> bytes:
    """One OSC message: ints as int32, floats as float32, text as strings."""
    builder = OscMessageBuilder(address)
    for arg in args:
        if isinstance(arg, bool) or not isinstance(arg, (int, float, str)):
            raise TypeError(f"an OSC argument must be int, float or str, not {arg!r}")
        kind = (OscMessageBuilder.ARG_TYPE_STRING if isinstance(arg, str) else
                OscMessageBuilder.ARG_TYPE_INT if isinstance(arg, int) else
                OscMessageBuilder.ARG_TYPE_FLOAT)
        builder.add_arg(arg, kind)
    return builder.build().dgram


class TokenBucket:
    """At most `rate` a second on average, `rate` at once after a quiet second."""

    def __init__(self, rate: float, now: float):
        self.rate, self._level, self._at = rate, rate, now

    def take(self, now: float) -> bool:
        self._level = min(self.rate, self._level + (now - self._at) * self.rate)
        self._at = now
        if self._level >= 1.0:
            self._level -= 1.0
            return True
        return False


class OscOut:
    """Sends to every receiver of `targets` ("host:port"). Every method returns at once."""

    def __init__(self, targets: Sequence[str], max_per_second: float,
                 clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._bucket = TokenBucket(max_per_second, clock())
        self._sockets: dict[int, socket.socket] = {}
        self._targets = []
        self.dropped = 0   # over the rate, or refused by the network
        self._said_at: float = float("-inf")   # when the log last said messages were dropped
        for target in targets:
            # Names are resolved once, here, before the loop starts: a lookup can wait.
            host, port = parse_endpoint(target)
            try:
                family, _, _, _, address = socket.getaddrinfo(
                    host, port, type=socket.SOCK_DGRAM)[0]
            except OSError as e:
                log.warning("OSC out: %s cannot be found (%s); nothing is sent there. "
                            "Check osc.send_to.", target, e)
                continue
            if family not in self._sockets:
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setblocking(False)
                if family == socket.AF_INET:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                self._sockets[family] = sock
            self._targets.append((self._sockets[family], address))
        if self._targets:
            log.info("OSC out to %s", ", ".join(targets))

    def send(self, address: str, *args) -> None:
        if not self._targets:
            return
        now = self._clock()
        if not self._bucket.take(now):
            self.dropped += 1
            if now - self._said_at > SAY_DROPS_EVERY_SECONDS:
                self._said_at = now
                log.warning("OSC out: more than %.0f messages a second; the rest are dropped "
                            "(osc.max_messages_per_second), %d so far", self._bucket.rate,
                            self.dropped)
            return
        args = tuple(0.0 if isinstance(a, float) and not math.isfinite(a) else a for a in args)
        data = osc_message(address, *args)
        for sock, target in self._targets:
            try:
                sock.sendto(data, target)
            except OSError:   # would block, refused (no receiver yet), network down: gone
                self.dropped += 1

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets, self._targets = {}, []
