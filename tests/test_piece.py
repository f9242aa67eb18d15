"""The whole program, headless: real processes, a real sound server, real signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from permanent.config import HumConfig
from permanent.lifecycle import Backoff
from permanent.timings import read_timings

from conftest import REPO

pytestmark = pytest.mark.slow


class Running:
    """`permanent` in a child process, its log read line by line as it happens."""

    def __init__(self, env, *args, on_screen: bool = False):
        env = dict(env, PYTHONUNBUFFERED="1")
        if not on_screen:
            env["SDL_VIDEODRIVER"] = "dummy"   # draw offscreen
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "permanent", "-v", *args], cwd=REPO, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stderr:
            self.lines.append((time.monotonic() - self.started, line.rstrip()))

    def wait_for(self, pattern: str, timeout: float = 120.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; log:\n{self.log}")

    def count(self, pattern: str) -> int:
        return sum(1 for _, line in list(self.lines) if re.search(pattern, line))

    @property
    def log(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def terminate(self) -> float:
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=10)
        return time.monotonic() - sent

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def alive(pid: int) -> bool:
    """Running: a zombie has exited and only waits for its parent to read its status."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def family(pid: int) -> set[int]:
    """A process and all its descendants that are still running."""
    try:
        root = psutil.Process(pid)
        pids = {pid} | {child.pid for child in root.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()
    return {p for p in pids if alive(p)}


def sink_inputs(env) -> str:
    return subprocess.run(["pactl", "list", "short", "sink-inputs"], env=env,
                          capture_output=True, text=True).stdout


def test_the_piece_runs_hums_writes_and_stops_on_sigterm(pulse_env, embedded_model, tmp_path):
    timings = tmp_path / "timings.jsonl"   # what `permanent bench` reads of a launch
    piece = Running(dict(pulse_env, PERMANENT_TIMINGS=str(timings)))   # fullscreen, as in a gallery
    try:
        pids = piece.wait_for(r"hum process (\d+), model process (\d+)")
        hum_pid, model_pid = int(pids[1]), int(pids[2])
        hum_at = float(piece.wait_for(r"hum playing on .*, ([\d.]+) s after launch")[1])
        assert hum_at < 2.0, "the hum must be audible within 2 s of launch"
        assert sink_inputs(pulse_env).strip(), "pyo is not playing into the sound server"
        first_at = float(piece.wait_for(r"first token shown, ([\d.]+) s after launch")[1])
        assert hum_at < first_at
        assert alive(hum_pid) and alive(model_pid)
        # Writing, the model yields to the frames and the hum (it loaded at the piece's own
        # priority, to wake sooner).
        assert os.getpriority(os.PRIO_PROCESS, model_pid) == 19
        assert (os.sched_getscheduler(hum_pid) == os.SCHED_RR   # real-time, where allowed
                or os.getpriority(os.PRIO_PROCESS, hum_pid) < 19)
        deadline = time.monotonic() + 20
        while piece.count(r"shown '") < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert piece.count(r"shown '") >= 10, piece.log
        assert alive(hum_pid), "the hum stopped while the model wrote"
        took = piece.terminate()
        assert took < 2.0 and piece.process.returncode == 0, piece.log
        assert not alive(hum_pid) and not alive(model_pid)
        assert "Traceback" not in piece.log
        events = {e["event"]: e for e in read_timings(timings)}   # the same moments, as data
        assert events["hum_playing"]["after_launch_s"] == pytest.approx(hum_at, abs=0.011)
        assert events["first_token"]["after_launch_s"] == pytest.approx(first_at, abs=0.011)
        assert events["window_open"]["model_pid"] == model_pid
        assert {"model_ready", "first_frame", "stopped"} <= events.keys(), events
    finally:
        piece.kill()


FADE_OUT = HumConfig().fade_out_seconds   # the default: a gallery's own stop


@pytest.mark.parametrize("moment", ["loading", "writing"])
def test_every_process_is_gone_soon_after_sigterm(pulse_env, embedded_model, tmp_path, moment):
    """XScreenSaver and systemd end the piece with SIGTERM and count until it is gone (the
    next hack starts, a restart waits). This protects that time, measured from outside by
    PID, for every process of the piece: main, hum, model and multiprocessing's resource
    tracker, whether the model is still loading or writing. The hum's fade-out is the one
    wait it asks for; everything else (the model's end, the interpreters' exits) gets
    0.5 s. Exiting through the interpreter's teardown took 0.45 s more on a busy core."""
    limit = FADE_OUT + 0.5
    piece = Running(pulse_env, "--windowed")
    try:
        piece.wait_for(r"hum playing" if moment == "loading" else r"first token shown")
        pids = family(piece.process.pid)
        loaded = piece.count(r"model ready") > 0
        assert len(pids) == 4, [psutil.Process(p).cmdline() for p in pids]
        sent = time.monotonic()
        piece.process.send_signal(signal.SIGTERM)
        while any(alive(pid) for pid in pids) and time.monotonic() - sent < limit + 5:
            time.sleep(0.01)
        gone = time.monotonic() - sent
        print(f"{moment}: SIGTERM to all {len(pids)} processes gone {gone:.2f} s "
              f"(limit {limit:.2f} s)")
        assert loaded == (moment == "writing"), piece.log   # it was signalled while so
        assert gone < limit, piece.log
        assert piece.process.wait(timeout=5) == 0
        assert "Traceback" not in piece.log and "leaked" not in piece.log, piece.log
    finally:
        piece.kill()


def test_a_killed_model_process_is_restarted_while_the_hum_plays(pulse_env, embedded_model,
                                                                 tmp_path):
    config = tmp_path / "config.yaml"   # recovery, not the gallery's slow fade, is measured
    config.write_text("pacing:\n  fade_seconds: 2\n  gap_seconds: 1\n")
    piece = Running(pulse_env, "--windowed", "--config", str(config))
    try:
        pids = piece.wait_for(r"hum process (\d+), model process (\d+)")
        hum_pid, model_pid = int(pids[1]), int(pids[2])
        first = float(piece.wait_for(r"first token shown, ([\d.]+) s after launch")[1])
        os.kill(model_pid, signal.SIGKILL)
        killed = time.monotonic() - piece.started
        piece.wait_for(r"model process died \(exit code -9\); restarting")
        new_pid = int(piece.wait_for(r"model process restarted \(pid (\d+)\)")[1])
        assert new_pid != model_pid and alive(hum_pid)
        deadline = time.monotonic() + 30
        new_tokens = []
        while not new_tokens and time.monotonic() < deadline:
            readies = [t for t, line in piece.lines if "model ready" in line]
            if len(readies) == 2:   # the restarted model has loaded: what shows next is its
                new_tokens = [t for t, line in piece.lines if "shown '" in line and t > readies[1]]
            time.sleep(0.1)
        # A restarted model is a fresh process: it may take as long as this machine's own
        # first start did, after the first backoff (1 s); half that again is the margin for
        # the fade of the cut pass and the gap (3 s here) and a busier moment.
        limit = Backoff.STEPS[0] + 1.5 * first + 3.0
        assert new_tokens and new_tokens[0] - killed < limit, (limit, piece.log)
        assert alive(hum_pid) and piece.process.poll() is None
        assert piece.terminate() < 2.0 and piece.process.returncode == 0
    finally:
        piece.kill()


def test_without_an_audio_device_it_runs_silently_with_one_warning(embedded_model):
    env = dict(os.environ, PULSE_SERVER="unix:/nonexistent/socket")   # no sound server
    piece = Running(env, "--windowed")
    try:
        piece.wait_for(r"first token shown")
        piece.wait_for(r"shown '")
        assert piece.count(r"no audio output device found") == 1
        assert piece.process.poll() is None
        took = piece.terminate()
        assert took < 2.0 and piece.process.returncode == 0, piece.log
        assert "Traceback" not in piece.log and "Segmentation" not in piece.log
    finally:
        piece.kill()


def test_no_display_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("SDL_VIDEODRIVER", None)
    env["PULSE_SERVER"] = "unix:/nonexistent/socket"
    done = subprocess.run([sys.executable, "-m", "permanent"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "no display to draw on" in done.stderr
    assert "DISPLAY" in done.stderr and "--windowed" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_named_audio_device_stops_before_anything_starts(pulse_env, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("audio:\n  device: Scarlett 2i2\n")
    done = subprocess.run([sys.executable, "-m", "permanent", "--config", str(config)],
                          cwd=REPO, env=dict(pulse_env, SDL_VIDEODRIVER="dummy"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "line 2: audio.device: 'Scarlett 2i2' matches no output device" in done.stderr
    assert "pulse" in done.stderr and "window open" not in done.stderr


def test_devices_and_check_list_the_sound_server(pulse_env):
    done = subprocess.run([sys.executable, "-m", "permanent", "devices"], cwd=REPO,
                          env=pulse_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "pulse" in done.stdout and "(default)" in done.stdout
    done = subprocess.run([sys.executable, "-m", "permanent", "check"], cwd=REPO,
                          env=pulse_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "config.yaml: valid" in done.stdout and "<- used" in done.stdout
    assert "SmolLM2-135M-Instruct" in done.stdout
