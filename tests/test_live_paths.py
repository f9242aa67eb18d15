"""The live piece through a real sound server and a real X server, measured from outside."""

from __future__ import annotations

import re
import subprocess
import time

import numpy as np
import pytest

from permanent.config import HumConfig
from permanent.measure.audio_analysis import mono, peak_hz, read_wav, rms
from permanent.measure.audio_soak import audio_soak, dropouts, largest_step
from permanent.room.fans import semitones
from permanent.room.preset import load_preset

from conftest import recording_the_hum
from test_piece import Running, sink_inputs

pytestmark = pytest.mark.slow

# Short passes and a quick page: several passes, and their changes, in a few seconds.
SHORT_PASSES = """\
text:
  min_tokens: 25
  max_tokens: 45
pacing:
  tokens_per_second: 6
  hold_seconds: 1.5
  fade_seconds: 1.5
  gap_seconds: 1
"""
FAST_PASSES = SHORT_PASSES + """\
hum:
  preset: {preset}
  fade_in_seconds: 1.0
"""


CLICK = 0.06   # a sample-to-sample step about 3x the largest of the steady hum


def test_the_hum_holds_while_the_model_writes_flat_out_and_a_core_is_busy():
    """The shipped soak (`permanent bench soak`), for 25 s instead of 600.

    One core busy is the case: where something else (a CPU hog the suite runs beside)
    already holds one, the soak adds no busy loop of its own, or both cores would be
    taken and the model, at the lowest priority, would rightly get none."""
    import psutil

    busy_cores = psutil.cpu_percent(interval=1.0) / 100 * psutil.cpu_count()
    result = audio_soak(25, hog=busy_cores < 0.5)
    print(result)
    assert result["model_wrote"] and result["seconds"] > 20
    assert result["dropouts"] == 0, result
    assert result["largest_step"] < CLICK and result["underruns_logged"] == 0, result


def quiet_hiss_preset(tmp_path):
    """The closet without its white-noise hiss, so a dropout's edge would stand out."""
    text = (load_preset.__globals__["find_preset"]("closet")).read_text()
    path = tmp_path / "closet-no-hiss.yaml"
    path.write_text(text.replace("hiss_level: 0.025", "hiss_level: 0.0"))
    return path


