"""The piece, live: the hum's process, the model's process, and the window between them.

The main thread belongs to pygame. Each frame it reads input and the children's news,
asks the Conductor what is due, tells the hum about the token now on screen, and draws.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import random
import signal
import time
from typing import Optional

from .config import Config
from .errors import PermanentError
from .events import Status

log = logging.getLogger("permanent")
_CONTEXT = mp.get_context("spawn")


class Piece:
    def __init__(self, config: Config, windowed: bool = False,
                 duration: Optional[float] = None, launched: Optional[float] = None):
        self.config = config
        self.windowed = windowed
        self.duration = duration
        self.launched = launched if launched is not None else time.monotonic()
        self._stop_reason: Optional[str] = None
        self._failure: Optional[PermanentError] = None

    def request_stop(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason

    def _since_launch(self, t: float) -> str:
        return f"{t - self.launched:.2f} s after launch"

    def run(self) -> int:
        from .audio_process import AudioProcess
        from .display import PageView, open_screen, pygame
        from .generator_process import ModelSupervisor
        from .keys import QuitKeys
        from .pacing import Conductor

        config = self.config
        status: mp.Queue = _CONTEXT.Queue(maxsize=64)
        previous = {sig: signal.signal(sig, lambda *_: self.request_stop("signal"))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        audio = AudioProcess(config, status).start()     # the room first
        model = None
        try:
            screen = open_screen(config.display, self.windowed)
            model = ModelSupervisor(config, status).start()
            view = PageView(config.display, screen.get_size(), config.base_dir)
            conductor = Conductor(config.pacing, random.Random(config.text.seed))
            quit_keys = QuitKeys(config.display.quit_chord,
                                 config.display.fullscreen and not self.windowed)
            clock = pygame.time.Clock()
            shown = 0
            log.info("window open, %s; hum process %s, model process %s",
                     self._since_launch(time.monotonic()), audio.pid, model.process.pid)
            while self._stop_reason is None:
                now = time.monotonic()
                for event in pygame.event.get():
                    if reason := quit_keys.reason(event):
                        self.request_stop(reason)
                    elif event.type == pygame.VIDEORESIZE:
                        view = view.resized(screen.get_size(), now)
                self._read_status(status, audio, model)
                if not model.watch(now) and self._failure is None:
                    self._fail("the model's process ended before the model loaded; see the "
                               "messages above.", "model process died")
                cues = conductor.tick(now, model.take)
                if model.pass_interrupted():
                    cues += conductor.interrupt(now)
                for cue in cues:
                    if cue.kind == "reveal":
                        view.append(cue.token.text, now)
                        audio.show_token(cue.token.entropy_bits)
                        log.debug("shown %r (%.2f bits)", cue.token.text, cue.token.entropy_bits)
                        shown += 1
                        if shown == 1:
                            log.info("first token shown, %s", self._since_launch(now))
                    elif cue.kind == "pass_end":
                        audio.idle()   # between passes the fans settle
                        log.info("pass %s ended", conductor.pass_id)
                    elif cue.kind == "clear":
                        view.clear()
                view.draw(screen, now, conductor.opacity)
                pygame.display.flip()
                if self.duration is not None and now - self.launched >= self.duration:
                    self.request_stop("duration reached")
                clock.tick(config.display.fps)
            log.info("stopping (%s)", self._stop_reason)
        finally:
            audio.stop(config.hum.fade_out_seconds)
            if model is not None:
                model.stop()
            pygame.quit()
            status.cancel_join_thread()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._failure is not None:
            raise self._failure
        return 0

    def _fail(self, message: str, reason: str, exit_code: int = 1) -> None:
        self._failure = PermanentError(message)
        self._failure.exit_code = exit_code
        self.request_stop(reason)

    def _read_status(self, status: mp.Queue, audio, model) -> None:
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
                audio.silent = True
            elif news.kind == "error":
                self._fail(news.message, f"{news.source} failed",
                           exit_code=2 if news.source == "audio" else 1)
        if not audio.silent and audio.pid is not None and not audio.is_alive():
            log.warning("the hum's process ended unexpectedly; the piece goes on in silence")
            audio.silent = True
