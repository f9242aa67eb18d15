"""Every finished pass, kept: one JSON line each, in files that rotate at a fixed size.

The file is a `LineFile`: an archive that cannot be written (read-only disk, full disk)
is reported once and the piece carries on; when there is room again it says so and
archives again, and no line is ever left torn.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterator

import platformdirs

from .line_file import LineFile

log = logging.getLogger("permanent.archive")


def default_path() -> Path:
    return Path(platformdirs.user_data_dir("permanent")) / "passes.jsonl"


class PassArchive:
    def __init__(self, path: Path, max_bytes: int, backups: int):
        self.path = Path(path)
        self._file = LineFile(self.path, max_bytes, backups, "the archive",
                              "the piece goes on without archiving passes", log)

    def append(self, record: dict) -> bool:
        """Keep one pass; False if it could not be written (already reported)."""
        return self._file.write(json.dumps(record, ensure_ascii=False))

    def close(self) -> None:
        self._file.close()


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
