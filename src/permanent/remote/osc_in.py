"""OSC in: a few cues the gallery's tools may give the piece, from senders it knows.

A thread of its own reads UDP datagrams on `osc.listen`. Each is checked in turn: the
sender must be in `osc.allow_from`, the packet must parse (a message or a bundle), the
address must be one of the four below, and its argument in range. Only then is a
`Command` put in a small bounded queue that the main loop empties each frame; anything
else changes nothing and is told in one rate-limited log line.

    /permanent/volume x     the hum's level, 0 to 1, glided
    /permanent/hold         writing pauses (the hum goes on)
    /permanent/resume       writing goes on
    /permanent/next         the pass on screen fades now

A cue without arguments is a press; so is one number that is not 0 (a button sends 1 on
press and 0 on release, and the release is ignored).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import queue
import socket
import socketserver
import threading
from dataclasses import dataclass
from typing import Optional, Sequence

from pythonosc.osc_packet import OscPacket

from ..config import parse_endpoint
from .rate_limited_log import RateLimitedLog

log = logging.getLogger("permanent.osc")

PREFIX = "/permanent/"
CUES = ("hold", "resume", "next")
MAX_DATAGRAM = 65536


@dataclass(frozen=True)
class Command:
    """A validated cue for the main loop: "volume" (with its value), "hold", "resume", "next"."""
    kind: str
    value: float = 0.0
    sender: str = ""


class Rejected(ValueError):
    """Why a message changes nothing, in words for the log; `kind` groups the log lines."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def command_of(address: str, params: Sequence, sender: str) -> Optional[Command]:
    """The Command a message asks for; None for a button's release; Rejected if none."""
    if not address.startswith(PREFIX):
        raise Rejected("malformed", f"the address {address[:80]!r} is not one the piece obeys")
    name = address[len(PREFIX):]
    numbers = [p for p in params if isinstance(p, (int, float)) and not isinstance(p, bool)]
    if name == "volume":
        if len(params) != 1 or len(numbers) != 1:
            raise Rejected("malformed", f"{address} needs one number, 0 to 1 (got "
                           f"{len(params)} argument{'s' * (len(params) != 1)})")
        value = float(numbers[0])
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise Rejected("out of range", f"{address} {numbers[0]!r} is out of range: "
                           "send a number from 0 to 1")
        return Command("volume", value, sender)
    if name in CUES:
        if not params:
            return Command(name, sender=sender)
        if len(params) == 1 and len(numbers) == 1:
            return Command(name, sender=sender) if numbers[0] != 0 else None
        raise Rejected("malformed", f"{address} takes no argument, or one number")
    raise Rejected("malformed", f"the address {address[:80]!r} is not one the piece obeys "
                   "(volume, hold, resume, next)")


def plain_address(sender: str) -> str:
    """An IPv4 sender as written in allow_from, also when a socket bound to :: reports it
    as ::ffff:192.168.1.30."""
    try:
        address = ipaddress.ip_address(sender)
    except ValueError:
        return sender
    return str(getattr(address, "ipv4_mapped", None) or address)


class OscIn:
    """Listens on `listen` ("host:port") in a thread; `commands` holds what to obey."""

    QUEUE_SIZE = 32   # a frame empties it; a flood beyond this is dropped, not queued

    def __init__(self, listen: str, allow_from: Sequence[str], notes: RateLimitedLog):
        self.commands: queue.Queue[Command] = queue.Queue(maxsize=self.QUEUE_SIZE)
        self._allowed = {plain_address(a) for a in allow_from}
        self._notes = notes
        host, port = parse_endpoint(listen)
        family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                owner._heard(self.request[0], plain_address(self.client_address[0]))

        server_class = type("OscServer", (socketserver.UDPServer,),
                            {"address_family": family, "max_packet_size": MAX_DATAGRAM})
        self._server = server_class((host, port), Handler)   # OSError when taken
        self.address = self._server.server_address
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.5,),
                                        name="permanent-osc-in", daemon=True)

    def start(self) -> "OscIn":
        self._thread.start()
        log.info("OSC in on %s:%s, obeying %s", self.address[0], self.address[1],
                 ", ".join(sorted(self._allowed)) or "no one")
        return self

    def take(self) -> Optional[Command]:
        try:
            return self.commands.get_nowait()
        except queue.Empty:
            return None

    def _heard(self, data: bytes, sender: str) -> None:
        try:
            for command in self._commands_in(data, sender):
                if command is None:
                    continue
                try:
                    self.commands.put_nowait(command)
                except queue.Full:
                    raise Rejected("busy", "cues arrive faster than the piece takes them")
        except Rejected as e:
            self._notes.note(e.kind, f"OSC from {sender} ignored: {e}")

    def _commands_in(self, data: bytes, sender: str) -> list:
        if sender not in self._allowed:
            raise Rejected("unknown sender", "the sender is not in osc.allow_from")
        try:
            messages = [timed.message for timed in OscPacket(data).messages]
        except Exception as e:   # noqa: BLE001 - however a datagram fails to parse, it is junk
            raise Rejected("malformed", f"not an OSC packet ({type(e).__name__})") from None
        return [command_of(m.address, m.params, sender) for m in messages]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
