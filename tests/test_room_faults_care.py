"""Faults of a real room that care must survive: a disk that fills (a real tmpfs), a wall
clock that jumps (NTP, daylight saving), and a model killed for want of memory (a real
memory cgroup). The whole piece on a disk that fills is in test_care, beside the archive's
other tests. The tests of a running piece print how long it took to recover."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from permanent.lifecycle import Backoff

from conftest import REPO, every_line_parses, fill, small_disk
from test_care import QUICK
from test_live_paths import screenshot
from test_piece import Running, family, sink_inputs

PAGE = os.sysconf("SC_PAGE_SIZE")


# The disk fills.

def test_an_archive_on_a_disk_that_fills_keeps_only_whole_lines(tmp_path, caplog):
    """A disk with one page left: the line that does not fit is not left half-written,
    when there is room again it is said once, and a piece stopped while the disk was
    full leaves nothing torn for the next start to write after."""
    from permanent.care.archive import PassArchive, pass_record
    from permanent.events import TokenEvent

    caplog.set_level(logging.INFO)
    words = [TokenEvent(0, i, "word ", 1.5, False) for i in range(60)]   # ~700 bytes a pass
    with small_disk(tmp_path / "disk", 1) as disk:
        path = disk / "passes.jsonl"
        passes_in = lambda: [record["pass"] for record in every_line_parses(path)]
        filler = fill(disk, leave=PAGE)
        archive = PassArchive(path, max_bytes=10**6, backups=3)
        for n in range(12):
            archive.append(pass_record(n, "m", "p", words))
        written = passes_in()   # as `permanent archive` would read it now
        assert 0 < len(written) < 12 and written == list(range(len(written)))
        filler.unlink()
        archive.append(pass_record(12, "m", "p", words))   # room again: kept at once
        assert passes_in() == written + [12]

        filler = fill(disk, leave=PAGE)
        for n in range(13, 25):
            archive.append(pass_record(n, "m", "p", words))
        more = passes_in()[len(written) + 1:]
        archive.close()                       # the piece stops with the disk still full
        filler.unlink()
        after = PassArchive(path, max_bytes=10**6, backups=3)   # ... and starts again
        after.append(pass_record(25, "m", "p", words))
        after.close()
        kept = passes_in()
    assert more and kept == written + [12] + more + [25], kept
    messages = [r.getMessage() for r in caplog.records if "archive" in r.getMessage()]
    assert [m.split(" at ")[0] for m in messages] == [
        "cannot write to the archive", "writing to the archive", "cannot write to the archive"]
    assert "No space left on device" in messages[0] and "without archiving" in messages[0]


def test_the_log_file_on_a_disk_that_fills_says_so_once_and_again_when_it_resumes(
        tmp_path, capfd):
    from permanent.cli import _log_to_file
    from permanent.config import Config

    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    root.setLevel(logging.INFO)
    stderr = logging.StreamHandler(sys.stderr)
    root.addHandler(stderr)
    try:
        with small_disk(tmp_path / "disk", 1) as disk:
            path = disk / "log" / "permanent.log"
            config = Config()
            config = config.replace(care=dataclasses.replace(config.care, log_file=str(path)))
            _log_to_file(config)
            filler = fill(disk, leave=PAGE)
            for n in range(200):   # some 12 KiB: three times the room
                logging.getLogger("permanent.test").info("line %d of a full disk", n)
            filler.unlink()
            logging.getLogger("permanent.test").info("line 200, with room again")
            lines = path.read_text().splitlines()
    finally:
        for handler in set(root.handlers) - set(before):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    said = capfd.readouterr().err
    assert "Logging error" not in said and "Traceback" not in said, said[:2000]
    assert said.count("cannot write to the log file") == 1, said[-2000:]
    assert said.count("writing to the log file") == 1
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} permanent", line)
               and line.endswith(("disk", "again", "written")) for line in lines), lines
    assert lines[-2].endswith("with room again") and "writing to the log file" in lines[-1]


@pytest.mark.slow
def test_a_warm_start_that_cannot_be_written_leaves_nothing_torn(tiny_model, tmp_path,
                                                                 monkeypatch, caplog):
    """The model process keeps a warm start after its first pass. On a full disk that must
    cost the next start its time and nothing else: no crash, no half-written file left
    to fill the disk or to be read, and a file cut short later is refused, not loaded."""
    from permanent.config import Config, ModelConfig
    from permanent.model.local import warm_start
    from permanent.model.local.generator import load_generator
    from permanent.model.local.store import resolve

    settings = ModelConfig(name=str(tiny_model))
    text = Config().text
    with small_disk(tmp_path / "disk", 32) as disk:
        folder = disk / "warm"
        monkeypatch.setattr(warm_start, "_folder", lambda: folder)

        def load_and_keep():
            generator = load_generator(resolve(settings), settings, text)
            "".join(e.text for e in generator.write_pass(0))
            generator.keep_warm()
            return generator

        filler = fill(disk, leave=64 * 1024)
        assert "warm start" not in load_and_keep().runtime   # no crash: it said why instead
        assert "could not keep a warm start" in caplog.text
        assert list(folder.iterdir()) == [], list(folder.iterdir())   # nothing left behind
        filler.unlink()
        load_and_keep()
        kept = next(folder.glob("*.safetensors"))
        assert load_generator(resolve(settings), settings, text).runtime.endswith("(warm start)")
        data = kept.read_bytes()
        print(f"warm start of the tiny model: {len(data) / 2**20:.1f} MiB")
        for cut in (len(data) - 1, len(data) // 2):   # its last byte missing, or half of it
            kept.write_bytes(data[:cut])
            caplog.clear()
            assert "warm start" not in load_generator(resolve(settings), settings,
                                                      text).runtime
            assert "unreadable" in caplog.text


# The wall clock jumps.

STEADY = """\
text:
  min_tokens: 400
  max_tokens: 400
