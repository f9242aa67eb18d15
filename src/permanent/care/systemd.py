"""systemd's notify protocol: READY, WATCHDOG and STOPPING for a unit of Type=notify."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("permanent")


class SystemdNotifier:
    """sd_notify: READY, WATCHDOG and STOPPING datagrams to $NOTIFY_SOCKET, when present.

    A few lines of the protocol rather than a dependency; without systemd it does nothing.
    """

    def __init__(self):
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.socket = None
        if self.address:
            self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        usec = os.environ.get("WATCHDOG_USEC", "")
        self.interval = int(usec) / 2e6 if usec.isdigit() else None   # ping twice per timeout
        self._last = 0.0

    def send(self, message: str) -> None:
        if self.socket is None:
            return
        try:
            self.socket.sendto(message.encode(), self.address)
        except OSError as e:
            log.warning("cannot reach systemd's notify socket (%s); not notifying again", e)
            self.socket = None

    def ready(self) -> None:
        self.send("READY=1")

    def alive(self, now: float) -> None:
        """Called every frame; pings the watchdog as often as systemd asked for."""
        if self.interval is not None and now - self._last >= self.interval:
            self.send("WATCHDOG=1")
            self._last = now

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None
