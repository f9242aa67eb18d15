"""Every finished pass, kept: one JSON line each, in files that rotate at a fixed size.

Rotation is `logging.handlers.RotatingFileHandler`'s; this module adds what a gallery
needs around it: an archive that cannot be written (read-only disk, full disk) is
reported once and the piece carries on.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import time
from pathlib import Path
from typing import Iterator

import platformdirs

log = logging.getLogger("permanent.archive")


def default_path() -> Path:
    return Path(platformdirs.user_data_dir("permanent")) / "passes.jsonl"


class _Handler(logging.handlers.RotatingFileHandler):
    def __init__(self, owner: "PassArchive", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner = owner

    def handleError(self, record) -> None:   # noqa: N802 (logging's name)
        self.owner.failed("cannot write to the archive")


class PassArchive:
    def __init__(self, path: Path, max_bytes: int, backups: int):
        self.path = Path(path)
        self._reported = False
        self._logger = logging.getLogger(f"permanent.archive.file.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handler = _Handler(self, self.path, maxBytes=max_bytes, backupCount=backups,
                                     encoding="utf-8", delay=True)
            self._handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(self._handler)
        except OSError as e:
            self.failed(f"cannot create the archive ({e})")

    def failed(self, why: str) -> None:
        if not self._reported:   # once: a full disk must not flood the log as well
            log.warning("%s at %s; the piece goes on without archiving passes", why, self.path)
            self._reported = True

    def append(self, record: dict) -> None:
        if self._handler is None:
            return
        self._logger.info(json.dumps(record, ensure_ascii=False))

    def close(self) -> None:
        if self._handler is not None:
            self._logger.removeHandler(self._handler)
            try:
                self._handler.close()
            except OSError:
                self.failed("cannot write to the archive")   # the last flush, on a full disk


def pass_record(pass_id: int, model: str, prompt: str, tokens: list) -> dict:
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pass": pass_id, "model": model,
            "prompt": prompt, "text": "".join(t.text for t in tokens),
            "entropy_bits": [round(t.entropy_bits, 3) for t in tokens]}


def recent(path: Path, count: int) -> list[dict]:
    """The last `count` passes, oldest first, across rotated files."""
    files = sorted(path.parent.glob(path.name + ".*"), key=lambda p: int(p.suffix[1:]),
                   reverse=True) + [path]
    passes: list[dict] = []
    for file in files:
        if file.is_file():
            passes.extend(_read(file))
    return passes[-count:] if count else passes


def _read(file: Path) -> Iterator[dict]:
    with open(file, encoding="utf-8") as lines:
        for line in lines:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue   # a line cut short by a power cut: skip it, keep the rest
