"""The status server: a page for the technician's phone, /health and /metrics.

Read-only, on threads of its own, so that nothing a request does reaches the main loop:
at most `max_clients` connections are served at once (more are closed on arrival), each
request has `request_seconds` from its first byte to its answer (a reaper closes a slow
one), and a failure inside a request ends that request only. The standard library's
HTTP server parses the requests; it answers a bad method 501 and an oversized line or
too many headers 414 or 431 by itself.

    /                 the page (HTML; its live parts come over /events)
    /events           server-sent events: the text as it is written, the fan, the vitals
    /health           JSON; 503 when unhealthy (see health.py)
    /metrics          Prometheus's text format
    /thumbnail.jpg    the last frame the piece drew, small

Off loopback every path needs the token: `Authorization: Bearer TOKEN`, or `?token=TOKEN`
in the address (how a phone's browser and the page's own requests carry it).
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, urlsplit

from ..config import StatusConfig, is_loopback
from .health import health
from .metrics import PieceMetrics
from .piece_state import PieceState
from .rate_limited_log import RateLimitedLog

log = logging.getLogger("permanent.status")
PAGE = Path(__file__).with_name("status_page.html")
LOOK_SECONDS = 0.5         # how soon the listening thread notices it is to stop
KEEPALIVE_SECONDS = 15.0   # an idle event stream says so this often, to see a gone client


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, family, handler, settings: StatusConfig, notes: RateLimitedLog):
        self.address_family = family
        self.settings, self.notes = settings, notes
        self._slots = threading.BoundedSemaphore(settings.max_clients)
        self._streams = threading.BoundedSemaphore(max(1, settings.max_clients // 2))
        self._deadlines: dict[socket.socket, float] = {}
        self._deadlines_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)   # full: closed at once, nothing queued
            return
        self.watch(request, time.monotonic() + self.settings.request_seconds)
        try:
            super().process_request(request, client_address)
        except BaseException:   # no thread for it: its slot is free again
            self.forget(request)
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.forget(request)
            self._slots.release()

    def watch(self, request, deadline: float) -> None:
        with self._deadlines_lock:
            self._deadlines[request] = deadline

    def forget(self, request) -> None:
        with self._deadlines_lock:
            self._deadlines.pop(request, None)

    def close_overdue(self, now: float) -> None:
        with self._deadlines_lock:
            overdue = [r for r, deadline in self._deadlines.items() if deadline < now]
            for request in overdue:
                del self._deadlines[request]
        for request in overdue:
            try:
                request.shutdown(socket.SHUT_RDWR)   # its thread's read or write ends now
            except OSError:
                pass

    def stream_slot(self) -> bool:
        return self._streams.acquire(blocking=False)

    def stream_done(self) -> None:
        self._streams.release()

    def handle_error(self, request, client_address):
        self.notes.note("request failed", f"status: a request from {client_address[0]} "
                        "failed; the piece goes on", level=logging.DEBUG)


class StatusServer:
    def __init__(self, settings: StatusConfig, state: PieceState, metrics: PieceMetrics,
                 token: Optional[str], notes: RateLimitedLog):
        self.settings, self.state, self.metrics = settings, state, metrics
        self.token = token
        self.needs_token = not is_loopback(settings.address)
        self._notes = notes
        self._server: Optional[_Server] = None
        self._thumbnail: tuple[float, bytes] = (-1.0, b"")
        self._page = PAGE.read_text(encoding="utf-8").replace(
            "THUMBNAIL_MS", str(round(settings.thumbnail_seconds * 1000))).encode()

    def start(self) -> Optional["StatusServer"]:
        """Listening, or None when the address cannot be had (it says why, once)."""
        settings = self.settings
        try:
            family = socket.getaddrinfo(settings.address, settings.port,
                                        type=socket.SOCK_STREAM)[0][0]
            self._server = _Server((settings.address, settings.port), family, _handler(self),
                                   settings, self._notes)
        except OSError as e:
            log.warning("status page: cannot listen on %s:%d (%s); the piece goes on without "
                        "it. Choose a free status.port, or stop what holds this one.",
                        settings.address, settings.port, e.strerror or e)
            return None
        threading.Thread(target=self._server.serve_forever, args=(LOOK_SECONDS,),
                         name="permanent-status", daemon=True).start()
        threading.Thread(target=self._reap, name="permanent-status-reaper", daemon=True).start()
        log.info("status page on http://%s:%d/%s", settings.address, self.port,
                 " (token needed)" if self.needs_token else "")
        return self

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.settings.port

    def close(self) -> None:
        if self._server is not None:
            self.state.close()   # event streams end
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _reap(self) -> None:
        while self._server is not None:
            server = self._server
            server.close_overdue(time.monotonic())
            time.sleep(0.25)   # a deadline is seconds long: a quarter's lateness is fine

    def allowed(self, headers, query: dict) -> bool:
        if not self.needs_token:
            return True
        given = headers.get("Authorization", "")
        given = given[7:] if given.startswith("Bearer ") else query.get("token", [""])[0]
        return bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())

    def thumbnail_jpeg(self) -> Optional[bytes]:
        """The last picture, encoded here once, off the main loop. JPEG, as pygame's PNG
        encoder holds the interpreter's lock for milliseconds, which delays a frame; its
        JPEG one takes a quarter of a millisecond for a thumbnail."""
        shot = self.state.thumbnail
        if shot is None:
            return None
        raw, size, taken = shot
        if self._thumbnail[0] != taken:
            import pygame

            buffer = io.BytesIO()
            pygame.image.save(pygame.image.frombytes(raw, size, "RGB"), buffer, "frame.jpg")
            self._thumbnail = (taken, buffer.getvalue())
        return self._thumbnail[1]


def _handler(status: StatusServer):
    class Handler(BaseHTTPRequestHandler):
        server_version = "permanent"
        sys_version = ""
        timeout = status.settings.request_seconds   # each read and write of the socket
        protocol_version = "HTTP/1.0"               # one request a connection

        def log_message(self, format, *args):   # noqa: A002 - the library's name
            pass   # no line per request: a busy phone must not fill the log

        def do_GET(self):
            url = urlsplit(self.path)
            if not status.allowed(self.headers, parse_qs(url.query)):
                return self._send(HTTPStatus.UNAUTHORIZED, b"a token is needed\n",
                                  "text/plain", {"WWW-Authenticate": "Bearer"})
            route = {"/": self._page, "/health": self._health, "/metrics": self._metrics,
                     "/events": self._events, "/thumbnail.jpg": self._thumbnail}.get(url.path)
            if route is None:
                return self._send(HTTPStatus.NOT_FOUND, b"not here\n", "text/plain")
            route()

        def _page(self):
            self._send(HTTPStatus.OK, status._page, "text/html; charset=utf-8")

        def _health(self):
            healthy, body = health(status.state, time.monotonic())
            self._send(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE,
                       json.dumps(body).encode(), "application/json")

        def _metrics(self):
            self._send(HTTPStatus.OK, status.metrics.text(), status.metrics.content_type)

        def _thumbnail(self):
            picture = status.thumbnail_jpeg()
            if picture is None:
                return self._send(HTTPStatus.NOT_FOUND, b"no frame yet\n", "text/plain")
            self._send(HTTPStatus.OK, picture, "image/jpeg")

        def _events(self):
            server: _Server = self.server
            if not server.stream_slot():
                return self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"too many pages open\n",
                                  "text/plain", {"Retry-After": "30"})
            try:
                server.forget(self.request)   # a stream lives on; each write still times out
                self._stream()
            finally:
                server.stream_done()

        def _stream(self):
            state = status.state
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            number, pass_id, text, fan = state.page_now()
            self._event("page", {"pass": pass_id, "text": text, "fan": fan})
            self._event("vitals", health(state, time.monotonic())[1] | _counters(state))
            while not state.closed:
                events = state.events_after(number, KEEPALIVE_SECONDS)
                if events is None:   # fell behind: start again from the text as it is
                    number, pass_id, text, fan = state.page_now()
                    self._event("page", {"pass": pass_id, "text": text, "fan": fan})
                    continue
                if not events:
                    self.wfile.write(b": still here\n\n")
                for number, kind, data in events:
                    self._event(kind, data)
                    if kind == "fan":
                        self._event("vitals",
                                    health(state, time.monotonic())[1] | _counters(state))
                self.wfile.flush()

        def _event(self, kind: str, data: dict):
            self.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())

        def _send(self, code, body: bytes, content_type: str, headers: dict = None):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _counters(state: PieceState) -> dict:
    vitals = state.vitals
    return {"passes": vitals.passes, "tokens": vitals.tokens, "fan_hz": vitals.fan_hz,
            "held": vitals.held, "last_error": vitals.last_error}
