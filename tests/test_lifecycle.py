"""The shared life of a child process: its handle, and the restart schedule of its supervisor."""

from __future__ import annotations

import logging

from permanent.lifecycle import SPAWN, Backoff, ChildProcess, RestartLimit, Supervisor


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
    def __init__(self, limit=None):
        super().__init__("test", FakeChild(), logging.getLogger("permanent.test"), limit)

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


def limited():
    """A supervisor that gives up, as the model's does (5 crashes in 10 minutes)."""
    return Restarting(RestartLimit(5, 600.0)).start()


def crash_and_restart(supervisor, now: float) -> float:
    """One crash at `now`, and the restart its backoff schedules; the time after it."""
    supervisor.crashed(now, "died (exit code -9)")
    if supervisor.restart_pending:
        now = supervisor._restart_at
        supervisor.restart_when_due(now)
    return now


def test_five_crashes_within_ten_minutes_stop_the_restarts_with_one_line(caplog):
    caplog.set_level(logging.INFO, logger="permanent.test")
    supervisor = limited()
    now = 100.0
    for _ in range(4):
        now = crash_and_restart(supervisor, now + 3.0)
    assert not supervisor.given_up
    supervisor.crashed(now + 3.0, "died (exit code -9)")   # the fifth, 38 s after the first
    assert supervisor.given_up and not supervisor.restart_pending
    assert not supervisor.restart_when_due(now + 1000.0)   # nothing is ever started again
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["test process died (exit code -9): 5 failures in 10 minutes, so the "
                      "test process is not started again"]
    supervisor.try_again(now + 1000.0)   # e.g. an edit to the model: counted afresh
    assert not supervisor.given_up
    for _ in range(4):
        now = crash_and_restart(supervisor, now + 1003.0)
    assert not supervisor.given_up


def test_crashes_spread_over_more_than_ten_minutes_are_restarted_for_ever():
    supervisor = limited()
    now = 0.0
    for _ in range(12):
        now = crash_and_restart(supervisor, now + 150.0)   # a crash every 2.5 minutes or so
        assert not supervisor.given_up and supervisor.pid is not None
