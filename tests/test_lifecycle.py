"""The shared life of a child process: its handle, and the restart schedule of its supervisor."""

from __future__ import annotations

import logging

from permanent.lifecycle import SPAWN, Backoff, ChildProcess, Supervisor


def _exit_with(code: int) -> None:
    raise SystemExit(code)


class FakeChild:
    """Stands in for a ChildProcess: no interpreter to spawn."""

    count = 0

    def __init__(self):
        FakeChild.count += 1
        self.pid = None

    def start(self):
        self.pid = 1000 + FakeChild.count
        return self


class Restarting(Supervisor):
    def __init__(self):
        super().__init__("test", FakeChild(), logging.getLogger("permanent.test"))

    def _next_process(self):
        return FakeChild().start()


def test_a_child_process_reports_its_pid_and_exit_code_and_closes_its_queues():
    commands = SPAWN.Queue(maxsize=4)
    child = ChildProcess(_exit_with, "permanent-test", (3,), queues=(commands,))
    assert child.pid is None and child.exitcode is None
    child.start()
    child._process.join(timeout=30)
    assert child.pid is not None and not child.is_alive() and child.exitcode == 3
    child.close_queues()


def test_a_crash_restarts_after_the_backoff_and_logs_once(caplog):
    caplog.set_level(logging.INFO, logger="permanent.test")
    supervisor = Restarting().start()
    first = supervisor.pid
    assert not supervisor.restart_when_due(0.0)   # nothing pending

    supervisor.crashed(10.0, "died (exit code -9)")
    assert supervisor.restart_pending
    assert supervisor.restart_when_due(10.0 + Backoff.STEPS[0] / 2)   # still waiting
    assert supervisor.pid == first
    assert supervisor.restart_when_due(10.0 + Backoff.STEPS[0])       # replaced now
    assert supervisor.pid != first and not supervisor.restart_pending

    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["test process died (exit code -9); restarting in 1 s",
                        f"test process restarted (pid {supervisor.pid})"]


def test_crashes_in_a_row_wait_longer():
    supervisor = Restarting().start()
    waits = []
    now = 5.0
    for _ in range(3):
        supervisor.crashed(now, "died")
        waits.append(supervisor._restart_at - now)
        now = supervisor._restart_at
        supervisor.restart_when_due(now)
    assert waits == list(Backoff.STEPS[:3])
