"""Unattended operation: faults injected into the real processes, and the piece carries on."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from permanent.config import HumConfig, load_config
from permanent.measure.audio_analysis import mono, read_wav, rms, window

from conftest import REPO, every_line_parses, fill, recording_the_hum, small_disk
from test_piece import Running, alive, sink_inputs

pytestmark = pytest.mark.slow

QUICK = """\
text:
  min_tokens: 8
  max_tokens: 20
pacing:
  tokens_per_second: 8
  uncertainty_pause_seconds_per_bit: 0
  hold_seconds: 0.5
  fade_seconds: 0.5
  gap_seconds: 0.5
"""


def test_a_killed_hum_comes_back_and_fades_in(pulse_env, embedded_model):
    piece = Running(pulse_env, "--windowed")
    try:
        hum_pid = int(piece.wait_for(r"hum process (\d+)")[1])
        piece.wait_for(r"hum playing")
        piece.wait_for(r"first token shown")
        os.kill(hum_pid, signal.SIGKILL)
        killed = time.monotonic() - piece.started
        piece.wait_for(r"hum process died \(exit code -9\); restarting in 1 s")
        new_pid = int(piece.wait_for(r"hum process restarted \(pid (\d+)\)")[1])
        assert new_pid != hum_pid and alive(new_pid)
        piece.wait_for(r"the hum is back on ", timeout=10)
        back = next(t for t, line in piece.lines if "the hum is back on " in line)
        print(f"hum back {back - killed:.2f} s after kill -9")
        assert back - killed < 5.0 and sink_inputs(pulse_env).strip()
        # The text never stopped: the next token comes within a pass's hold, fade and gap
        # (the shipped config's, which the piece runs on), and the drafts of a sentence,
        # of the last one shown.
        before = piece.count(r"shown '")
        pacing = load_config(REPO / "config.yaml").pacing
        quiet = pacing.hold_seconds + pacing.fade_seconds + pacing.gap_seconds + 10
        deadline = time.monotonic() + quiet
        while piece.count(r"shown '") <= before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert piece.count(r"shown '") > before, piece.log[-3000:]
        assert piece.terminate() < 2.0 and piece.process.returncode == 0, piece.log
    finally:
        piece.kill()


def test_a_hung_model_is_detected_and_restarted(tmp_path, embedded_model):
    config = tmp_path / "config.yaml"
    config.write_text(QUICK + "care:\n  hang_seconds: 3\n")
    env = dict(os.environ, PULSE_SERVER="unix:/nonexistent/socket")
    piece = Running(env, "--windowed", "--config", str(config))
    try:
        model_pid = int(piece.wait_for(r"model process (\d+)")[1])
        piece.wait_for(r"first token shown")
        os.kill(model_pid, signal.SIGSTOP)        # frozen: alive, but writing nothing
        stopped = time.monotonic() - piece.started
        found = piece.wait_for(r"model process hung: it wrote nothing for (\d+) s", timeout=30)
        assert 3 <= int(found[1]) <= 6
        piece.wait_for(r"model process restarted")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and piece.count("model ready") < 2:
            time.sleep(0.1)
        ready = [t for t, line in piece.lines if "model ready" in line][-1]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after = [t for t, line in piece.lines if "shown '" in line and t > ready]
            if after:
                break
            time.sleep(0.1)
        print(f"new tokens {after[0] - stopped:.1f} s after the model froze")
        assert not alive(model_pid)
        assert piece.terminate() < 2.0 and piece.process.returncode == 0, piece.log
    finally:
        piece.kill()


def test_config_edits_apply_at_the_next_pass_and_bad_ones_are_ignored(tmp_path, tiny_model):
    config = tmp_path / "config.yaml"
    base = QUICK.replace("tokens_per_second: 8", "tokens_per_second: 4") + \
        f"model:\n  name: {tiny_model}\n"
    config.write_text(base)
    env = dict(os.environ, PULSE_SERVER="unix:/nonexistent/socket")
    piece = Running(env, "--windowed", "--config", str(config))
    try:
        piece.wait_for(r"first token shown")
        time.sleep(1.5)
        config.write_text(base.replace("tokens_per_second: 4", "tokens_per_second: fast"))
        found = piece.wait_for(r"config edit ignored.*line (\d+): pacing.tokens_per_second")
        assert int(found[1]) == 1 + base.splitlines().index("  tokens_per_second: 4")
        time.sleep(1.5)
        assert piece.process.poll() is None
        config.write_text(base.replace("tokens_per_second: 4", "tokens_per_second: 40"))
        piece.wait_for(r"new settings in effect: pacing", timeout=30)
        changed_at = [t for t, line in piece.lines if "new settings in effect" in line][-1]
        piece.wait_for(r"pass \d+ ended", timeout=30)
        time.sleep(3)
        stamps = [t for t, line in piece.lines if "shown '" in line]
        before = [b - a for a, b in zip(stamps, stamps[1:]) if b < changed_at - 1]
        after = [b - a for a, b in zip(stamps, stamps[1:]) if a > changed_at + 0.5]
        median = lambda xs: sorted(xs)[len(xs) // 2]
        assert median(before) > 0.15 and median(after) < 0.08, (before, after)
        assert piece.count("model process restarted") == 0   # only the pace changed
        assert piece.terminate() < 2.0 and piece.process.returncode == 0, piece.log
    finally:
        piece.kill()


def test_opening_hours_close_and_reopen_on_an_injected_clock(tmp_path, tiny_model, caplog,
                                                             monkeypatch):
    """Run the piece in this process with a clock where each real second is a minute."""
    from permanent.app import Piece
    from permanent.config import load_config

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("PULSE_SERVER", "unix:/nonexistent/socket")
    path = tmp_path / "config.yaml"
    # Passes longer than the whole opening (300 tokens at 8 a second), so closing time
    # always finds one being written: the case this test is about.
    long_passes = QUICK.replace("min_tokens: 8", "min_tokens: 300").replace(
        "max_tokens: 20", "max_tokens: 300")
    path.write_text(long_passes + f"model:\n  name: {tiny_model}\n"
                    "hours:\n  enabled: true\n  opens: '10:00'\n  closes: '10:08'\n"
                    "  transition_seconds: 1\n")
    started = time.monotonic()
    base = dt.datetime(2026, 11, 27, 9, 57)          # a Friday, three minutes before opening
    clock = lambda: base + dt.timedelta(minutes=time.monotonic() - started)
    caplog.set_level(logging.DEBUG)
    code = Piece(load_config(path), windowed=True, duration=16, wall_clock=clock).run()
    assert code == 0
    events = [(r.created, r.getMessage()) for r in caplog.records]
    first = events[0][0]
    at = lambda pattern: [t - first for t, m in events if re.search(pattern, m)]
    closing, opening, shown = at(r"^closing until"), at(r"^opening"), at(r"^shown '")
    ended = at(r"^pass \d+ ended")
    assert len(closing) == 2 and len(opening) == 1, events
    assert closing[0] < 1.5                           # closed at launch (09:57)
    assert 2.5 < opening[0] < 4.5                     # 10:00 is three "minutes" in
    assert 10.5 < closing[1] < 12.5                   # 10:08
    assert shown and all(opening[0] < t < closing[1] + 0.2 for t in shown)
    # At closing the page fades at once, even mid-pass (its pass ends there).
    assert any(0 <= t - closing[1] < 0.2 for t in ended), (closing, ended)


def silent_tiny_piece(tmp_path, tiny_model, archive_file):
    """The tiny model at a quick pace, no sound, archiving into `archive_file`."""
    config = tmp_path / "config.yaml"
    config.write_text(QUICK + f"model:\n  name: {tiny_model}\ncare:\n  archive_file: {archive_file}\n")
    env = dict(os.environ, PULSE_SERVER="unix:/nonexistent/socket")
    return config, Running(env, "--windowed", "--config", str(config))


def wait_for_passes(piece, count, timeout=60):
    deadline = time.monotonic() + timeout
    while piece.count(r"pass \d+ ended") < count and time.monotonic() < deadline:
        time.sleep(0.2)
    assert piece.count(r"pass \d+ ended") >= count, piece.log[-3000:]


def test_a_disk_that_fills_is_reported_once_and_the_piece_writes_and_hums_on(
        pulse_env, tiny_model, tmp_path):
    """Log, archive and cache on one small real tmpfs, that fills while the piece runs and
    empties again: each file says once that it cannot be written and once that it can
    again, the warm start the model keeps after its first pass is not kept (and leaves
    nothing torn behind), and the text and the hum go on throughout."""
    with small_disk(tmp_path / "disk", 16) as disk:
        archive = disk / "archive" / "passes.jsonl"
        log_file = disk / "log" / "permanent.log"
        config = tmp_path / "config.yaml"
        quicker = QUICK.replace("tokens_per_second: 8", "tokens_per_second: 16")
        config.write_text(quicker + f"model:\n  name: {tiny_model}\ncare:\n"
                          f"  archive_file: {archive}\n  log_file: {log_file}\n")
        # Room for the log's and the archive's first lines, not for a warm start.
        first_filler = fill(disk, "filler-1", leave=256 * 1024)
        env = dict(pulse_env, XDG_CACHE_HOME=str(disk / "cache"))
        wav = tmp_path / "room.wav"
        with recording_the_hum(pulse_env, wav):
            recorded = time.monotonic()
            piece = Running(env, "--windowed", "--config", str(config))
            try:
                piece.wait_for(r"could not keep a warm start", timeout=120)
                wait_for_passes(piece, 1)
                playing = float(piece.wait_for(r"hum playing on .*, ([\d.]+) s after launch")[1])
                fade_in = HumConfig().fade_in_seconds
                time.sleep(max(0.0, playing + fade_in + 2.5 - (time.monotonic() - piece.started)))
                assert archive.read_bytes().count(b"\n") >= 1
                second_filler = fill(disk, "filler-2")
                full = time.monotonic() - piece.started
                shown = piece.count(r"shown '")
                wait_for_passes(piece, piece.count(r"pass \d+ ended") + 3)
                assert piece.count(r"shown '") > shown + 20   # writing on
                assert sink_inputs(pulse_env).strip()           # ... and humming
                roomy = time.monotonic() - piece.started
                second_filler.unlink()
                first_filler.unlink()
                piece.wait_for(r"writing to the archive at .* again", timeout=60)
                piece.wait_for(r"writing to the log file at .* again", timeout=60)
                resumed = [t for t, line in piece.lines if "writing to the archive" in line][0]
                wait_for_passes(piece, piece.count(r"pass \d+ ended") + 1)
                assert piece.terminate() < 2.0 and piece.process.returncode == 0, piece.log
            finally:
                piece.kill()
        passes = [record["pass"] for record in every_line_parses(archive)]
        log_lines = log_file.read_text().splitlines()
        warm_left = sorted(p.name for p in (disk / "cache").rglob("*")
                           if p.parent.name == "warm")
    print(f"full disk: archiving again {resumed - roomy:.2f} s after room returned "
          f"(the next pass's end); the disk was full for {roomy - full:.1f} s")
    assert piece.count(r"cannot write to the archive") == 1, piece.log
    assert piece.count(r"cannot write to the log file") == 1, piece.log
    assert piece.count(r"could not keep a warm start") == 1
    assert "Traceback" not in piece.log and "Logging error" not in piece.log
    assert piece.count(r"process died|process hung") == 0, piece.log
    assert passes == sorted(passes) and len(set(passes)) == len(passes)
    ended = [int(m[1]) for _, line in piece.lines if (m := re.search(r"pass (\d+) ended", line))]
    assert passes[-1] == ended[-1]   # the last pass shown was archived: archiving resumed
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line) for line in log_lines)
    assert warm_left == [], warm_left   # no torn warm start, no temporary left behind
    # The hum played on through the full disk: every second of it near the level before.
    signal_ = mono(read_wav(wav)[0])
    shift = piece.started - recorded   # the recording's time of the piece's launch
    level = lambda a, b: rms(window(signal_, 48000, a + shift, b + shift))
    before = level(full - 2.0, full)
    during = [level(t, t + 1.0) for t in np.arange(full, roomy - 1.0, 1.0)]
    print(f"hum level before the disk filled {before:.4f}; while full, lowest second "
          f"{min(during):.4f}")
    assert before > 1e-3 and min(during) > 0.3 * before, (before, during)


def test_passes_are_archived_and_shown_by_the_archive_command(tmp_path, tiny_model):
    archive = tmp_path / "passes.jsonl"
    config, piece = silent_tiny_piece(tmp_path, tiny_model, archive)
    try:
        wait_for_passes(piece, 2)
        piece.terminate()
    finally:
        piece.kill()
    lines = [json.loads(l) for l in archive.read_text().splitlines()]
    assert len(lines) >= 2 and lines[0]["model"] == str(tiny_model)
    assert lines[0]["text"] and len(lines[0]["entropy_bits"]) >= 1
    shown = subprocess.run([sys.executable, "-m", "permanent", "--config", str(config),
                            "archive", "-n", "1"], capture_output=True, text=True, cwd=REPO)
    assert shown.returncode == 0 and f"pass {lines[-1]['pass']}" in shown.stdout


def test_the_systemd_unit_verifies(tmp_path):
    assert shutil.which("systemd-analyze"), "CI installs systemd"
    unit = tmp_path / "permanent.service"
    unit.write_text((REPO / "installation/systemd/permanent.service").read_text()
                    .replace("@ROOT@", str(REPO)))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    done = subprocess.run(["systemd-analyze", "--user", "verify", str(unit)],
                          capture_output=True, text=True,
                          env=dict(os.environ, XDG_RUNTIME_DIR=str(runtime)))
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def process_stats(pid: int) -> dict:
    process = psutil.Process(pid)
    return {"rss_kib": process.memory_info().rss // 1024, "threads": process.num_threads(),
            "fds": process.num_fds()}


def lowest_stats_until(piece, roles: dict, passes: int, timeout: float = 600) -> dict:
    """Each role's stats, read every quarter second until `passes` have ended: its lowest
    memory, and the file descriptors and threads it held at the last reading."""
    deadline, lowest = time.monotonic() + timeout, {}
    while True:
        for role, pid in roles.items():
            now = process_stats(pid)
            if role in lowest:
                now["rss_kib"] = min(now["rss_kib"], lowest[role]["rss_kib"])
            lowest[role] = now
        if piece.count(r"pass \d+ ended") >= passes:
            return lowest
        assert time.monotonic() < deadline, piece.log[-3000:]
        time.sleep(0.25)


SOAK = """\
model:
  name: {model}
