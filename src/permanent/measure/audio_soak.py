"""`permanent bench soak [--seconds N]`: does the hum hold while the machine is busy?

The whole piece runs as a visitor would have it, with the model writing flat out and a
busy loop holding one core, into a private PulseAudio server whose only output is a null
sink; `parec` records what reaches it. The recording is then read for dropouts (runs of
digital silence longer than 10 ms), clicks (the largest sample-to-sample step) and the
underruns the audio stack logged. Nothing touches the desktop's own sound server.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import PermanentError
from .audio_analysis import mono, read_wav

NEEDED = {"pulseaudio": "pulseaudio", "pactl": "pulseaudio-utils",
          "parec": "pulseaudio-utils", "pacat": "pulseaudio-utils"}
DROPOUT_SECONDS = 0.010
# The model writes as fast as it can: tokens are asked for faster than it makes them,
# and no pause between passes lets its queue fill and rest it.
FLAT_OUT = ("pacing:\n  tokens_per_second: 200\n  uncertainty_pause_seconds_per_bit: 0\n"
            "  comma_pause_seconds: 0\n  sentence_pause_seconds: 0\n"
            "  line_break_pause_seconds: 0\n  hold_seconds: 0\n  fade_seconds: 0\n"
            "  gap_seconds: 0\n")


def dropouts(samples: np.ndarray, rate: int, longer_than: float = DROPOUT_SECONDS) -> list[float]:
    """Lengths in seconds of every run of digital silence (all channels 0) longer than
    `longer_than`: what a buffer the sound card got too late leaves behind."""
    silent = np.all(samples == 0, axis=1)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], silent.astype(np.int8), [0]])))
    runs = (edges[1::2] - edges[::2]) / rate
    return [float(r) for r in runs if r > longer_than]


def largest_step(signal: np.ndarray) -> float:
    """The largest jump between neighbouring samples: a click stands out far above the
    steady hum's own (about 0.02 at the default volume)."""
    return float(np.abs(np.diff(signal)).max()) if len(signal) > 1 else 0.0


def _private_pulse(folder: Path) -> dict:
    env = dict(os.environ, PULSE_RUNTIME_PATH=str(folder), PULSE_STATE_PATH=str(folder))
    env.pop("PULSE_SERVER", None)
    subprocess.run(["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n",
                    "--load=module-null-sink sink_name=soak rate=48000 channels=2",
                    "--load=module-native-protocol-unix"], env=env, check=True,
                   stderr=subprocess.DEVNULL)
    env["PULSE_SERVER"] = f"unix:{folder}/native"
    deadline = time.monotonic() + 10
    while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise PermanentError("the private PulseAudio server for the soak did not start")
        time.sleep(0.1)
    return env


def _busy_loop() -> subprocess.Popen:
    """One core held at the user's own priority, like a browser tab spinning."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def audio_soak(seconds: float, config_path: Path | None = None, hog: bool = True,
               extra_yaml: str = "") -> dict:
    missing = [f"{tool} (Debian package {package})" for tool, package in NEEDED.items()
               if shutil.which(tool) is None]
    if missing:
        raise PermanentError("the audio soak needs " + ", ".join(missing) + "; install them "
                             "with apt-get and run it again.")
    folder = Path(tempfile.mkdtemp(prefix="permanent-soak-"))
    config = folder / "config.yaml"
    base = Path(config_path).read_text() if config_path else ""
    config.write_text(_merge_yaml(base, FLAT_OUT + extra_yaml))
    env = _private_pulse(folder / "pulse")
    fmt = ["--rate=48000", "--channels=2", "--format=s16le"]
    wav = folder / "hum.wav"
    processes = []
    try:
        # A stream of zeros keeps the null sink running, so the recording follows the clock.
        with open("/dev/zero", "rb") as zeros:
            processes.append(subprocess.Popen(["pacat", "--device=soak", "--raw", *fmt],
                                              stdin=zeros, env=env))
        recorder = subprocess.Popen(["parec", "-d", "soak.monitor", *fmt, "--file-format=wav",
                                     str(wav)], env=env)
        processes.append(recorder)
        time.sleep(2.5)   # the monitor first replays what the sink last played
        with open(folder / "piece.log", "w") as log:   # the child keeps its own copy
            piece = subprocess.Popen(
                [sys.executable, "-m", "permanent", "--windowed", "--config", str(config)],
                env=dict(env, SDL_VIDEODRIVER=os.environ.get("SDL_VIDEODRIVER", "dummy")),
                stdout=log, stderr=subprocess.STDOUT)
        processes.append(piece)
        hog_process = _busy_loop() if hog else None
        try:
            time.sleep(seconds)
        finally:
            if hog_process is not None:
                hog_process.kill()
        piece.send_signal(signal.SIGTERM)
        piece.wait(timeout=30)
        time.sleep(0.5)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)   # parec writes its header on SIGINT
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
        subprocess.run(["pulseaudio", "--kill"], env=env, stderr=subprocess.DEVNULL)
    text = (folder / "piece.log").read_text(errors="replace")
    samples, rate = read_wav(wav)
    signal_ = mono(samples)
    audible = np.flatnonzero(np.abs(signal_) > 1e-3)
    if len(audible) == 0:
        raise PermanentError(f"the soak recorded no hum; see {folder / 'piece.log'}")
    # From the first audible sample to the start of the closing fade.
    heard = samples[audible[0]:audible[-1] - int(1.0 * rate)]
    gaps = dropouts(heard, rate)
    shown = len(re.findall(r"first token shown|pass \d+ ended", text))
    result = {"seconds": round(len(heard) / rate, 1), "cpu_hog": hog,
              "dropouts": len(gaps), "longest_dropout_ms": round(1000 * max(gaps, default=0), 1),
              "largest_step": round(largest_step(mono(heard)), 4),
              "underruns_logged": len(re.findall(r"underrun", text)),
              "model_wrote": shown > 0, "folder": str(folder)}
    shutil.rmtree(folder / "pulse", ignore_errors=True)
    return result


def _merge_yaml(base: str, extra: str) -> str:
    """The user's config with the soak's own settings laid over it, section by section."""
    import yaml

    merged = yaml.safe_load(base) or {}
    for section, values in (yaml.safe_load(extra) or {}).items():
        merged.setdefault(section, {}).update(values)
    return yaml.safe_dump(merged)
