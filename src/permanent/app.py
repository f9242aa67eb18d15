"""The piece, live: the hum's process, the model's process, and the window between them.

The main thread belongs to pygame. Each frame it reads input and the children's news,
asks the Conductor what is due, tells the hum about the token now on screen, and draws.
Around that loop: opening hours, edits to config.yaml, the archive of finished passes,
systemd's watchdog, and the gallery's own tools (OSC out and in, the status page).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import multiprocessing as mp
import os
import queue
import random
import signal
import time
from pathlib import Path
from typing import Callable, Optional

from .config import Config
from .errors import PermanentError
from .events import Status
from .screen.pacing import Conductor, Phase, perform
from .timings import Timings

log = logging.getLogger("permanent")
_CONTEXT = mp.get_context("spawn")


def check_sound_and_model(config: Config):
    """What must be right before anything starts, and before a live edit is taken: the
    room, the model and the voice. Returns the model source, or raises a PermanentError
    that points at the line of config.yaml to fix."""
    from .model.local.store import resolve
    from .model.voice.adapter import resolve_voice
    from .room.preset import load_preset

    def at_key(key, check):
        try:
            return check()
        except PermanentError as e:
            raise type(e)(f"{config.where(key)}: {e}") from None

    at_key("hum.preset", lambda: load_preset(config.hum.preset, config.base_dir))
    source = at_key("model.name", lambda: resolve(config.model, config.base_dir))
    at_key("text.voice", lambda: resolve_voice(config.text.voice, config.base_dir,
                                                source.embedded))
    from .remote.gallery import status_token
    status_token(config)   # a token the page needs must be there before anything starts
    return source


# A test's hook: with this variable set to seconds, SIGUSR1 makes the next draw step
# stand still that long (how a test sees /health notice a screen that stopped drawing).
STALL_ENVIRONMENT = "PERMANENT_TEST_STALL_SECONDS"


class Piece:
    def __init__(self, config: Config, windowed: bool = False,
                 duration: Optional[float] = None, launched: Optional[float] = None,
                 config_path: Optional[Path] = None,
                 wall_clock: Callable[[], dt.datetime] = dt.datetime.now,
                 mode: str = "gallery", first_pass_tokens: Optional[int] = None):
        self.config = config
        self.mode = mode   # "gallery", or a screensaver: "embedded" (in a host's window), "standalone"
        self.first_pass_tokens = first_pass_tokens
        self.windowed = windowed
        self.duration = duration
        self.launched = launched if launched is not None else time.monotonic()
        self.config_path = config_path
        self.wall_clock = wall_clock   # for opening hours; injected by tests
        self._stop_reason: Optional[str] = None
        self._failure: Optional[PermanentError] = None

    def request_stop(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason

    def _since_launch(self, t: float) -> str:
        return f"{t - self.launched:.2f} s after launch"

    def run(self) -> int:
        from .care.systemd import SystemdNotifier
        from .room.audio_process import HumSupervisor

        self._status: mp.Queue = _CONTEXT.Queue(maxsize=64)
        self._timings = Timings.from_environment(self.launched)   # for the bench
        previous = {sig: signal.signal(sig, lambda *_: self.request_stop("signal"))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        self._notifier = SystemdNotifier()
        self._hum = HumSupervisor(self.config, self._status).start()   # the room first
        self._model = self._archive = self._gallery = None
        try:
            self._open()
            clock = self._pygame.time.Clock()
            while self._stop_reason is None:
                now = time.monotonic()
                self._notifier.alive(now)
                self._read_input(now)
                self._read_news(now)
                self._take_config_edits(now)
                cues = self._keep_hours(now)
                cues += self._obey_the_gallery(now)
                cues += self._advance(now)
                at_boundary = self._act_on(cues, now)
                self._apply_settings_if_due(at_boundary)
                self._draw(now)
                self._tell_the_gallery(now)
                self._stop_when_duration_reached(now)
                self._time_the_frame(now)
                clock.tick(self.config.display.fps)
            log.info("stopping (%s)", self._stop_reason)
        finally:
            self._close(previous)
        if self._failure is not None:
            raise self._failure
        return 0

    # The loop's steps, in the order it calls them.

    def _open(self) -> None:
        """The model's process, then the window, then what the loop keeps between frames.
        The model is the slowest to wake (importing torch alone takes over a second), so its
        process starts before pygame is imported and the window opened."""
        from .model.process import ModelSupervisor

        config = self.config
        self._model = ModelSupervisor(config, self._status, self.first_pass_tokens).start()

        from .care.archive import PassArchive, default_path
        from .care.config_watch import ConfigWatcher
        from .care.hours import OpeningHours
        from .remote.gallery import GalleryLink
        from .render import FanTrack
        from .room.preset import load_preset
        from .screen.display import PageView, open_screen, pygame

        self._pygame = pygame
        self._screen = open_screen(config.display, self.windowed,
                                   embedded=self.mode == "embedded",
                                   stop_requested=lambda: self._stop_reason is not None)
        if self.mode == "embedded":
            from .screen.screensaver import survive_host_window_loss
            survive_host_window_loss(lambda: self.request_stop("host window gone"))
        self._view = PageView(config.display, self._screen.get_size(), config.base_dir)
        self._conductor = Conductor(config.pacing, random.Random(config.text.seed))
        self._quit_keys = self._input_policy(config)
        self._watcher = None
        if self.config_path and config.care.watch_config:
            self._watcher = ConfigWatcher(self.config_path, check=check_sound_and_model)
        if config.care.archive:
            self._archive = PassArchive(Path(config.care.archive_file or default_path()),
                                        int(config.care.archive_megabytes * 2**20), backups=5)
        self._hours = OpeningHours(self.wall_clock)
        self._pending: Optional[Config] = None   # an edit waiting for a pass boundary
        self._on_screen: list = []               # the shown pass's tokens, for the archive
        self._closed_pass: Optional[int] = None  # cut off by closing time: not resumed
        self._shown = self._frames = 0
        self._preset = load_preset(config.hum.preset, config.base_dir)
        self._fan = FanTrack(self._preset.rpm.idle, config.hum.spin_up_seconds,
                             config.hum.spin_down_seconds)   # the lead fan, as the hum moves it
        self._held = False             # /permanent/hold: no new tokens, the hum goes on
        self._volume = config.hum.volume   # the open hours' level, which OSC may change
        self._gallery = GalleryLink(config, self.launched).open()
        self._stall_seconds = float(os.environ.get(STALL_ENVIRONMENT, 0) or 0)
        self._stall_asked = False
        if self._stall_seconds:
            signal.signal(signal.SIGUSR1, lambda *_: setattr(self, "_stall_asked", True))
        self._notifier.ready()
        log.info("window open, %s; hum process %s, model process %s",
                 self._since_launch(time.monotonic()), self._hum.pid, self._model.process.pid)
        self._timings.write("window_open", time.monotonic(), hum_pid=self._hum.pid,
                            model_pid=self._model.process.pid)

    def _read_input(self, now: float) -> None:
        for event in self._pygame.event.get():
            if reason := self._quit_keys.reason(event, now):
                self.request_stop(reason)
            elif event.type == self._pygame.VIDEORESIZE:
                self._view = self._view.resized(self._screen.get_size(), now)

    def _read_news(self, now: float) -> None:
        """What the children said, and whether they are still alive."""
        while True:
            try:
                news: Status = self._status.get_nowait()
            except queue.Empty:
                break
            self._heard(news)
        self._hum.watch(now)
        model_pid = self._model.process.pid
        if not self._model.watch(now) and self._failure is None:
            self._fail("the model's process ended before the model loaded; see the "
                       "messages above.", "model process died")
        if self._model.process.pid != model_pid:
            self._timings.model_restarted(now, self._model.process.pid)

    def _take_config_edits(self, now: float) -> None:
        if self._watcher is not None and (edited := self._watcher.poll(now)) is not None:
            self._pending = edited

    def _keep_hours(self, now: float) -> list:
        hours = self.config.hours
        opened = self._hours.change(now, hours.enabled, hours.days, hours.opens, hours.closes)
        if opened is None:
            return []
        self._open_or_close(opened)
        return [] if opened else self._cut_short(now)

    def _obey_the_gallery(self, now: float) -> list:
        """The cues OSC brought, already validated on the listening thread."""
        cues = []
        while (command := self._gallery.take()) is not None:
            if command.kind == "volume":
                self._volume = command.value
                if self._hours.open:
                    self._hum.set_volume(command.value, self.config.osc.volume_glide_seconds)
            elif command.kind in ("hold", "resume"):
                self._held = command.kind == "hold"
                if self._held:
                    self._hum.idle()   # the fans settle while nothing is written
            elif command.kind == "next" and self._conductor.pass_id is not None:
                cues += self._cut_short(now)
        return cues

    def _cut_short(self, now: float) -> list:
        """The page fades at once; the rest of its pass is dropped, not archived."""
        self._closed_pass = self._conductor.pass_id
        self._on_screen = []
        return self._conductor.interrupt(now)

    def _advance(self, now: float) -> list:
        """The conductor's cues for this frame: tokens due, a pass ending, a fade."""
        writing = self._hours.open and not self._held
        cues = self._conductor.tick(now, self._take if writing else lambda: None)
        if self._model.pass_interrupted():
            cues += self._conductor.interrupt(now)
        return cues

    def _take(self):
        token = self._model.take()
        while (token is not None and self._closed_pass is not None
               and token.pass_id <= self._closed_pass):
            token = self._model.take()
        return token

    def _act_on(self, cues: list, now: float) -> bool:
        """Show, sound and archive what the cues say; True at a pass boundary."""
        if any(cue.kind == "fade" for cue in cues):   # the page needs no action: the gallery may
            self._gallery.faded(self._conductor.pass_id)
        return perform(cues, self, now)

    # The Stage the cues act on (screen.pacing.perform).

    def reveal(self, token, due: float, now: float) -> None:
        self._view.append(token.text, now)
        self._hum.show_token(token.entropy_bits)
        target = self._preset.rpm_for_entropy(token.entropy_bits, self.config.hum)
        self._fan.aim(due, target)
        self._gallery.token_shown(token.pass_id, token.index, token.text, token.entropy_bits,
                                  self._preset.lead_blade_pass_hz(target), now)
        self._on_screen.append(token)
        log.debug("shown %r (%.2f bits)", token.text, token.entropy_bits)
        self._shown += 1
        self._timings.token_shown(now)
        if self._shown == 1:
            log.info("first token shown, %s", self._since_launch(now))

    def pass_ended(self, due: float) -> None:
        self._hum.idle()   # between passes the fans settle
        self._fan.aim(due, self._preset.rpm.idle)
        log.info("pass %s ended", self._conductor.pass_id)
        self._gallery.pass_ended(self._conductor.pass_id)
        self._archive_shown_pass()

    def cleared(self) -> None:
        self._view.clear()
        self._gallery.cleared()

    def _archive_shown_pass(self) -> None:
        from .care.archive import pass_record
        from .model.voice.prompt import prompt_record

        if self._archive is not None and self._on_screen:
            self._archive.append(pass_record(self._conductor.pass_id, self.config.model.name,
                                             prompt_record(self.config.text), self._on_screen))
        self._on_screen = []

    def _apply_settings_if_due(self, at_boundary: bool) -> None:
        """New settings take effect at a pass boundary, or at once on a dark page that no
        pass is coming to: while closed, or once the model was given up on (an edit to
        it is what may bring the text back)."""
        from .screen.display import PageView

        if self._pending is None:
            return
        waiting = not self._hours.open or self._model.given_up
        blank = self._conductor.opacity == 0 or self._conductor.pass_id is None
        if not (at_boundary or (waiting and blank)):
            return
        new, old = self._pending, self.config
        self._pending = None
        self._conductor.pacing = new.pacing
        self._hum.apply(new)
        if new.hum != old.hum:
            from .room.preset import load_preset
            self._preset = load_preset(new.hum.preset, new.base_dir)
            if new.hum.volume != old.hum.volume:
                self._volume = new.hum.volume   # the edit's level wins over OSC's
            elif self._hours.open and self._volume != new.hum.volume:
                self._hum.set_volume(self._volume, 0.1)   # a new room keeps OSC's level
        self._model.apply(new)
        changed = [f.name for f in dataclasses.fields(Config)
                   if f.metadata.get("yaml", True) and getattr(new, f.name) != getattr(old, f.name)]
        log.info("new settings in effect: %s", ", ".join(changed) or "nothing changed")
        self.config = new
        if not self._hours.open:   # a new room starts at its own volume: keep it low
            self._hum.set_volume(new.hours.closed_volume, 0.1)
        self._view = PageView(new.display, self._screen.get_size(), new.base_dir)
        self._quit_keys = self._input_policy(new)

    def _draw(self, now: float) -> None:
        # The caret says a token is on its way: none is while closed, or once the model
        # was given up on (the hum plays alone on a dark page).
        writing = (self._hours.open and self._conductor.phase is Phase.WRITING
                   and not self._model.given_up)
        if self._stall_asked:
            self._stall_asked = False
            log.warning("stalling the draw step for %.1f s (%s)", self._stall_seconds,
                        STALL_ENVIRONMENT)
            time.sleep(self._stall_seconds)
        self._view.draw(self._screen, now, self._conductor.opacity, writing and not self._held)
        self._pygame.display.flip()
        self._gallery.frame_drawn(time.monotonic())
        if self._frames == 0:
            log.info("first frame drawn, %s", self._since_launch(time.monotonic()))
            self._timings.write("first_frame", time.monotonic())
        self._frames += 1

    def _tell_the_gallery(self, now: float) -> None:
        """Once a second the vitals; now and then a picture of the frame just drawn."""
        gallery = self._gallery
        if gallery.thumbnail_due(now):
            from .screen.display import thumbnail
            gallery.thumbnail(*thumbnail(self._screen), now)
        if not gallery.second_due(now):
            return
        from .remote.piece_state import Vitals

        model, hum = self._model, self._hum
        state, waiting_for = self._model_state()
        gallery.each_second(now, Vitals(
            model=state, waiting_for=waiting_for,
            processes={"hum": hum.process.is_alive(), "model": model.process.is_alive()},
            restarts={"hum": hum.restarts, "model": model.restarts},
            hours="open" if self._hours.open else "closed", held=self._held,
            passes=gallery.passes, tokens=self._shown,
            fan_hz=self._preset.lead_blade_pass_hz(self._fan.rpm_at(now)),
            hum_level=0.0 if hum.process.silent else hum.volume,
            hum_sound_at=hum.sound_at()), hum.dropouts)

    def _model_state(self) -> tuple[str, str]:
        """writing, waiting (and for what), loading, or down: what /health says of it."""
        model = self._model
        if model.given_up or model.restart_pending or not model.process.is_alive():
            return "down", ""
        if not model.ever_ready:
            return "loading", ""
        if not self._hours.open:
            return "waiting", "closed hours"
        return ("waiting", "hold") if self._held else ("writing", "")

    def _stop_when_duration_reached(self, now: float) -> None:
        if self.duration is not None and now - self.launched >= self.duration:
            self.request_stop("duration reached")

    def _time_the_frame(self, began: float) -> None:
        """All this frame's work, from reading input to here (the clock's wait is not)."""
        seconds = time.monotonic() - began
        self._gallery.frame_made(seconds)
        self._timings.frame_made(seconds)

    def _close(self, previous_handlers: dict) -> None:
        """The room fades while the model is ended; then the archive, the window, signals."""
        stopping = time.monotonic()
        self._notifier.stopping()
        fade = self.config.hum.fade_out_seconds
        self._hum.begin_stop(fade)
        if self._gallery is not None:
            self._gallery.close()   # while the hum fades: no more cues, no more pages
        if self._model is not None:
            self._model.stop()
        model_ended = time.monotonic()
        self._hum.stop(fade)
        hum_ended = time.monotonic()
        if self._archive is not None:
            self._archive.close()
        closing = time.monotonic()
        if self.mode != "embedded" and hasattr(self, "_pygame"):
            # The host owns an embedded window; SDL tearing it down can wait half a
            # second on a window the host already destroyed. Leaving closes it anyway.
            self._pygame.quit()
        closed = time.monotonic()
        self._notifier.close()
        self._status.cancel_join_thread()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        log.info("stopped in %.2f s (model %.2f, hum %.2f, window %.2f)",
                 time.monotonic() - stopping, model_ended - stopping,
                 hum_ended - model_ended, closed - closing)
        self._timings.write("stopped", time.monotonic(),
                            seconds=round(time.monotonic() - stopping, 2))
        self._timings.close()

    def _input_policy(self, config: Config):
        from .screen.keys import QuitKeys
        from .screen.screensaver import WakeOnInput

        if self.mode == "standalone":
            saver = config.screensaver
            return WakeOnInput(saver.wake_distance_pixels, saver.wake_grace_seconds,
                               time.monotonic())
        # A host's window (XScreenSaver) ends us with SIGTERM; keys are the host's business.
        return QuitKeys(config.display.quit_chord,
                        config.display.fullscreen and not self.windowed,
                        keys_quit=self.mode != "embedded")

    def _open_or_close(self, opened: bool) -> None:
        hours = self.config.hours
        self._gallery.hours(opened)
        if opened:
            log.info("opening: the piece returns")
            self._hum.set_volume(self._volume, hours.transition_seconds)
            self._pygame.display.set_allow_screensaver(False)
        else:
            log.info("closing until %s: text stops, the hum falls to %.2f", hours.opens,
                     hours.closed_volume)
            self._hum.set_volume(hours.closed_volume, hours.transition_seconds)
            self._pygame.display.set_allow_screensaver(True)   # the display may sleep

    def _fail(self, message: str, reason: str, exit_code: int = 1) -> None:
        self._failure = PermanentError(message)
        self._failure.exit_code = exit_code
        self.request_stop(reason)

    def _heard(self, news: Status) -> None:
        if news.kind == "playing":
            log.info("hum playing on %s, %s", news.message, self._since_launch(news.seconds))
            self._timings.write("hum_playing", news.seconds)
        elif news.kind == "ready":
            self._model.ready()
            log.info("model ready: %s, %s", news.message, self._since_launch(news.seconds))
            self._timings.write("model_ready", news.seconds)
        elif news.kind == "silent":
            log.warning("%s", news.message)
            self._timings.write("silent", news.seconds)
            self._hum.process.silent = True
        elif news.kind == "error":
            self._fail(news.message, f"{news.source} failed",
                       exit_code=2 if news.source == "audio" else 1)
