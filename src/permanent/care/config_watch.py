"""Edits to config.yaml while the piece runs: noticed, validated, handed over whole."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Optional

from ..config import Config, load_config
from ..errors import PermanentError

log = logging.getLogger("permanent")


class ConfigWatcher:
    """Polls the file's modification time; a bad edit is reported once and ignored."""

    POLL_SECONDS = 0.25   # a stat() call: cheap, so an edit is seen at once

    def __init__(self, path: Path, check: Callable[[Config], object] = lambda config: None):
        self.path = Path(path)
        self.check = check   # what else must hold (the preset loads); raises PermanentError
        self._seen = self._stamp()
        self._next_poll = 0.0

    def _stamp(self):
        try:
            info = os.stat(self.path)
            return info.st_mtime_ns, info.st_size
        except OSError:
            return None

    def poll(self, now: float) -> Optional[Config]:
        """A new, valid Config when the file changed since the last look; else None."""
        if now < self._next_poll:
            return None
        self._next_poll = now + self.POLL_SECONDS
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return None
        self._seen = stamp
        try:
            config = load_config(self.path)
            self.check(config)
        except PermanentError as e:
            log.warning("config edit ignored, still running on the last good settings: %s", e)
            return None
        except Exception as e:   # noqa: BLE001 - no edit, however broken, may stop the piece
            log.warning("config edit ignored, still running on the last good settings: "
                        "%s could not be read (%s: %s)", self.path, type(e).__name__, e)
            return None
        log.info("config.yaml changed: the new settings apply from the next pass")
        return config
