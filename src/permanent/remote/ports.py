"""Whether the ports the configuration asks for can be had, for `permanent check`."""

from __future__ import annotations

import socket

from ..config import Config, parse_endpoint


def can_bind(host: str, port: int, kind: int) -> str | None:
    """None when (host, port) can be bound now; else why not, in words."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=kind)[0]
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server
            probe.bind(address)
    except OSError as e:
        return e.strerror or str(e)
    return None


def port_report(config: Config) -> list[tuple[bool, str]]:
    """(fine, a line) for each port the piece would listen on."""
    wanted = []
    if config.status.enabled:
        wanted.append(("status page", config.status.address, config.status.port,
                       socket.SOCK_STREAM, "TCP", "status.port"))
    if config.osc.listen:
        host, port = parse_endpoint(config.osc.listen)
        wanted.append(("OSC in", host, port, socket.SOCK_DGRAM, "UDP", "osc.listen"))
    lines = []
    for what, host, port, kind, protocol, key in wanted:
        problem = can_bind(host, port, kind)
        if problem is None:
            lines.append((True, f"{what} on {host}:{port} ({protocol}): can be bound"))
        else:
            lines.append((False, f"{what} on {host}:{port} ({protocol}): cannot be bound "
                          f"({problem}); is the piece already running? Else choose another "
                          f"port in {config.where(key)}. The piece would run without it."))
    return lines
