"""The one object the main loop talks to the gallery through: OSC out and in, and the
status server, each only when configured. Every method returns at once."""

from __future__ import annotations

import logging
import os
import threading
from typing import Optional

from ..config import Config
from ..errors import ConfigError
from .metrics import PieceMetrics
from .osc_in import Command, OscIn
from .osc_out import OscOut
from .piece_state import PieceState, Vitals
from .rate_limited_log import RateLimitedLog
from .status_server import StatusServer

log = logging.getLogger("permanent.remote")
MAX_OSC_TEXT_CHARS = 8000


class LastError(logging.Handler):
    """Keeps the last warning or error line logged in this process, for the page."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.line = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.line = record.getMessage()[:300]
        except Exception:   # noqa: BLE001 - a log record that cannot format is no error line
            pass


def status_token(config: Config) -> Optional[str]:
    """The token the page needs, read from the environment; a ConfigError when it is
    needed and missing."""
    status = config.status
    if not status.enabled or status.token_env is None:
        return None
    token = os.environ.get(status.token_env, "")
    if len(token) < 16:
        raise ConfigError(f"{config.where('status.token_env')}: names {status.token_env}, "
                          f"which {'is not set' if not token else 'holds under 16 characters'}"
                          f"; set it to a long random token (e.g. `openssl rand -hex 16`) in "
                          "the piece's environment.")
    return token


class GalleryLink:
    def __init__(self, config: Config, launched: float):
        self.config = config
        pacing = config.pacing
        # The longest a healthy screen goes without a token: a pass's end, its hold, fade
        # and gap, and the time the model is given before it counts as hung.
        quiet = (pacing.hold_seconds + pacing.fade_seconds + pacing.gap_seconds
                 + pacing.line_break_pause_seconds + config.care.hang_seconds)
        self.state = PieceState(launched, quiet)
        self.metrics = PieceMetrics()
        self._notes = RateLimitedLog(log)
        self._osc_out = OscOut(config.osc.send_to, config.osc.max_messages_per_second)
        self._osc_in: Optional[OscIn] = None
        self._status: Optional[StatusServer] = None
        self._last_error = LastError()
        self._next_second = launched
        self._next_thumbnail = launched
        self._restarts = {"hum": 0, "model": 0}
        self._dropouts = 0
        self.passes = 0   # ended, cut short or not
        self._pass_text: list[str] = []

    def open(self) -> "GalleryLink":
        config = self.config
        if config.osc.listen:
            try:
                self._osc_in = OscIn(config.osc.listen, config.osc.allow_from,
                                     self._notes).start()
            except OSError as e:
                log.warning("OSC in: cannot listen on %s (%s); the piece goes on without "
                            "it. Choose a free port in osc.listen.", config.osc.listen,
                            e.strerror or e)
        if config.status.enabled:
            logging.getLogger().addHandler(self._last_error)
            self._status = StatusServer(config.status, self.state, self.metrics,
                                        status_token(config), self._notes).start()
        return self

    # What the piece did.

    def token_shown(self, pass_id: int, index: int, text: str, bits: float, fan_hz: float,
                    now: float) -> None:
        if index == 0 or not self._pass_text:
            self._osc_out.send("/permanent/pass/begin", pass_id)
            self._pass_text = []
        self._pass_text.append(text)
        self._osc_out.send("/permanent/token", pass_id, index, text, bits, fan_hz)
        self.metrics.tokens.inc()
        self.metrics.entropy.observe(bits)
        if self._status is not None:
            self.state.token_shown(pass_id, text, now)
        else:
            self.state.last_token_at = now

    def pass_ended(self, pass_id: int) -> None:
        # A pass is a few hundred tokens; a UDP datagram holds at most 64 KiB.
        text = "".join(self._pass_text)[:MAX_OSC_TEXT_CHARS]
        self._osc_out.send("/permanent/pass/end", pass_id, text)
        self._pass_text = []
        self.passes += 1
        self.metrics.passes.inc()

    def faded(self, pass_id: int) -> None:
        self._osc_out.send("/permanent/fade", pass_id)

    def cleared(self) -> None:
        if self._status is not None:
            self.state.cleared()

    def hours(self, opened: bool) -> None:
        self._osc_out.send("/permanent/hours", "open" if opened else "closed")

    def frame_drawn(self, at: float) -> None:
        self.state.frame_drawn(at)

    def frame_made(self, seconds: float) -> None:
        self.metrics.frame_seconds.observe(seconds)

    def thumbnail_due(self, now: float) -> bool:
        if self._status is None or now < self._next_thumbnail:
            return False
        self._next_thumbnail = now + self.config.status.thumbnail_seconds
        return True

    def thumbnail(self, rgb: bytes, size: tuple[int, int], now: float) -> None:
        self.state.thumbnail = (rgb, size, now)

    def second_due(self, now: float) -> bool:
        return now >= self._next_second

    def each_second(self, now: float, vitals: Vitals, dropouts: int) -> None:
        """Once a second: the fan and the level to OSC, the vitals to the page, the
        counters to the metrics."""
        self._next_second = max(self._next_second + 1.0, now)
        self._osc_out.send("/permanent/fan", vitals.fan_hz, vitals.hum_level)
        self.metrics.fan_hz.set(vitals.fan_hz)
        self.metrics.hum_level.set(vitals.hum_level)
        for name, count in vitals.restarts.items():
            if count > self._restarts[name]:
                self.metrics.restarts.labels(name).inc(count - self._restarts[name])
                self._restarts[name] = count
        if dropouts > self._dropouts:
            self.metrics.dropouts.inc(dropouts - self._dropouts)
            self._dropouts = dropouts
        vitals.last_error = self._last_error.line
        if self._status is not None:
            self.state.each_second(vitals)
        else:
            self.state.vitals = vitals

    # What the gallery asks.

    def take(self) -> Optional[Command]:
        """The next cue to obey; each kind is logged once a while (a fader sends many)."""
        command = self._osc_in.take() if self._osc_in is not None else None
        if command is not None:
            value = f" {command.value:.3f}" if command.kind == "volume" else ""
            self._notes.note(f"obeyed {command.kind}",
                             f"OSC from {command.sender}: {command.kind}{value}", logging.INFO)
        return command

    def close(self) -> None:
        """Stop listening without waiting for it: the listeners' threads each end at
        their next look (within half a second), while the piece goes on closing."""
        self._osc_out.close()
        listeners = [x for x in (self._osc_in, self._status) if x is not None]
        self._osc_in = self._status = None
        if listeners:
            logging.getLogger().removeHandler(self._last_error)
            threading.Thread(target=lambda: [x.close() for x in listeners],
                             name="permanent-remote-close", daemon=True).start()
