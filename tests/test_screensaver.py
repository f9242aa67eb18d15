"""The screensaver on a real X server: standalone, on the root window, and in XScreenSaver."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import psutil
import pytest

from test_live_paths import screenshot
from test_piece import Running, alive

pytestmark = pytest.mark.slow


def children_of(pid: int) -> set[int]:
    """Every descendant of `pid`."""
    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def xdotool(env, *args):
    subprocess.run(["xdotool", *args], env=env, check=True, timeout=10)


@pytest.fixture()
def saver_env(xvfb_env):
    return dict(xvfb_env, PULSE_SERVER="unix:/nonexistent/socket")


def run_standalone(env, args, start_at, disturb, *, survives=None):
    """Start the standalone saver with the mouse at `start_at`, then `disturb` it; return
    how long it took to end and its log."""
    xdotool(env, "mousemove", *start_at)
    saver = Running(env, "screensaver", *args, on_screen=True)
    try:
        saver.wait_for(r"first frame drawn")
        time.sleep(1.0)                                   # past the grace period
        if survives is not None:
            xdotool(env, *survives)
            time.sleep(1.0)
            assert saver.process.poll() is None, saver.log
        disturbed = time.monotonic()
        xdotool(env, *disturb)
        saver.process.wait(timeout=5)
        assert saver.process.returncode == 0, saver.log
        return time.monotonic() - disturbed, saver.log
    finally:
        saver.kill()


def test_standalone_ignores_jitter_and_wakes_on_a_key(saver_env, embedded_model):
    took, log = run_standalone(saver_env, [], ("640", "360"), ("key", "space"),
                               survives=("mousemove_relative", "--", "3", "-2"))  # a bumped table
    assert took < 1.0 and "stopping (input)" in log


def test_standalone_wakes_when_the_mouse_moves(saver_env, embedded_model):
    took, log = run_standalone(saver_env, ["/s"], ("200", "200"),
                               ("mousemove_relative", "--", "60", "40"))
    assert took < 1.0 and "stopping (mouse moved)" in log


def test_on_the_root_window_it_draws_at_once_and_leaves_at_once(saver_env, embedded_model):
    saver = Running(saver_env, "screensaver", "--root", on_screen=True)
    try:
        frame_at = float(saver.wait_for(r"first frame drawn, ([\d.]+) s after launch")[1])
        assert frame_at < 1.0
        token_at = float(saver.wait_for(r"first token shown, ([\d.]+) s after launch")[1])
        time.sleep(2.0)
        pixels = screenshot(saver_env, "/tmp/permanent-root.png")
        lit = np.any(pixels > 0, axis=2)
        assert lit.sum() > 500, "no text on the root window"
        family = children_of(saver.process.pid)
        took = saver.terminate()
        print(f"root: first frame {frame_at:.2f} s, first token {token_at:.2f} s, "
              f"SIGTERM to exit {took:.2f} s")
        assert took < 1.0 and saver.process.returncode == 0, saver.log
        time.sleep(0.1)
        assert not any(alive(pid) for pid in family), family
    finally:
        saver.kill()


def as_saver(*command):
    from conftest import SAVER_USER
    return ["setpriv", f"--reuid={SAVER_USER}", f"--regid={SAVER_USER}", "--init-groups",
            *command]


def hack_pids() -> list[int]:
    from conftest import SAVER_USER
    found = subprocess.run(["pgrep", "-u", SAVER_USER, "-f", "permanent screensaver"],
                           capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def test_xscreensaver_runs_the_piece_as_a_hack(xvfb_env, saver_install, tmp_path):
    from conftest import SAVER_USER
    home = f"/home/{SAVER_USER}"
    program = (f"env XDG_CACHE_HOME={saver_install}/cache {saver_install}/venv/bin/permanent "
               f"screensaver --config {saver_install}/config.yaml")
    with open(f"{home}/.xscreensaver", "w") as f:
        f.write("timeout: 1:00:00\ncycle: 0:00:00\nlock: False\nsplash: False\n"
                "mode: one\nselected: 0\ncaptureStderr: False\nfade: False\nunfade: False\n"
                f'programs: "permanent" {program} \\n\\\n')
    subprocess.run(["chown", SAVER_USER, f"{home}/.xscreensaver"], check=True)
    env = {"HOME": home, "USER": SAVER_USER, "LOGNAME": SAVER_USER, "PATH": "/usr/bin:/bin",
           "DISPLAY": xvfb_env["DISPLAY"], "PULSE_SERVER": "unix:/nonexistent/socket"}
    log_path = tmp_path / "xscreensaver.log"
    subprocess.run(["pkill", "-KILL", "-u", SAVER_USER], capture_output=True)   # an earlier run's
    gone = time.monotonic() + 10   # pkill only sends: a daemon still dying would make the
    while (subprocess.run(["pgrep", "-u", SAVER_USER], capture_output=True).returncode == 0
           and time.monotonic() < gone):   # new one find it and leave
        time.sleep(0.1)
    # Twice at most: under a CPU hog, XScreenSaver's daemon has twice exited before answering,
    # status 1, nothing on stderr (not reproduced in 8 tries by hand). That is the
    # daemon's start, not the piece: it is started once more, and a second exit fails.
    for attempt in (1, 2):
        daemon = subprocess.Popen(as_saver("xscreensaver", "-no-splash"), env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
        deadline = time.monotonic() + 20
        while subprocess.run(as_saver("xscreensaver-command", "-time"), env=env,
                             capture_output=True).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        else:
            break
        assert attempt == 1, \
            f"daemon exit code {daemon.poll()}; its log:\n{log_path.read_text()}"
        print(f"XScreenSaver's daemon exited before answering (exit code {daemon.poll()}, log "
              f"{log_path.read_text()!r}); starting it again")
        daemon.kill()
        daemon.wait()
    try:
        subprocess.run(as_saver("xscreensaver-command", "-activate"), env=env, check=True,
                       capture_output=True)
        deadline = time.monotonic() + 20
        while not hack_pids():
            assert time.monotonic() < deadline, "XScreenSaver started no hack:\n" + \
                log_path.read_text()
            time.sleep(0.1)
        hack = max(hack_pids())
        assert "XSCREENSAVER_WINDOW" in psutil.Process(hack).environ(), \
            "the hack did not get XScreenSaver's window"
        deadline = time.monotonic() + 60
        while "first token shown" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        time.sleep(2.0)
        pixels = screenshot(xvfb_env, tmp_path / "hack.png")
        assert np.any(pixels > 0, axis=2).sum() > 500, "no text in XScreenSaver's window"
        family = {hack} | children_of(hack)
        asked, asked_wall = time.monotonic(), time.time()
        subprocess.run(as_saver("xscreensaver-command", "-deactivate"), env=env, check=True,
                       capture_output=True)
        while any(alive(pid) for pid in family):
            left = {pid: " ".join(psutil.Process(pid).cmdline())[:60] for pid in family
                    if alive(pid)}
            assert time.monotonic() - asked < 1.0, (left, log_path.read_text()[-1500:])
            time.sleep(0.02)
        gone = time.monotonic() - asked
        log = log_path.read_text()
        import re
        frame = re.search(r"first frame drawn, ([\d.]+) s", log)[1]
        token = re.search(r"first token shown, ([\d.]+) s", log)[1]
        import datetime as dt
        # XScreenSaver closes its window and sends SIGTERM at once: the signal, Xlib's error
        # on the lost window or SDL's quit event for it: any may come first (a run under
        # load saw neither of the first two; the log is shown if none is there).
        stop = re.search(r"(\S+ \S+) permanent: stopping \((signal|host window gone|"
                         r"window closed)\)", log)
        assert stop, log[-2000:]
        stamp = stop[1]
        signalled = dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() - asked_wall
        stopped = float(re.search(r"stopped in ([\d.]+) s", log)[1])
        print([l for l in log.splitlines() if "stopped in" in l])
        print(f"xscreensaver: first frame {frame} s, first token {token} s after hack start; "
              f"deactivate to all processes gone {gone:.2f} s (the stop seen at "
              f"{signalled:.2f} s, shutdown {stopped:.2f} s)")
    finally:
        subprocess.run(as_saver("xscreensaver-command", "-exit"), env=env, capture_output=True)
        daemon.terminate()
        daemon.wait(timeout=10)
        subprocess.run(["pkill", "-KILL", "-u", SAVER_USER], capture_output=True)
