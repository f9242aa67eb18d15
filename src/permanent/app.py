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
        from .generator_process import GeneratorProcess
        from .keys import held_modifiers, parse_chord
        from .pacing import Conductor

        config = self.config
        status: mp.Queue = _CONTEXT.Queue(maxsize=64)
        previous = {sig: signal.signal(sig, lambda *_: self.request_stop("signal"))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        audio = AudioProcess(config, status).start()     # the room first
        generator = None
        try:
            screen = open_screen(config.display, self.windowed)
            generator = GeneratorProcess(config, status).start()
            view = PageView(config.display, screen.get_size(), config.base_dir)
            conductor = Conductor(config.pacing, random.Random(config.text.seed))
            chord = parse_chord(config.display.quit_chord)
            fullscreen = config.display.fullscreen and not self.windowed
            clock = pygame.time.Clock()
            first_token_logged = False
            log.info("window open, %s; hum process %s, model process %s",
                     self._since_launch(time.monotonic()), audio.pid, generator.pid)
            while self._stop_reason is None:
                now = time.monotonic()
                for event in pygame.event.get():
                    if event.type == pygame.QUIT:
                        self.request_stop("window closed")
                    elif event.type == pygame.KEYDOWN:
                        name = pygame.key.name(event.key)
                        if not fullscreen and event.key == pygame.K_ESCAPE:
                            self.request_stop("Esc")
                        elif chord.matches(name, held_modifiers(event.mod)):
                            self.request_stop("quit chord")
                    elif event.type == pygame.VIDEORESIZE:
                        view = self._relayout(view, screen, config)
                self._read_status(status, audio, generator)
                for cue in conductor.tick(now, generator.take):
                    if cue.kind == "reveal":
                        view.append(cue.token.text, now)
                        audio.show_token(cue.token.entropy_bits)
                        log.debug("shown %r (%.2f bits)", cue.token.text, cue.token.entropy_bits)
                        if not first_token_logged:
                            log.info("first token shown, %s", self._since_launch(now))
                            first_token_logged = True
                    elif cue.kind == "pass_end":
                        audio.idle()
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
            if generator is not None:
                generator.stop()
            pygame.quit()
            status.cancel_join_thread()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._failure is not None:
            raise self._failure
        return 0

    def _relayout(self, view, screen, config):
        from .display import PageView

        text = view.page.text
        view = PageView(config.display, screen.get_size(), config.base_dir)
        view.append(text, time.monotonic())
        return view

    def _read_status(self, status: mp.Queue, audio, generator) -> None:
        while True:
            try:
                news: Status = status.get_nowait()
            except queue.Empty:
                break
            if news.kind == "playing":
                log.info("hum playing on %s, %s", news.message, self._since_launch(news.seconds))
            elif news.kind == "ready":
                log.info("model ready: %s, %s", news.message, self._since_launch(news.seconds))
            elif news.kind == "silent":
                log.warning("%s", news.message)
                audio.silent = True
            elif news.kind == "error":
                code = 2 if news.source == "audio" else 1
                self._failure = PermanentError(news.message)
                self._failure.exit_code = code
                self.request_stop(f"{news.source} failed")
        if not audio.silent and audio.pid is not None and not audio.is_alive():
            log.warning("the hum's process ended unexpectedly; the piece goes on in silence")
            audio.silent = True
        if generator.pid is not None and not generator.is_alive() and self._failure is None:
            self._failure = PermanentError("the model's process ended unexpectedly; "
                                           "see the messages above.")
            self.request_stop("model process died")
