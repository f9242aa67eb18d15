"""The server when it writes, the embedded model (or patience) when it cannot.

With `model.fallback: embedded` the small model is loaded in the background from the
start, so a server that dies mid-pass is replaced at the next pass, not after a load.
The server is asked again after waits that grow (`lifecycle.Backoff`), and written from
again as soon as it answers.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable, Iterator, Optional

from ...config import TextConfig
from ...events import TokenEvent
from ...lifecycle import Backoff
from .generator import ServerFault, ServerGenerator

log = logging.getLogger("permanent.server")

WAIT_SLICE_SECONDS = 2.0   # a waiting model still returns often enough to show it is alive


class ServerWithFallback:
    """A `TextGenerator` that writes from the server and falls back when it fails."""

    def __init__(self, server: ServerGenerator, fallback: str,
                 load_embedded: Callable[[TextConfig], object]):
        self.server = server
        self.fallback = fallback
        self.label = server.label
        self.runtime = f"{server.runtime}; fallback: {fallback}"
        self.voice = server.voice
        self.text = server.text
        self._backoff = Backoff()
        self._retry_at: Optional[float] = None   # None: the server is in use
        self._failed_at: Optional[float] = None  # when it last failed, until the stand-in writes
        self._embedded = None
        self._embedded_error: Optional[Exception] = None
        self.progress = lambda: None   # set by the process; the stand-in's drafts call it
        self._loaded = threading.Event()
        if fallback == "embedded":
            threading.Thread(target=self._load, args=(load_embedded,), daemon=True,
                             name="permanent-fallback-load").start()
        try:
            known = server.probe()
            log.info("inference server at %s serves %s", server.url, known)
            self._backoff.running_since(time.monotonic())
        except ServerFault as e:
            self._server_failed(e)

    @property
    def tokens_sampled(self) -> int:
        embedded = self._embedded.tokens_sampled if self._embedded is not None else 0
        return self.server.tokens_sampled + embedded

    @property
    def tokens_shown(self) -> int:
        embedded = self._embedded.tokens_shown if self._embedded is not None else 0
        return self.server.tokens_shown + embedded

    def keep_warm(self) -> None:
        """The stand-in loads in the background and keeps no warm start of its own."""

    def _load(self, load_embedded) -> None:
        try:
            embedded = load_embedded(self.text)
            embedded.progress = lambda: self.progress()
            self._embedded = embedded
        except Exception as e:   # reported when the fallback is needed, not before
            self._embedded_error = e
        finally:
            self._loaded.set()

    def update_text(self, text: TextConfig) -> None:
        self.text = text
        self.server.update_text(text)
        if self._embedded is not None:
            self._embedded.update_text(text)

    def _server_failed(self, fault: ServerFault) -> None:
        now = self._failed_at = time.monotonic()
        delay = self._backoff.delay(now)
        self._retry_at = now + delay
        instead = "the embedded model writes" if self.fallback == "embedded" else "the piece waits"
        log.warning("inference server: %s Meanwhile %s (model.fallback); asking again in %.0f s",
                    fault, instead, delay)

    def _server_due(self) -> bool:
        if self._retry_at is None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            self.server.probe()
        except ServerFault as e:
            self._server_failed(e)
            return False
        log.info("inference server at %s answers again; writing from it", self.server.url)
        self._retry_at = None
        self._backoff.running_since(time.monotonic())
        return True

    def write_pass(self, pass_id: int) -> Iterator[TokenEvent]:
        if self._server_due():
            wrote = False
            for event in self.server.write_pass(pass_id):
                wrote = True
                yield event
            if self.server.fault is None:
                return
            self._server_failed(self.server.fault)
            if wrote:
                return   # the cut pass fades as it stands; the next one comes from the fallback
        yield from self._write_instead(pass_id)

    def _write_instead(self, pass_id: int) -> Iterator[TokenEvent]:
        if self.fallback == "wait":
            time.sleep(max(0.0, min(WAIT_SLICE_SECONDS, self._retry_at - time.monotonic())))
            return
        self._loaded.wait()
        if self._embedded is None:
            raise self._embedded_error
        if self._embedded.text != self.text:
            self._embedded.update_text(self.text)
        for index, event in enumerate(self._embedded.write_pass(pass_id)):
            if index == 0 and self._failed_at is not None:
                log.info("the embedded model wrote its first token %.2f s after the server "
                         "failed", time.monotonic() - self._failed_at)
                self._failed_at = None
            yield event


def embedded_fallback_settings(model_settings):
    """The settings for the embedded model that stands in for a server."""
    return dataclasses.replace(model_settings, name="embedded", server_url=None,
                               server_model=None)
