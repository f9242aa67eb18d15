"""How each process of the piece lives: a child dies with its parent, gives freed memory
back to the system, and when it crashes is started again after waits that grow; every
process leaves at once when it is done.

Both the hum's process and the model's use these: `ChildProcess` for the parent's handle
on one child, `Supervisor` for keeping one running. Neither knows about the other.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import functools
import gc
import logging
import multiprocessing.util
import os
import queue
import signal
import sys
import time
from typing import Callable, NoReturn, Optional

# Children start in a clean interpreter: no inherited pygame or torch state.
SPAWN = multiprocessing.get_context("spawn")
# A multiprocessing queue's timed wait ends at a deadline on the wall clock, which an NTP
# correction or a clock set by hand moves: set back an hour, such a wait lasts an hour.
# Waits for room in a queue look again after this long instead, on the monotonic clock.
ROOM_POLL_SECONDS = 0.02


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


class RestartLimit:
    """How many crashes within how long a role allows before it stops restarting a
    process: a child that dies again and again (for want of memory, say) would otherwise
    take the machine's time and memory from what still works."""

    def __init__(self, crashes: int = 5, seconds: float = 600.0):
        self.crashes, self.seconds = crashes, seconds
        self._times: collections.deque = collections.deque(maxlen=crashes)

    def reached(self, now: float) -> bool:
        """Count a crash at `now`; True when it is the last one allowed."""
        self._times.append(now)
        return len(self._times) == self.crashes and now - self._times[0] <= self.seconds

    def reset(self) -> None:
        self._times.clear()


class LatestOfEach:
    """Commands to a child through its bounded queue, of which none is lost: while the
    queue is full, each kind's newest value waits here, replacing an older one of that
    kind, and goes as soon as there is room. Kinds go in the order of their newest
    sending, so a stop sent last still arrives last."""

    def __init__(self, commands):
        self._commands = commands
        self._waiting: dict[str, object] = {}

    def send(self, kind: str, value) -> None:
        self._waiting.pop(kind, None)
        self._waiting[kind] = value
        self.flush()

    def flush(self, timeout: float = 0.0) -> bool:
        """Put what waits into the queue, waiting up to `timeout` for room; True when
        nothing is left waiting."""
        deadline = time.monotonic() + timeout
        while self._waiting:
            kind, value = next(iter(self._waiting.items()))
            try:
                self._commands.put_nowait((kind, value))
            except queue.Full:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(ROOM_POLL_SECONDS)
                continue
            del self._waiting[kind]
        return True


class ChildProcess:
    """The parent's handle on one child process of the piece, started in a clean interpreter.

    It owns the queues it is given (made with `SPAWN`): `close_queues` closes them without
    waiting for anything left in them, once the child is gone.
    """

    def __init__(self, target: Callable, name: str, args: tuple, queues: tuple = ()):
        self._queues = queues
        self._process = SPAWN.Process(target=target, name=name, daemon=True, args=args)

    def start(self):
        self._process.start()
        return self

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid   # None until started

    @property
    def exitcode(self) -> Optional[int]:
        return self._process.exitcode

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def close_queues(self) -> None:
        for q in self._queues:
            q.close()
            q.cancel_join_thread()   # what the child left unread is not worth a wait


