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
    def __init__(self, config: Config, status: mp.Queue):
        self._tokens: mp.Queue = _CONTEXT.Queue(maxsize=QUEUE_TOKENS)
        self._stop = _CONTEXT.Event()
        self._process = _CONTEXT.Process(
            target=_main, name="permanent-model", daemon=True,
            args=(config, self._tokens, status, self._stop, logging.getLogger().level))

    def start(self) -> "GeneratorProcess":
        self._process.start()
        return self

    @property
    def pid(self):
        return self._process.pid

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


def _main(config: Config, tokens: mp.Queue, status: mp.Queue, stop, log_level: int) -> None:
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
    for pass_id in itertools.count():
        for event in generator.write_pass(pass_id):
            while True:
                if stop.is_set() or (parent is not None and not parent.is_alive()):
                    return
                try:
                    tokens.put(event, timeout=0.2)
                    break
                except queue.Full:
                    continue
