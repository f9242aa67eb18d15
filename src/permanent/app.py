"""The piece, live: the hum's process, the model's process, and the window between them.

The main thread belongs to pygame. Each frame it reads input and the children's news,
asks the Conductor what is due, tells the hum about the token now on screen, and draws.
Around that loop: opening hours, edits to config.yaml, the archive of finished passes,
and systemd's watchdog.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import multiprocessing as mp
import queue
import random
import signal
import time
from pathlib import Path
from typing import Callable, Optional

from .config import Config
from .errors import PermanentError
from .events import Status

log = logging.getLogger("permanent")
_CONTEXT = mp.get_context("spawn")


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
        from .archive import PassArchive, default_path, pass_record
        from .audio_process import HumSupervisor
        from .config_watch import ConfigWatcher
        from .display import PageView, open_screen, pygame
        from .generator_process import ModelSupervisor
        from .hours import is_open
        from .pacing import Conductor
        from .supervision import SystemdNotifier
        from .voice import prompt_record

        config = self.config
        status: mp.Queue = _CONTEXT.Queue(maxsize=64)
        previous = {sig: signal.signal(sig, lambda *_: self.request_stop("signal"))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        notifier = SystemdNotifier()
        hum = HumSupervisor(config, status).start()     # the room first
        model = archive = None
        try:
            screen = open_screen(config.display, self.windowed, embedded=self.mode == "embedded")
            if self.mode == "embedded":
                from .screensaver import survive_host_window_loss
                survive_host_window_loss(lambda: self.request_stop("host window gone"))
            model = ModelSupervisor(config, status, self.first_pass_tokens).start()
            view = PageView(config.display, screen.get_size(), config.base_dir)
            conductor = Conductor(config.pacing, random.Random(config.text.seed))
            quit_keys = self._input_policy(config)
            watcher = ConfigWatcher(self.config_path) \
                if self.config_path and config.care.watch_config else None
            if config.care.archive:
                archive = PassArchive(Path(config.care.archive_file or default_path()),
                                      int(config.care.archive_megabytes * 2**20), backups=5)
            pending: Optional[Config] = None
            on_screen: list = []     # the tokens of the pass being shown, for the archive
            is_open_now, next_hours_check = True, 0.0
            closed_pass: Optional[int] = None   # cut off by closing time: not resumed

            def take():
                token = model.take()
                while token is not None and closed_pass is not None and token.pass_id <= closed_pass:
                    token = model.take()
                return token

            clock = pygame.time.Clock()
            shown = frames = 0
            notifier.ready()
            log.info("window open, %s; hum process %s, model process %s",
                     self._since_launch(time.monotonic()), hum.pid, model.process.pid)
            while self._stop_reason is None:
                now = time.monotonic()
                notifier.alive(now)
                for event in pygame.event.get():
                    if reason := quit_keys.reason(event, now):
                        self.request_stop(reason)
                    elif event.type == pygame.VIDEORESIZE:
                        view = view.resized(screen.get_size(), now)
                self._read_status(status, hum, model)
                hum.watch(now)
                if not model.watch(now) and self._failure is None:
                    self._fail("the model's process ended before the model loaded; see the "
                               "messages above.", "model process died")
                if watcher is not None and (edited := watcher.poll(now)) is not None:
                    pending = edited
                cues = []
                # While closed and dark, new settings need not wait for a pass to end.
                apply_now = pending is not None and not is_open_now and conductor.opacity == 0
                if now >= next_hours_check:
                    next_hours_check = now + 1.0
                    hours = config.hours
                    opened = not hours.enabled or is_open(self.wall_clock(), hours.days,
                                                          hours.opens, hours.closes)
                    if opened != is_open_now:
                        is_open_now = opened
                        self._open_or_close(opened, hum, config, pygame)
                        if not opened:   # the page fades; the rest of its pass is dropped
                            closed_pass = conductor.pass_id
                            on_screen = []   # an unfinished pass is not archived
                            cues += conductor.interrupt(now)
                cues += conductor.tick(now, take if is_open_now else lambda: None)
                if model.pass_interrupted():
                    cues += conductor.interrupt(now)
                for cue in cues:
                    if cue.kind == "reveal":
                        view.append(cue.token.text, now)
                        hum.show_token(cue.token.entropy_bits)
                        on_screen.append(cue.token)
                        log.debug("shown %r (%.2f bits)", cue.token.text, cue.token.entropy_bits)
                        shown += 1
                        if shown == 1:
                            log.info("first token shown, %s", self._since_launch(now))
                    elif cue.kind == "pass_end":
                        hum.idle()   # between passes the fans settle
                        log.info("pass %s ended", conductor.pass_id)
                        if archive is not None and on_screen:
                            archive.append(pass_record(
                                conductor.pass_id, config.model.name,
                                prompt_record(config.text),
                                on_screen))
                        on_screen = []
                    elif cue.kind == "clear":
                        view.clear()
                        apply_now = pending is not None   # the pass boundary
                if apply_now:   # new settings: at a pass boundary, or at once while closed
                    config, pending = self._apply(pending, config, hum, model, conductor), None
                    self.config = config
                    if not is_open_now:   # a new room starts at its own volume: keep it low
                        hum.set_volume(config.hours.closed_volume, 0.1)
                    view = PageView(config.display, screen.get_size(), config.base_dir)
                    quit_keys = self._input_policy(config)
                view.draw(screen, now, conductor.opacity)
                pygame.display.flip()
                if frames == 0:
                    log.info("first frame drawn, %s", self._since_launch(time.monotonic()))
                frames += 1
                if self.duration is not None and now - self.launched >= self.duration:
                    self.request_stop("duration reached")
                clock.tick(config.display.fps)
            log.info("stopping (%s)", self._stop_reason)
        finally:
            stopping = time.monotonic()
            notifier.stopping()
            fade = self.config.hum.fade_out_seconds
            hum.begin_stop(fade)          # the room fades while the model is ended
            if model is not None:
                model.stop()
            model_ended = time.monotonic()
            hum.stop(fade)
            hum_ended = time.monotonic()
            if archive is not None:
                archive.close()
            closing = time.monotonic()
            if self.mode != "embedded":
                # The host owns an embedded window; SDL tearing it down can wait half a
                # second on a window the host already destroyed. Leaving closes it anyway.
                pygame.quit()
            closed = time.monotonic()
            notifier.close()
            status.cancel_join_thread()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            log.info("stopped in %.2f s (model %.2f, hum %.2f, window %.2f)",
                     time.monotonic() - stopping, model_ended - stopping,
                     hum_ended - model_ended, closed - closing)
        if self._failure is not None:
            raise self._failure
        return 0

    def _input_policy(self, config: Config):
        from .keys import QuitKeys
        from .screensaver import WakeOnInput

        if self.mode == "standalone":
            saver = config.screensaver
            return WakeOnInput(saver.wake_distance_pixels, saver.wake_grace_seconds,
                               time.monotonic())
        # A host's window (XScreenSaver) ends us with SIGTERM; keys are the host's business.
        return QuitKeys(config.display.quit_chord,
                        config.display.fullscreen and not self.windowed,
                        keys_quit=self.mode != "embedded")

    @staticmethod
    def _apply(new: Config, old: Config, hum, model, conductor) -> Config:
        conductor.pacing = new.pacing
        hum.apply(new)
        model.apply(new)
        changed = [f.name for f in dataclasses.fields(Config)
                   if f.metadata.get("yaml", True) and getattr(new, f.name) != getattr(old, f.name)]
        log.info("new settings in effect: %s", ", ".join(changed) or "nothing changed")
        return new

    def _open_or_close(self, opened: bool, hum, config: Config, pygame) -> None:
        hours = config.hours
        if opened:
            log.info("opening: the piece returns")
            hum.set_volume(config.hum.volume, hours.transition_seconds)
            pygame.display.set_allow_screensaver(False)
        else:
            log.info("closing until %s: text stops, the hum falls to %.2f", hours.opens,
                     hours.closed_volume)
            hum.set_volume(hours.closed_volume, hours.transition_seconds)
            pygame.display.set_allow_screensaver(True)   # the display may sleep

    def _fail(self, message: str, reason: str, exit_code: int = 1) -> None:
        self._failure = PermanentError(message)
        self._failure.exit_code = exit_code
        self.request_stop(reason)

    def _read_status(self, status: mp.Queue, hum, model) -> None:
        while True:
            try:
                news: Status = status.get_nowait()
            except queue.Empty:
                break
            if news.kind == "playing":
                log.info("hum playing on %s, %s", news.message, self._since_launch(news.seconds))
            elif news.kind == "ready":
                model.ready()
                log.info("model ready: %s, %s", news.message, self._since_launch(news.seconds))
            elif news.kind == "silent":
                log.warning("%s", news.message)
                hum.process.silent = True
            elif news.kind == "error":
                self._fail(news.message, f"{news.source} failed",
                           exit_code=2 if news.source == "audio" else 1)
