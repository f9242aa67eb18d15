"""A file of whole lines that rotates at a fixed size and outlives a full disk: the
archive of passes and the log file are both kept this way.

Each line goes to the file in one write. A disk that fills takes part of a line and
refuses the rest; that part is cut back off, so a reader never meets a torn line, and
the next line (once there is room) starts on a line of its own. A file that cannot be
written is reported once, and once again when writing works again: a full disk must
not flood the log, and a technician reading it later should see when it ended. Lines
that come meanwhile are dropped (the log's still reach stderr).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path
from typing import Optional


# After a failure, writing is tried again once the disk has this much room.
RESUME_FREE_BYTES = 64 * 1024


class LineFile:
    """Appends lines to `path`; past `max_bytes` the file becomes `path.1` (and `.1`
    becomes `.2`, ... up to `backups`) and a new one is begun. `what` names the file in
    the log ("the archive"), `meanwhile` says what the piece does while it cannot write."""

    def __init__(self, path: Path, max_bytes: int, backups: int, what: str, meanwhile: str,
                 log: logging.Logger):
        self.path = Path(path)
        self.max_bytes, self.backups = max_bytes, backups
        self.what, self.meanwhile, self._log = what, meanwhile, log
        self.failing = False   # since the last failure, no line has been written
        self._fd: Optional[int] = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._failed(f"cannot create {what}", e)

    def write(self, line: str) -> bool:
        """Append `line` (a newline is added) whole, or not at all; True if it was."""
        if self.failing and not self._room_again():
            return False
        data = (line + "\n").encode("utf-8", "backslashreplace")
        try:
            fd, start = self._open(len(data))
            written = os.write(fd, data)
            if written < len(data):   # the disk filled mid-line: take the part back out
                self._cut_back(fd, start)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as e:
            self._close_fd()   # the next line opens the file afresh (it may be replaced)
            self._failed(f"cannot write to {self.what}", e)
            return False
        if self.failing:
            self.failing = False
            self._log.warning("writing to %s at %s again", self.what, self.path)
        return True

    def close(self) -> None:
        self._close_fd()

    def _room_again(self) -> bool:
        """After a failure, whether to try again: not while the disk is all but full. The
        part of a line cut back frees a page, in which the next short line would fit,
        and the one after fail again: the file would flap in the log between the two."""
        try:
            info = os.statvfs(self.path.parent)
        except OSError:
            return True   # let the write itself say what is wrong
        return info.f_bavail * info.f_frsize >= RESUME_FREE_BYTES

    def _open(self, incoming: int) -> tuple[int, int]:
        """The file to write `incoming` bytes to, and its size: a new one where they would
        take it past `max_bytes` (also one that the previous start left full)."""
        if self._fd is None:
            self._fd = self._open_fd()
        info = os.fstat(self._fd)
        if (self.max_bytes and self.backups and stat.S_ISREG(info.st_mode)
                and info.st_size and info.st_size + incoming > self.max_bytes):
            self._close_fd()
            self._rotate()
            self._fd = self._open_fd()
            return self._fd, 0
        return self._fd, info.st_size

    def _open_fd(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _rotate(self) -> None:
        """path.N-1 -> path.N, ..., path -> path.1; renames need no room on the disk."""
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    @staticmethod
    def _cut_back(fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError:   # not a regular file (/dev/full): nothing was kept to cut
            pass

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def _failed(self, doing: str, error: OSError) -> None:
        if self.failing:
            return
        # Set before logging: where this file is the log itself, the warning comes back
        # here, fails, and must not be reported again.
        self.failing = True
        reason = error.strerror or str(error)
        self._log.warning("%s at %s (%s); %s", doing, self.path, reason, self.meanwhile)


class LineFileHandler(logging.Handler):
    """A logging handler that writes each record as whole lines to a `LineFile`."""

    def __init__(self, path: Path, max_bytes: int, backups: int):
        super().__init__()
        self.file = LineFile(path, max_bytes, backups, "the log file",
                             "logging to stderr only until it can be written",
                             logging.getLogger("permanent"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:   # noqa: BLE001 - logging's own convention for a bad record
            self.handleError(record)
            return
        self.file.write(line)

    def close(self) -> None:
        self.file.close()
        super().close()