class Supervisor:
    """Keeps one child process running: after a crash, a new one replaces it once a
    `Backoff` wait is over. What counts as a crash, and what a new process needs, is the
    role's own: it calls `crashed` and gives `_next_process`."""

    def __init__(self, name: str, process: ChildProcess, log: logging.Logger,
                 limit: Optional[RestartLimit] = None):
        self.name = name   # how the log lines call it: "hum", "model"
        self.process = process
        self._log = log
        self._backoff = Backoff()
        self._limit = limit   # None: restarted however often it dies
        self._restart_at: Optional[float] = None
        self._quiet = False   # the pending restart is a quiet retry
        self.given_up = False   # the limit was reached: no more restarts until `try_again`
        self.restarts = 0       # processes started after a crash or hang, for the status page

    def start(self):
        self.process.start()
        self._backoff.running_since(time.monotonic())
        return self

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid

    @property
    def restart_pending(self) -> bool:
        return self._restart_at is not None

    def crashed(self, now: float, cause: str, quiet: bool = False) -> None:
        """The process died or hung (`cause` says which, for the log): restart it after the
        next wait of the backoff, or, past the role's `RestartLimit`, never. `quiet` keeps
        this and the restart out of the log (debug only): for a role that retries while
        something it needs is away, and has said once."""
        if self._limit is not None and self._limit.reached(now):
            self.given_up = True
            self._restart_at = None
            self._log.error("%s process %s: %d failures in %.0f minutes, so %s", self.name,
                            cause, self._limit.crashes, self._limit.seconds / 60,
                            self._giving_up())
            return
        delay = self._backoff.delay(now)
        self._quiet = quiet
        self._log.log(logging.DEBUG if quiet else logging.WARNING,
                      "%s process %s; restarting in %.0f s", self.name, cause, delay)
        self._restart_at = now + delay

    def restart_now(self, now: float) -> None:
        """A pending restart is due at once: what its wait was for is back."""
        if self._restart_at is not None:
            self._restart_at = min(self._restart_at, now)

    def try_again(self, now: float) -> None:
        """The role has started a new process after a change that may end the crashes (a
        smaller model): they are counted afresh, and no restart is pending."""
        self.given_up = False
        self._restart_at = None
        self._backoff = Backoff()
        self._backoff.running_since(now)
        if self._limit is not None:
            self._limit.reset()

    def _giving_up(self) -> str:
        """What the log says when the limit is reached: what now, and what to fix."""
        return f"the {self.name} process is not started again"

    def restart_when_due(self, now: float) -> bool:
        """While a restart is pending, True, and once its wait is over the new process
        replaces the old; False when none is pending."""
        if self._restart_at is None:
            return False
        if now >= self._restart_at:
            self._restart_at = None
            self.process = self._next_process()
            self.restarts += 1
            self._backoff.running_since(now)
            self._log.log(logging.DEBUG if self._quiet else logging.INFO,
                          "%s process restarted (pid %s)", self.name, self.process.pid)
        return True

    def _next_process(self) -> ChildProcess:
        """The started process that replaces one that crashed; the old one is the role's to end."""
        raise NotImplementedError


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def release_freed_memory() -> None:
    """Hand memory that Python has freed back to the system. glibc keeps freed blocks in
    its arenas: without this the model process stays hundreds of MiB larger after packing
    its weights, and a first run that converts the model peaks higher when loading it."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Give the C heap's free pages back (no collector pass, which is slow on a big heap)."""
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
    nice 19, and on a core shared with a busy process its memory takes seconds to go.
    process_mrelease (Linux 5.15) frees it in the caller's time instead, at once.
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


def _reap_resource_tracker(timeout: float) -> None:
    """End multiprocessing's resource tracker, where this process started it, and reap it.

    It leaves once every process holding its pipe has closed it, so on its own only after
    this one has exited: an orphan then, for init to reap when it will (a zombie for good
    where init never reaps, as in a container), and to a screensaver host a hack that
    outlives its stop. Closing the pipe first lets it leave while this process waits; a
    tracker that does not (a child still holds the pipe) is left to leave on its own."""
    from multiprocessing import resource_tracker

    tracker = resource_tracker._resource_tracker
    with tracker._lock:   # as its own _stop does, without that one's unbounded wait
        pid, fd = tracker._pid, tracker._fd
        if pid is None or fd is None:   # none started here: a child shares its parent's
            return
        tracker._pid = tracker._fd = None
        os.close(fd)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            return
        if time.monotonic() > deadline:
            return
        time.sleep(0.002)


def exit_now(code: int) -> NoReturn:
    """Leave this process at once, for a process that has closed everything it owns.

    The interpreter's own exit tears down every module and runs every atexit handler
    (pygame's quit among them: SDL again, on a window a screensaver host may have
    destroyed). That is little CPU, but a hack runs niced, and on a busy core it can take
    longer than a screensaver host waits. What must still
    happen is done first: multiprocessing's finalizers (queue threads, and the semaphores
    the resource tracker would otherwise report as leaked), the tracker's own end, and the
    logs' last lines.
    """
    multiprocessing.util._exit_function()   # what its own atexit hook would have run
    _reap_resource_tracker(timeout=0.2)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe or stream: nothing left to say
            pass
    os._exit(code)
