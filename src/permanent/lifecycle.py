"""How each process of the piece lives: a child dies with its parent, gives freed memory
back to the system, and when it crashes is started again after waits that grow; every
process leaves at once when it is done.

Both the hum's process and the model's use these; neither knows about the other.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import multiprocessing.util
import os
import signal
import sys
from typing import NoReturn


class Backoff:
    """Waits that grow with each failure, and start afresh after a long healthy run."""

    STEPS = (1.0, 2.0, 5.0, 15.0, 60.0)
    HEALTHY_SECONDS = 600.0

    def __init__(self):
        self.failures = 0
        self.started = 0.0

    def running_since(self, now: float) -> None:
        self.started = now

    def delay(self, now: float) -> float:
        if now - self.started > self.HEALTHY_SECONDS:
            self.failures = 0
        delay = self.STEPS[min(self.failures, len(self.STEPS) - 1)]
        self.failures += 1
        return delay


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def release_freed_memory() -> None:
    """Hand memory that Python has freed back to the system. glibc keeps freed blocks in
    its arenas: without this the model process stayed about 280 MiB larger after packing
    its weights, and a first run that converts the model peaked higher when loading it."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            _libc().malloc_trim(0)
        except (OSError, AttributeError):   # a C library without malloc_trim (musl)
            pass


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent dies, however it dies.

    A child that outlives the piece would keep humming or computing with nobody to
    stop it (a screensaver host that kills its hack abruptly, a kill -9).
    """
    if not sys.platform.startswith("linux"):
        return
    PR_SET_PDEATHSIG = 1
    _libc().prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() == 1:   # the parent died before we asked
        os.kill(os.getpid(), sig)


SYS_PROCESS_MRELEASE = 448   # the same number on every Linux architecture


def kill_and_reap(process) -> None:
    """SIGKILL a child process (a multiprocessing.Process) and free its memory from here.

    A killed process frees its memory itself, at its own priority: the model runs at
    nice 19, and on a core shared with a busy process its 600 MB took 1.6-2.2 s to go.
    process_mrelease (Linux 5.15) frees them in the caller's time instead: 0.05-0.3 s.
    Without it (an older kernel, another system) this is a plain kill.
    """
    if not hasattr(os, "pidfd_open"):
        process.kill()
        return
    try:
        pidfd = os.pidfd_open(process.pid)
    except OSError:   # already gone
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        _libc().syscall(SYS_PROCESS_MRELEASE, pidfd, 0)   # may fail: then it frees its own
    except OSError:
        pass
    finally:
        os.close(pidfd)


def exit_now(code: int) -> NoReturn:
    """Leave this process at once, for a process that has closed everything it owns.

    The interpreter's own exit tears down every module and runs every atexit handler
    (pygame's quit among them: SDL again, on a window a screensaver host may have
    destroyed). That is little CPU, but a hack runs niced, and on a busy core it took
    0.45 s after `stopped` here, over a second on a slower machine. What must still
    happen is done first: multiprocessing's finalizers (queue threads, and the semaphores
    the resource tracker would otherwise report as leaked) and the logs' last lines.
    """
    multiprocessing.util._exit_function()   # what its own atexit hook would have run
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe or stream: nothing left to say
            pass
    os._exit(code)