def test_what_a_visitor_hears(pulse_env, embedded_model, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(FAST_PASSES.format(preset=quiet_hiss_preset(tmp_path)))
    assert not sink_inputs(pulse_env).strip(), "something else is playing"
    wav = tmp_path / "room.wav"
    with recording_the_hum(pulse_env, wav):
        time.sleep(2.5)   # the monitor first replays what the sink last played; let that pass
        piece = Running(pulse_env, "--config", str(config))
        try:
            piece.wait_for(r"first token shown")
            time.sleep(14)                       # a few passes, with the model generating
            shown = piece.count(r"shown '")
            sigterm = time.monotonic()
            assert piece.terminate() < 2.0 and piece.process.returncode == 0
            time.sleep(1.0)
        finally:
            piece.kill()
    samples, rate = read_wav(wav)
    signal_ = mono(samples)
    at = lambda seconds: int(seconds * rate)
    assert shown > 20
    # parec's first sample is not at a known wall-clock time, so the recording is read
    # on its own clock: from the first audible sample to the last.
    audible = np.flatnonzero(np.abs(signal_) > 1e-3)
    start, end = audible[0] / rate, audible[-1] / rate
    # Line the recording up with the wall clock at its end (SIGTERM, then the fade).
    fade = HumConfig().fade_out_seconds   # the default: FAST_PASSES leaves it alone
    launch = end - (sigterm - piece.started) - fade
    print(f"hum audible {start - launch:.2f} s after launch (at the sound server)")
    assert start - launch < 2.0
    assert rms(signal_[at(start + 0.5):at(start + 1.5)]) > 0.005
    # Its level within the configured range: below the volume, well above the floor.
    steady = signal_[at(start + 1.5):at(end - 1.0)]
    assert 0.01 < rms(steady) and np.abs(steady).max() <= 0.5
    # No dropouts while the model generates: no 10 ms of digital silence, no jumps.
    gaps, step = dropouts(samples[at(start):at(end)], rate), largest_step(steady)
    print(f"dropouts: {len(gaps)}; largest sample-to-sample jump {step:.4f}")
    assert not gaps
    assert step < CLICK
    # The fan tone moves as tokens of different entropy are shown.
    preset = load_preset("closet")
    low, high = preset.lead_blade_pass_hz(preset.rpm.idle), preset.lead_blade_pass_hz(preset.rpm.high)
    peaks = [peak_hz(signal_[at(t):at(t + 0.5)], rate, low * 0.95, high * 1.05)
             for t in np.arange(start + 3.0, end - 1.5, 0.5)]
    assert semitones(min(peaks), max(peaks)) > 2.0, peaks
    # SIGTERM: a fade, not a click. A cut would hold the level to the last sample; a
    # linear fade leaves about a fifth of it in its last third, and nothing jumps.
    before = signal_[at(end - 1.6):at(end - 1.1)]
    last_third = rms(signal_[at(end - fade / 3):at(end)]) / rms(before)
    print(f"the fade's last third at {last_third:.2f} of the level before it")
    assert last_third < 0.5
    assert largest_step(signal_[at(end - 1.0):]) < CLICK
    # It ends where the fade reaches zero, not cut short: a dropped stream falls from its
    # level straight to digital silence, a played-out fade arrives there near zero. Played
    # out, the last 5 ms held 1-6 % of the level; stopped 0.1 s after pyo computed the
    # ramp (less than the stream holds), 23 %.
    silence = np.flatnonzero(signal_)[-1] + 1   # the recording ends in digital silence
    ending = rms(signal_[silence - at(0.005):silence]) / rms(before)
    print(f"its last 5 ms at {ending:.3f} of the level before the fade")
    assert ending < 0.1


def screenshot(env, path):
    subprocess.run(["import", "-window", "root", str(path)], env=env, check=True,
                   timeout=30)
    import pygame
    image = pygame.image.load(str(path))
    return pygame.surfarray.array3d(image).transpose(1, 0, 2)   # [y, x, rgb]


def test_what_a_visitor_sees(xvfb_env, embedded_model, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(FAST_PASSES.format(preset="closet").replace("gap_seconds: 1",
                                                                  "gap_seconds: 6"))
    env = dict(xvfb_env, PULSE_SERVER="unix:/nonexistent/socket")   # sight only
    piece = Running(env, "--config", str(config), on_screen=True)   # fullscreen
    try:
        piece.wait_for(r"first token shown")

        def shown_in_this_pass():
            lines = [line for _, line in list(piece.lines)]
            ends = [i for i, line in enumerate(lines) if re.search(r"pass \d+ ended", line)]
            return sum("shown '" in line for line in lines[ends[-1] + 1 if ends else 0:])

        # A pass may end early at the model's end token: wait for a page with some text on it.
        deadline = time.monotonic() + 40
        while shown_in_this_pass() < 12 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert shown_in_this_pass() >= 12, piece.log
        pixels = screenshot(env, tmp_path / "during.png")
        assert pixels.shape[:2] == (720, 1280)       # fullscreen on the X screen
        lit = np.any(pixels > 0, axis=2)
        ys, xs = np.nonzero(lit)
        margin = round(0.09 * 720)
        assert lit.sum() > 1500
        assert xs.min() >= margin and xs.max() < 1280 - margin
        assert ys.min() >= margin and ys.max() < 720 - margin
        piece.wait_for(r"pass \d+ ended", timeout=60)
        time.sleep(1.5 + 1.5 + 1.0)                  # hold, fade, and into the gap
        after = screenshot(env, tmp_path / "after.png")
        assert after.max() == 0, "the screen is not black after the fade"
    finally:
        piece.kill()
