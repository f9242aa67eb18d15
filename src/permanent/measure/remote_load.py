"""`permanent bench remote`: what OSC and the status page cost the piece.

The whole piece is launched headless, in turns, with the `osc:` and `status:` sections
off and then on, the rest of the configuration as given (with a fixed seed, so both
write the same text). While on, the bench is the gallery: an OSC receiver takes every
message, a cue is sent to OSC in every few seconds, and one page is open the way the
status page's own script keeps it open (its event stream read, its picture fetched as
often as it refreshes). From the first token on, after a settling time, the main
process's CPU time is read (its children, the hum and the model, are not counted: the
additions all live in the main process), and the piece itself sums up its frame times.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Optional

import psutil
import yaml

from ..timings import ENVIRONMENT as TIMINGS_VARIABLE, first_event, read_timings

SETTLE_SECONDS = 5.0   # after the first token: the model's warm start is written by then
CUE_SECONDS = 5.0      # how often the bench sends OSC in a cue (a harmless /resume)


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config_text(config_path: Optional[Path], on: bool, ports: dict) -> str:
    """The given configuration, with the two sections set as this launch needs."""
    data = {}
    if config_path is not None:
        data = yaml.safe_load(Path(config_path).read_text(encoding="utf-8")) or {}
    data.setdefault("text", {})["seed"] = 7
    data.setdefault("care", {}).update(watch_config=False)
    data["osc"] = {"send_to": [f"127.0.0.1:{ports['receiver']}"] if on else [],
                   "listen": f"127.0.0.1:{ports['osc_in']}" if on else None}
    data["status"] = {"enabled": on, "port": ports["status"]}
    return yaml.safe_dump(data)


class _Gallery:
    """The gallery's side while the piece runs: one OSC receiver, one open page, cues."""

    def __init__(self, ports: dict, thumbnail_seconds: float):
        self.ports, self.thumbnail_seconds = ports, thumbnail_seconds
        self.messages = self.events = self.pictures = self.cues = 0
        self._stop = threading.Event()
        self._receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._receiver.bind(("127.0.0.1", ports["receiver"]))
        self._receiver.settimeout(0.2)
        self._threads = [threading.Thread(target=f, daemon=True)
                         for f in (self._receive, self._page, self._pictures, self._cue)]

    def start(self) -> "_Gallery":
        for thread in self._threads:
            thread.start()
        return self

    def _receive(self):
        while not self._stop.is_set():
            try:
                self._receiver.recv(65536)
                self.messages += 1
            except socket.timeout:
                pass

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['status']}{path}"

    def _page(self):
        while not self._stop.is_set():
            try:
                urllib.request.urlopen(self._url("/"), timeout=5).read()
                with urllib.request.urlopen(self._url("/events"), timeout=30) as stream:
                    for line in stream:
                        if line.startswith(b"event:"):
                            self.events += 1
                        if self._stop.is_set():
                            return
            except OSError:
                self._stop.wait(0.5)   # not listening yet, or gone: as a browser retries

    def _pictures(self):
        while not self._stop.wait(self.thumbnail_seconds):
            try:
                urllib.request.urlopen(self._url("/thumbnail.jpg"), timeout=5).read()
                self.pictures += 1
            except OSError:
                pass

    def _cue(self):
        from ..remote.osc_out import osc_message

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            while not self._stop.wait(CUE_SECONDS):
                sender.sendto(osc_message("/permanent/resume"),
                              ("127.0.0.1", self.ports["osc_in"]))
                self.cues += 1

    def stop(self) -> dict:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._receiver.close()
        return {"osc_messages": self.messages, "page_events": self.events,
                "pictures": self.pictures, "cues": self.cues}