pacing:
  tokens_per_second: 8
  jitter: 0
  comma_pause_seconds: 0
  sentence_pause_seconds: 0
  line_break_pause_seconds: 0
  uncertainty_pause_seconds_per_bit: 0
  hold_seconds: 0.5
  fade_seconds: 0.5
  gap_seconds: 0.5
display:
  fps: 60
hours:
  enabled: true
  opens: '10:00'
  closes: '18:00'
  transition_seconds: 0.5
"""
# Seconds after the first token when the wall clock jumps, and the hours it is then
# ahead: 16:50, 17:50, 18:50 (closed), 17:50 and 16:50 again.
JUMP_AT = (3.0, 6.0, 9.0, 13.0)
AHEAD = (0, 1, 2, 1, 0)
OVER_AT = 15.5


@pytest.mark.slow
def test_jumps_of_the_wall_clock_move_the_hours_and_not_the_pace(tmp_path, tiny_model, caplog,
                                                                 monkeypatch):
    """The piece in this process, on a wall clock that an NTP correction or a change of
    daylight saving moves an hour at a time, forward and back, while the monotonic clock
    runs on. A pass outlasts each open stretch, so the jumps that stay within opening
    hours land in the middle of one."""
    from permanent.app import Piece
    from permanent.config import load_config

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("PULSE_SERVER", "unix:/nonexistent/socket")
    path = tmp_path / "config.yaml"
    path.write_text(STEADY + f"model:\n  name: {tiny_model}\n")
    shown: list[float] = []
    reveal = Piece.reveal
    monkeypatch.setattr(Piece, "reveal", lambda self, token, due, now: (
        shown.append(now), reveal(self, token, due, now)))
    started = time.monotonic()
    base = dt.datetime(2026, 11, 27, 16, 50)   # a Friday afternoon, open till 18:00

    def wall_clock():   # read by the opening hours, once a second
        now = time.monotonic()
        since = now - shown[0] if shown else -1.0
        if since > OVER_AT:
            piece.request_stop("the test is over")
        ahead = AHEAD[sum(since >= t for t in JUMP_AT)]
        return base + dt.timedelta(seconds=now - started, hours=ahead)

    caplog.set_level(logging.INFO)
    wall_at_start = time.time() - started   # the machine's own clock does not jump here
    piece = Piece(load_config(path), windowed=True, duration=120, wall_clock=wall_clock)
    assert piece.run() == 0
    assert any("stopping (the test is over)" in r.getMessage() for r in caplog.records)
    first = shown[0]
    at = lambda pattern: [r.created - wall_at_start - first for r in caplog.records
                          if re.search(pattern, r.getMessage())]
    closing, opening = at(r"^closing until"), at(r"^opening")
    shown = [t - first for t in shown]
    # Closed within a second of the jump past 18:00; open again after the jump back.
    assert len(closing) == 1 and len(opening) == 1, (closing, opening)
    close_at, open_at = JUMP_AT[1], JUMP_AT[2]
    print(f"wall clock: closed {closing[0] - close_at:.2f} s after the jump past closing "
          f"time, open {opening[0] - open_at:.2f} s after the jump back")
    assert close_at <= closing[0] + 0.1 and closing[0] < close_at + 1.5, closing
    assert open_at <= opening[0] + 0.1 and opening[0] < open_at + 1.5, opening
    assert not [t for t in shown if closing[0] + 0.1 < t < opening[0]]
    # At the jumps within opening hours the pace holds: 8 tokens a second, neither a
    # stall (a clock set back an hour) nor a burst (the hour ahead caught up at once).
    for jump in (JUMP_AT[0], JUMP_AT[3]):
        around = [t for t in shown if jump - 1.5 <= t < jump + 1.5]
        gaps = np.diff(around)
        print(f"jump at {jump:.0f} s after the first token: {len(around)} tokens in 3 s, "
              f"longest gap {gaps.max():.3f} s")
        assert 20 <= len(around) <= 28 and gaps.max() < 0.5, around


def futex_waits_on_the_wall_clock(trace: str) -> list[str]:
    """The lines of an strace of futex calls whose timeout is a deadline on CLOCK_REALTIME
    (a wait that a clock set back stretches by as much)."""
    return [line for line in trace.splitlines()
            if "FUTEX_CLOCK_REALTIME" in line and "tv_sec=" in line]


@pytest.mark.slow
def test_no_wait_for_room_in_a_queue_is_on_the_wall_clock(tiny_model, tmp_path):
    """The model waits for the screen while its queue is full (a pass ahead, or all night
    while the piece is closed), and the piece waits for room in a child's queue when it
    stops. A multiprocessing queue's timed wait is a deadline on the wall clock: with the
    clock set back an hour, that wait lasts an hour, the model writes no heartbeat, and is
    restarted as hung. Traced here with strace, the system calls as the kernel sees them."""
    from permanent.config import load_config
    from permanent.events import Status
    from permanent.lifecycle import SPAWN
    from permanent.model.process import QUEUE_TOKENS, ModelSupervisor

    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  name: {tiny_model}\ntext:\n  min_tokens: 50\n")
    status = SPAWN.Queue()
    model = ModelSupervisor(load_config(config), status).start()
    try:
        news: Status = status.get(timeout=120)
        assert news.kind == "ready", news.message
        deadline = time.monotonic() + 60
        while model.process._tokens.qsize() < QUEUE_TOKENS and time.monotonic() < deadline:
            time.sleep(0.1)
        assert model.process._tokens.qsize() == QUEUE_TOKENS   # nobody reads: it waits
        traced = subprocess.run(["timeout", "-s", "INT", "2", "strace", "-p",
                                 str(model.pid), "-e", "trace=futex,clock_nanosleep"],
                                capture_output=True, text=True)
        quiet = time.monotonic() - model.process.heartbeat.value
    finally:
        model.stop()
    assert "attached" in traced.stderr, traced.stderr
    assert futex_waits_on_the_wall_clock(traced.stderr) == [], traced.stderr[-2000:]
    assert "CLOCK_MONOTONIC" in traced.stderr   # it waits, on the monotonic clock
    assert quiet < 1.0   # ... and says it is alive while it does

    flush = ("from permanent.lifecycle import SPAWN, LatestOfEach\n"
             "commands = SPAWN.Queue(maxsize=1)\ncommands.put(('token', 1.0))\n"
             "outbox = LatestOfEach(commands)\noutbox.send('stop', 0.5)\n"
             "print(outbox.flush(timeout=0.5))\n")
    traced = subprocess.run(["strace", "-f", "-e", "trace=futex", sys.executable, "-c", flush],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert traced.stdout.strip() == "False", traced.stderr[-2000:]   # no room came
    assert futex_waits_on_the_wall_clock(traced.stderr) == [], traced.stderr[-2000:]


# Memory pressure.

CGROUPS = Path("/sys/fs/cgroup")


@contextlib.contextmanager
def memory_limit(megabytes: int):
    """A memory cgroup that holds what is put in it to `megabytes`: more, and the kernel's
    OOM killer ends it. cgroup v1's memory controller where it is mounted (as on this
    project's machines), else v2's. Yields a function that puts a pid in, and one that
    reads how many the OOM killer has ended there."""
    v1 = (CGROUPS / "memory").is_dir()
    group = (CGROUPS / "memory" if v1 else CGROUPS) / f"permanent-test-{os.getpid()}"
    if not v1 and "memory" not in (CGROUPS / "cgroup.subtree_control").read_text():
        (CGROUPS / "cgroup.subtree_control").write_text("+memory")
    group.mkdir()
    try:
        limit, events = (("memory.limit_in_bytes", "memory.oom_control") if v1
                         else ("memory.max", "memory.events"))
        (group / limit).write_text(str(megabytes * 2**20))

        def hold(pid: int) -> None:
            (group / "cgroup.procs").write_text(str(pid))

        def oom_kills() -> int:
            return int(re.search(r"oom_kill (\d+)", (group / events).read_text())[1])

        yield hold, oom_kills
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (group / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.05)
        group.rmdir()


@pytest.mark.slow
def test_a_model_killed_for_want_of_memory_five_times_leaves_the_hum_alone(
        pulse_env, xvfb_env, tiny_model, tmp_path):
    """The model process is killed while it runs under a memory limit (SIGKILL, as the OOM
    killer sends), and each new one is put under a limit it cannot load within, so the
    kernel's OOM killer ends it for real. Restarted with backoff (1, 2, 5 and 15 s), the
    fifth death in ten minutes leaves the piece on the hum alone, the page faded, with one
    line that says why; an edit to the model's settings tries again."""
    config = tmp_path / "config.yaml"
    settings = QUICK + f"model:\n  name: {tiny_model}\n"
    config.write_text(settings)
    env = dict(pulse_env, DISPLAY=xvfb_env["DISPLAY"])
    env.pop("SDL_VIDEODRIVER", None)
    with memory_limit(64) as (hold, oom_kills):
        piece = Running(env, "--config", str(config), on_screen=True)   # fullscreen
        try:
            hum_pid = int(piece.wait_for(r"hum process (\d+), model process (\d+)")[1])
            model_pid = int(piece.wait_for(r"model process (\d+)")[1])
            loaded = float(piece.wait_for(r"model ready: .* loaded in ([\d.]+) s")[1])
            piece.wait_for(r"first token shown")
            hold(model_pid)
            os.kill(model_pid, signal.SIGKILL)
            killed = time.monotonic() - piece.started
            held = {model_pid}
            # The four waits of the backoff, and five starts at most as long as this one.
            deadline = time.monotonic() + sum(Backoff.STEPS[:4]) + 5 * loaded + 10.0
            while not piece.count(r"starts the model no more") and time.monotonic() < deadline:
                for _, line in list(piece.lines):
                    if (found := re.search(r"model process restarted \(pid (\d+)\)", line)):
                        pid = int(found[1])
                        if pid not in held:
                            held.add(pid)
                            hold(pid)   # it loads under 64 MiB: it cannot
                if piece.process.poll() is not None:
                    break
                time.sleep(0.02)
            gave_up = [t for t, line in piece.lines if "starts the model no more" in line]
            assert gave_up, piece.log
            deaths = piece.count(r"model process died \(exit code -9\)")
            assert deaths == 5 and piece.count(r"model process restarted") == 4, piece.log
            assert oom_kills() == 4, oom_kills()   # the restarted four: the kernel's doing
            time.sleep(3.0)   # what was shown fades (0.5 s here), and nothing starts again
            assert piece.count(r"model process restarted") == 4
            assert piece.count(r"restarting in") == 4   # the fifth death schedules nothing
            running = family(piece.process.pid)
            assert hum_pid in running and not running & held and len(running) == 3, running
            assert sink_inputs(pulse_env).strip()   # the hum plays on
            assert screenshot(env, tmp_path / "dark.png").max() == 0, "the page is not dark"

            tried = time.monotonic() - piece.started
            config.write_text(settings + "  threads: 1\n")   # another model setting
            piece.wait_for(r"model settings changed: loading", timeout=30)
            deadline = time.monotonic() + 60
            while piece.count(r"model ready") < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            ready = [t for t, line in piece.lines if "model ready" in line][-1]
            back = []
            while not back and time.monotonic() < deadline:
                back = [t for t, line in piece.lines if "shown '" in line and t > ready]
                time.sleep(0.1)
            assert back, piece.log
            assert piece.terminate() < 2.0 and piece.process.returncode == 0, piece.log
        finally:
            piece.kill()
    line = next(line for _, line in piece.lines if "starts the model no more" in line)
    print(f"memory: gave up {gave_up[0] - killed:.1f} s after the first kill, after 5 deaths; "
          f"text again {back[0] - tried:.1f} s after the edit to the model")
    assert "5 failures in 10 minutes" in line and "memory" in line and "model.name" in line
    assert "Traceback" not in piece.log
