"""The model's own process: load, then write pass after pass into a bounded queue.

It runs ahead of the display by at most the queue's size; a model that crashes or hangs
here cannot freeze the screen or silence the room.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing as mp
import os
import queue
import signal
import time
from typing import Optional

from ..config import Config, TextConfig
from ..events import Status, TokenEvent
from ..lifecycle import (SPAWN, ChildProcess, LatestOfEach, RestartLimit, Supervisor,
                         die_with_parent, exit_now, kill_and_reap, trim_heap)

log = logging.getLogger("permanent.generator")
QUEUE_TOKENS = 256   # about a pass ahead of the screen: enough slack, bounded memory


class ModelProcess(ChildProcess):
    def __init__(self, config: Config, status: mp.Queue, first_pass_id: int = 0,
                 first_pass_tokens: Optional[int] = None):
        self._tokens: mp.Queue = SPAWN.Queue(maxsize=QUEUE_TOKENS)
        self._settings: mp.Queue = SPAWN.Queue(maxsize=4)
        self._outbox = LatestOfEach(self._settings)   # the newest settings always arrive
        self._stop = SPAWN.Event()
        # Monotonic time of its last sign of life: a token written, or a wait on a full queue.
        self.heartbeat = SPAWN.Value("d", time.monotonic(), lock=False)
        super().__init__(
            _main, "permanent-model",
            (config, self._tokens, self._settings, status, self._stop, self.heartbeat,
             logging.getLogger().level, first_pass_id, first_pass_tokens),
            queues=(self._tokens, self._settings))

    def take(self) -> Optional[TokenEvent]:
        try:
            return self._tokens.get_nowait()
        except queue.Empty:
            return None

    def update_text(self, text: TextConfig) -> None:
        """New sampling and prompt settings, used from the next pass the model begins."""
        self._outbox.send("text", text)

    def flush(self) -> None:
        """Send settings that waited for room in the queue (called every frame)."""
        self._outbox.flush()

    def kill(self) -> None:
        kill_and_reap(self._process)
        self._process.join(timeout=2.0)

    def stop(self, timeout: float = 1.0) -> None:
        """End it now: a model process holds nothing worth saving, so no need to wait."""
        if self.pid is None:
            return
        self._stop.set()
        kill_and_reap(self._process)
        self._process.join(timeout=timeout)
        self.close_queues()


class ModelSupervisor(Supervisor):
    """Keeps a model process running: a crash or a hang after a good start means a restart
    with backoff (the hum and the screen carry on); a model that never loads is an error.
    After `RESTART_LIMIT` crashes the piece goes on with the hum alone, until an edit
    changes the model."""

    process: ModelProcess
    RESTART_LIMIT = (5, 600.0)   # crashes, seconds

    def __init__(self, config: Config, status: mp.Queue, first_pass_tokens: Optional[int] = None):
        self.config, self.status = config, status
        super().__init__("model", ModelProcess(config, status, 0, first_pass_tokens), log,
                         RestartLimit(*self.RESTART_LIMIT))
        self.ever_ready = False
        self._process_ready = False
        self._drained = self._interrupt_reported = False
        self._next_pass_id = 0   # new processes continue the numbering: passes never mix

    def take(self) -> Optional[TokenEvent]:
        token = self.process.take()
        if token is not None:
            self._next_pass_id = max(self._next_pass_id, token.pass_id + 1)
        elif (self.restart_pending or self.given_up) and not self._drained:
            self._drained = True   # everything the dead process wrote has been taken
        return token

    def pass_interrupted(self) -> bool:
        """True once after a death, when the last words it wrote have been taken."""
        if self._drained and not self._interrupt_reported:
            self._interrupt_reported = True
            return True
        return False

    def ready(self) -> None:
        self.ever_ready = self._process_ready = True

    def apply(self, config: Config) -> None:
        """New settings: text goes to the running model; a new model means a new process."""
        old, self.config = self.config, config
        if config.model != old.model or config.text.voice != old.text.voice:
            log.info("model settings changed: loading %s", config.model.name)
            self.process.stop()
            self._process_ready = False
            self.process = ModelProcess(config, self.status, self._next_pass_id).start()
            self.try_again(time.monotonic())   # the crashes may have been the old model's
        elif config.text != old.text:
            self.process.update_text(config.text)

    def watch(self, now: float) -> bool:
        """Restart a dead or hung model process when its backoff is over; False if the
        model never loaded at all (a configuration problem, not a crash)."""
        if self.given_up or self.restart_when_due(now):
            return True
        if self.process.pid is None:
            return True
        if self.process.is_alive():
            self.process.flush()
            silent = now - self.process.heartbeat.value
            if not (self._process_ready and silent > self.config.care.hang_seconds):
                return True
            cause = f"hung: it wrote nothing for {silent:.0f} s (care.hang_seconds)"
            self.process.kill()
        elif not self.ever_ready:
            return False
        else:
            cause = f"died (exit code {self.process.exitcode})"
        # Its queue stays open until the restart: what it wrote before dying still shows.
        self.crashed(now, cause)
        self._drained = self._interrupt_reported = False
        return True

    def _next_process(self) -> ModelProcess:
        self._drained = True   # whatever it wrote and was not shown yet is gone now
        self.process.stop(timeout=0.1)
        self._process_ready = False
        return ModelProcess(self.config, self.status, self._next_pass_id).start()

    def _giving_up(self) -> str:
        return (f"the piece goes on with the hum alone and starts the model no more. A model "
                f"process killed (exit code -9) has most often run out of memory: free some, "
                f"or choose a smaller model ({self.config.where('model.name')}); saving a "
                f"change to the model's settings tries again.")

    def stop(self) -> None:
        self.process.stop()


MODEL_NICENESS = 19   # the lowest: frames and audio buffers never wait for the model
# How often a model that is a queue ahead of the screen looks for room: a pass ahead is
# queued, so this costs the screen nothing, and the model few wake-ups while the piece is
# closed.
WAIT_FOR_SCREEN_SECONDS = 0.1


def _main(config: Config, tokens: mp.Queue, settings: mp.Queue, status: mp.Queue, stop,
          heartbeat, log_level: int, first_pass_id: int = 0,
          first_pass_tokens: Optional[int] = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)   # nothing to save: end the moment the piece ends
    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s: %(message)s")
    from ..errors import PermanentError

    try:
        started = time.monotonic()
        generator = _open_generator(config)
        # Loaded at the piece's own priority: at the lowest, importing torch beside a busy
        # core took twice as long. Writing only has to stay ahead of the screen; a frame or
        # an audio buffer that waits for it is a visible or audible stutter, so from here
        # on those go first.
        os.nice(MODEL_NICENESS)
        heartbeat.value = time.monotonic()   # loading is not hanging: the clock starts now
        loaded = f"{generator.label} loaded in {time.monotonic() - started:.1f} s"
        status.put(Status("generator", "ready",
                          f"{loaded} ({generator.runtime}; voice: {generator.voice})",
                          time.monotonic()))
    except PermanentError as e:
        status.put(Status("generator", "error", str(e), time.monotonic()))
        return
    # "Ready" reaches the piece before any token: each queue has its own feeder thread, and
    # a token sent through a quicker one would otherwise arrive first (the supervisor
    # counts silence as a hang only once the model said it was ready).
    status.close()
    status.join_thread()
    tokens.cancel_join_thread()   # on exit, do not wait for the parent to drain the queue
    parent = mp.parent_process()
    text = config.text
    # Drafts are written before any of their tokens is sent: each one sampled is a sign of life.
    generator.progress = lambda: setattr(heartbeat, "value", time.monotonic())
    for pass_id in itertools.count(first_pass_id):
        heartbeat.value = time.monotonic()   # a pass that waits for a server is not a hang
        if stop.is_set() or (parent is not None and not parent.is_alive()):
            exit_now(0)
        text = _newest_settings(settings, text)   # edited settings, from this pass on
        if pass_id == first_pass_id and first_pass_tokens:
            # A screensaver's first pass is short: something whole appears, and soon.
            generator.update_text(dataclasses.replace(
                text, max_tokens=first_pass_tokens,
                min_tokens=min(text.min_tokens, first_pass_tokens)))
        else:
            generator.update_text(text)
        if pass_id == first_pass_id + 1:
            generator.keep_warm()   # a pass is queued ahead: the screen does not wait for this
        for event in generator.write_pass(pass_id):
            heartbeat.value = time.monotonic()
            while True:
                if stop.is_set() or (parent is not None and not parent.is_alive()):
                    exit_now(0)   # nothing to save, and torch's own teardown is slow
                try:
                    # Not a timed put: its deadline is on the wall clock (see lifecycle).
                    tokens.put_nowait(event)
                    break
                except queue.Full:
                    heartbeat.value = time.monotonic()   # waiting for the screen is not a hang
                    time.sleep(WAIT_FOR_SCREEN_SECONDS)
        # A pass's drafts churn the heap; what they freed goes back to the system, so
        # the process's size follows what it holds, pass after pass.
        trim_heap()


def _newest_settings(settings: mp.Queue, text: TextConfig) -> TextConfig:
    """The last of the settings sent since the previous pass (or `text`, if none was)."""
    while True:
        try:
            _kind, text = settings.get_nowait()
        except queue.Empty:
            return text


def _open_generator(config: Config):
    """The model here, or an inference server with the embedded model as its stand-in."""
    def local(model_settings, text):
        from .local.generator import load_generator
        from .local.store import ensure_converted, progress_log, resolve

        source = resolve(model_settings, config.base_dir)
        ensure_converted(source, log=progress_log)
        return load_generator(source, model_settings, text, config.base_dir)

    if not config.model.server_url:
        return local(config.model, config.text)
    from .server.fallback import ServerWithFallback, embedded_fallback_settings
    from .server.generator import ServerGenerator

    return ServerWithFallback(
        ServerGenerator(config.model, config.text), config.model.fallback,
        lambda text: local(embedded_fallback_settings(config.model), text))