def _one_launch(config_path: Optional[Path], on: bool, seconds: float,
                thumbnail_seconds: float, settle_seconds: float) -> dict:
    ports = {"receiver": _free_port(socket.SOCK_DGRAM), "osc_in": _free_port(socket.SOCK_DGRAM),
             "status": _free_port(socket.SOCK_STREAM)}
    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "config.yaml"
        config.write_text(_config_text(config_path, on, ports), encoding="utf-8")
        timings = Path(scratch) / "timings.jsonl"
        env = dict(os.environ, SDL_VIDEODRIVER=os.environ.get("SDL_VIDEODRIVER", "dummy"))
        env[TIMINGS_VARIABLE] = str(timings)
        gallery = _Gallery(ports, thumbnail_seconds).start() if on else None
        piece = subprocess.Popen(
            [sys.executable, "-m", "permanent", "--windowed", "--config", str(config),
             "--duration", str(seconds + 180)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while first_event(read_timings(timings), "first_token") is None:
                if time.monotonic() > deadline or piece.poll() is not None:
                    raise RuntimeError("the piece showed no token; run it alone to see why")
                time.sleep(0.1)
            time.sleep(settle_seconds)
            main = psutil.Process(piece.pid)
            before, started = sum(main.cpu_times()[:2]), time.monotonic()
            threads_before = _thread_seconds(main)
            time.sleep(seconds)
            used, wall = sum(main.cpu_times()[:2]) - before, time.monotonic() - started
            threads_after = _thread_seconds(main)
            # The main thread's own share, against the other threads' (the listeners; and
            # multiprocessing's queue feeders in both modes). A thread that ended within
            # the window (a request's) is counted only in the process's total.
            main_thread = threads_after.get(piece.pid, 0.0) - threads_before.get(piece.pid, 0.0)
            others = sum(t - threads_before.get(i, 0.0) for i, t in threads_after.items()
                         if i != piece.pid)
            piece.send_signal(signal.SIGTERM)
            piece.wait(timeout=30)
        finally:
            if piece.poll() is None:
                piece.kill()
                piece.wait()
            seen = gallery.stop() if gallery else {}
        frames = first_event(read_timings(timings), "frames") or {}
    return {"on": on, "cpu_share_of_one_core": round(used / wall, 4),
            "main_thread_share": round(main_thread / wall, 4),
            "other_threads_share": round(others / wall, 4),
            "frames": frames.get("count"), "frame_p50_ms": frames.get("p50_ms"),
            "frame_p99_ms": frames.get("p99_ms"), "frame_max_ms": frames.get("max_ms"), **seen}


def _thread_seconds(process: psutil.Process) -> dict:
    return {t.id: t.user_time + t.system_time for t in process.threads()}


def measure_remote(config_path: Optional[Path], seconds: float = 30.0, rounds: int = 2,
                   thumbnail_seconds: float = 5.0, settle_seconds: float = SETTLE_SECONDS) -> dict:
    """Launches off and on in turn, `rounds` times each; the extra CPU is the difference of
    the medians."""
    launches = [_one_launch(config_path, on, seconds, thumbnail_seconds, settle_seconds)
                for _ in range(rounds) for on in (False, True)]
    share = {on: statistics.median(r["cpu_share_of_one_core"] for r in launches
                                   if r["on"] is on) for on in (False, True)}
    worst_p99 = max(r["frame_p99_ms"] or 0.0 for r in launches if r["on"])
    others = {on: statistics.median(r["other_threads_share"] for r in launches
                                    if r["on"] is on) for on in (False, True)}
    return {"seconds_measured": seconds, "rounds": rounds, "launches": launches,
            "extra_in_other_threads": round(others[True] - others[False], 4),
            "cpu_off": round(share[False], 4), "cpu_on": round(share[True], 4),
            "extra_cpu_share_of_one_core": round(share[True] - share[False], 4),
            "frame_p99_ms_on": worst_p99,
            "within_targets": share[True] - share[False] <= 0.02 and worst_p99 <= 8.0}


def print_remote(r: dict) -> None:
    for launch in r["launches"]:
        seen = (f"; {launch['osc_messages']} OSC messages received, {launch['page_events']} "
                f"page events, {launch['pictures']} pictures, {launch['cues']} cues sent"
                if launch["on"] else "")
        print(f"  {'on ' if launch['on'] else 'off'}  main process "
              f"{100 * launch['cpu_share_of_one_core']:.2f} % of a core (main thread "
              f"{100 * launch['main_thread_share']:.2f}, other threads "
              f"{100 * launch['other_threads_share']:.2f}); frames "
              f"p50 {launch['frame_p50_ms']} ms, p99 {launch['frame_p99_ms']} ms, max "
              f"{launch['frame_max_ms']} ms ({launch['frames']} frames){seen}")
    print(f"  extra CPU with OSC and the status page on: "
          f"{100 * r['extra_cpu_share_of_one_core']:+.2f} % of one core (median of "
          f"{r['rounds']} launches each, {r['seconds_measured']:.0f} s measured in each; "
          f"{100 * r['extra_in_other_threads']:+.2f} % of it in threads of their own); "
          f"frame p99 with them on {r['frame_p99_ms_on']} ms; targets (2 %, 8 ms) "
          f"{'met' if r['within_targets'] else 'NOT met'}")
