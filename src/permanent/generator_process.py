"""The model's own process: load, then write pass after pass into a bounded queue.

It runs ahead of the display by at most the queue's size; a model that crashes or hangs
here cannot freeze the screen or silence the room.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import queue
import signal
import time
from typing import Optional

from .config import Config
from .events import Status, TokenEvent

log = logging.getLogger("permanent.generator")
_CONTEXT = mp.get_context("spawn")
QUEUE_TOKENS = 256   # about a pass ahead of the screen: enough slack, bounded memory


class GeneratorProcess:
    def __init__(self, config: Config, status: mp.Queue, first_pass_id: int = 0):
        self._tokens: mp.Queue = _CONTEXT.Queue(maxsize=QUEUE_TOKENS)
        self._stop = _CONTEXT.Event()
        self._process = _CONTEXT.Process(
            target=_main, name="permanent-model", daemon=True,
            args=(config, self._tokens, status, self._stop, logging.getLogger().level,
                  first_pass_id))

    def start(self) -> "GeneratorProcess":
        self._process.start()
        return self

    @property
    def pid(self):
        return self._process.pid

    @property
    def exitcode(self):
        return self._process.exitcode

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def take(self) -> Optional[TokenEvent]:
        try:
            return self._tokens.get_nowait()
        except queue.Empty:
            return None

    def stop(self, timeout: float = 0.5) -> None:
        if self._process.pid is None:
            return
        self._stop.set()
        self._process.join(timeout=timeout)
        if self._process.is_alive():   # busy in a forward pass: nothing to save, end it
            self._process.terminate()
            self._process.join(timeout=1.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=1.0)
        self._tokens.close()
        self._tokens.cancel_join_thread()


class ModelSupervisor:
    """Keeps a model process running: a crash after a good start means a restart with
    backoff (the hum and the screen carry on); a model that never loads is an error."""

    BACKOFF_SECONDS = (1.0, 2.0, 5.0, 15.0, 60.0)

    def __init__(self, config: Config, status: mp.Queue):
        self.config, self.status = config, status
        self.process = GeneratorProcess(config, status)
        self.ever_ready = False
        self.restarts = 0
        self._restart_at: Optional[float] = None
        self._drained = self._interrupt_reported = False
        self._next_pass_id = 0   # new processes continue the numbering: passes never mix

    def start(self) -> "ModelSupervisor":
        self.process.start()
        self._started = time.monotonic()
        return self

    def take(self) -> Optional[TokenEvent]:
        token = self.process.take()
        if token is not None:
            self._next_pass_id = max(self._next_pass_id, token.pass_id + 1)
        elif self._restart_at is not None and not self._drained:
            self._drained = True   # everything the dead process wrote has been taken
        return token

    def pass_interrupted(self) -> bool:
        """True once after a death, when the last words it wrote have been taken."""
        if self._drained and not self._interrupt_reported:
            self._interrupt_reported = True
            return True
        return False

    def ready(self) -> None:
        self.ever_ready = True

    def watch(self, now: float) -> bool:
        """Restart a dead model process when its backoff is over; False if it never loaded."""
        if self._restart_at is not None:
            if now >= self._restart_at:
                self._restart_at = None
                self._drained = True   # whatever it wrote and was not shown yet is gone now
                self.process.stop(timeout=0.1)
                self.process = GeneratorProcess(self.config, self.status,
                                                self._next_pass_id).start()
                self._started = now
                log.info("model process restarted (pid %s)", self.process.pid)
            return True
        if self.process.pid is None or self.process.is_alive():
            return True
        if not self.ever_ready:
            return False
        if now - self._started > 600:
            self.restarts = 0   # it ran well for a long while: start the backoff afresh
        delay = self.BACKOFF_SECONDS[min(self.restarts, len(self.BACKOFF_SECONDS) - 1)]
        self.restarts += 1
        log.warning("model process died (exit code %s); restarting in %.0f s",
                    self.process.exitcode, delay)
        # Its queue stays open until the restart: what it wrote before dying still shows.
        self._restart_at = now + delay
        self._drained = self._interrupt_reported = False
        return True

    def stop(self) -> None:
        self.process.stop()


def _main(config: Config, tokens: mp.Queue, status: mp.Queue, stop, log_level: int,
          first_pass_id: int = 0) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s: %(message)s")
    from .errors import PermanentError
    from .generator import load_generator
    from .model_store import ensure_converted, progress_log, resolve

    try:
        started = time.monotonic()
        source = resolve(config.model, config.base_dir)
        ensure_converted(source, log=progress_log)
        generator = load_generator(source, config.model, config.text)
        status.put(Status("generator", "ready",
                          f"{generator.label} loaded in {time.monotonic() - started:.1f} s",
                          time.monotonic()))
    except PermanentError as e:
        status.put(Status("generator", "error", str(e), time.monotonic()))
        return
    tokens.cancel_join_thread()   # on exit, do not wait for the parent to drain the queue
    parent = mp.parent_process()
    for pass_id in itertools.count(first_pass_id):
        for event in generator.write_pass(pass_id):
            while True:
                if stop.is_set() or (parent is not None and not parent.is_alive()):
                    return
                try:
                    tokens.put(event, timeout=0.2)
                    break
                except queue.Full:
                    continue