text:
  min_tokens: 3
  max_tokens: 6
pacing:
  tokens_per_second: 200
  jitter: 0
  comma_pause_seconds: 0
  sentence_pause_seconds: 0
  line_break_pause_seconds: 0
  uncertainty_pause_seconds_per_bit: 0
  hold_seconds: 0
  fade_seconds: 0
  gap_seconds: 0
display:
  fps: 240
care:
  archive_file: {archive}
"""


def test_soak_of_500_passes_does_not_leak(pulse_env, tiny_model, tmp_path):
    """500 passes after a warm-up of 100, written by a two-layer model with random weights
    (`tiny_model`, not the embedded one, so that 600 passes fit in a test's time), through
    the real hum, screen and archive: no process grows by more than 2 %, and none gains a
    file descriptor or a thread. It soaks the piece's own code, not the model's. Memory is
    each process's lowest over a hundred passes at either end: one reading swings by a few
    per cent as the allocator hands memory back (the model's drafts churn its heap)."""
    config = tmp_path / "config.yaml"
    config.write_text(SOAK.format(model=tiny_model, archive=tmp_path / "passes.jsonl"))
    piece = Running(pulse_env, "--windowed", "--config", str(config))
    try:
        pids = piece.wait_for(r"hum process (\d+), model process (\d+)")
        roles = {"main": piece.process.pid, "hum": int(pids[1]), "model": int(pids[2])}

        wait_for_passes(piece, 100, timeout=600)           # warm-up
        # The model yields the CPU to frames and audio buffers; they keep their priority.
        priority = {role: os.getpriority(os.PRIO_PROCESS, pid) for role, pid in roles.items()}
        assert priority == {"main": 0, "hum": 0, "model": 19}, priority
        started = time.monotonic()
        warm = lowest_stats_until(piece, roles, 200)
        wait_for_passes(piece, 500, timeout=600)
        end = lowest_stats_until(piece, roles, 600)
        soaked = time.monotonic() - started
        passes = piece.count(r"pass \d+ ended")
        assert piece.terminate() < 2.0 and piece.process.returncode == 0
    finally:
        piece.kill()
    report = []
    for role in roles:
        growth = (end[role]["rss_kib"] - warm[role]["rss_kib"]) / warm[role]["rss_kib"]
        report.append(f"{role}: {warm[role]['rss_kib'] // 1024} -> {end[role]['rss_kib'] // 1024}"
                      f" MiB ({100 * growth:+.2f} %), fds {warm[role]['fds']} -> "
                      f"{end[role]['fds']}, threads {warm[role]['threads']} -> "
                      f"{end[role]['threads']}")
        assert growth <= 0.02, report[-1]
        assert end[role]["fds"] <= warm[role]["fds"] and end[role]["threads"] <= warm[role]["threads"]
    print(f"soak: {passes} passes, 500 measured after warm-up in {soaked:.0f} s; "
          + "; ".join(report))
    assert piece.count("Traceback") == 0
