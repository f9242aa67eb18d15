"""The remote role's parts on their own: health judged from ages, the rate-limited log,
and the status server's bounds (clients at once, time per request) on a real socket."""

from __future__ import annotations

import logging
import socket
import time
import urllib.request

from permanent.config import StatusConfig
from permanent.remote.health import health
from permanent.remote.metrics import PieceMetrics
from permanent.remote.piece_state import PieceState, Vitals
from permanent.remote.rate_limited_log import RateLimitedLog
from permanent.remote.status_server import StatusServer


def state_at(frame: float | None, token: float | None, model: str = "writing") -> PieceState:
    state = PieceState(launched=0.0, token_within_seconds=40.0)
    state.last_frame_at, state.last_token_at = frame, token
    state.vitals = Vitals(model=model)
    return state


def test_health_is_the_age_of_the_last_frame_and_token():
    assert health(state_at(99.5, 90.0), 100.0)[0]
    stalled, body = health(state_at(98.5, 99.0), 100.0)
    assert not stalled and body["last_frame_age_s"] == 1.5
    assert not health(state_at(99.9, 50.0), 100.0)[0]                  # no token for 50 s
    assert health(state_at(99.9, 50.0, model="waiting"), 100.0)[0]    # closed, or held
    assert not health(state_at(99.9, 99.9, model="down"), 100.0)[0]
    assert not health(state_at(None, None, model="loading"), 100.0)[0]  # never drew
    assert health(state_at(99.9, None, model="loading"), 30.0)[0]      # loading, in time
    assert not health(state_at(99.9, None, model="loading"), 41.0)[0]


def test_the_log_says_each_kind_of_trouble_once_a_while(caplog):
    clock = [0.0]
    notes = RateLimitedLog(logging.getLogger("test.notes"), seconds=10, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, "test.notes"):
        said = [notes.note("malformed", "bad") for _ in range(100)]
        said.append(notes.note("unknown sender", "who"))
        clock[0] = 10.5
        said.append(notes.note("malformed", "bad again"))
    assert said.count(True) == 3
    assert [r.getMessage() for r in caplog.records] == [
        "bad", "who", "bad again (99 more like it since the last line)"]


def test_the_server_serves_a_bounded_number_of_clients_each_for_a_bounded_time():
    settings = StatusConfig(enabled=True, port=_free_port(), max_clients=2, request_seconds=1.0)
    state = PieceState(launched=time.monotonic(), token_within_seconds=40.0)
    state.frame_drawn(time.monotonic())
    notes = RateLimitedLog(logging.getLogger("test.status"))
    server = StatusServer(settings, state, PieceMetrics(), None, notes).start()
    try:
        slow = [socket.create_connection(("127.0.0.1", settings.port)) for _ in range(2)]
        for client in slow:
            client.sendall(b"GET /health HTTP/1.1\r\n")   # and never the rest
        time.sleep(0.2)
        third = socket.create_connection(("127.0.0.1", settings.port))
        third.settimeout(2)
        third.sendall(b"GET /health HTTP/1.1\r\n\r\n")
        assert third.recv(100) == b"", "a client over the limit is closed at once"
        started = time.monotonic()
        for client in slow:
            client.settimeout(3)
            assert client.recv(100) == b""   # closed by the reaper
        cut_after = time.monotonic() - started
        assert cut_after < settings.request_seconds + 0.5 + 0.2, cut_after
        state.frame_drawn(time.monotonic())   # a screen that draws
        # A cut client's slot is free once its thread has ended, a moment after its socket
        # closed: a request in that moment is refused as over the limit, as it should be.
        cut = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{settings.port}/health",
                                            timeout=3) as ok:
                    assert ok.status == 200   # the slots are free again
                    break
            except ConnectionError:   # http.client's RemoteDisconnected is one
                assert time.monotonic() - cut < 1.0, "the slots were not freed"
                time.sleep(0.02)
    finally:
        server.close()
        for client in [*slow, third]:
            client.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
