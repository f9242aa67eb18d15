"""What the curator sets is never lost on its way to a child process: a burst of settings
ends on the last of them, and a burst of volume changes in a flood of fan targets ends at
the last volume, as heard in the recorded room."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from permanent.config import Config, load_config
from permanent.lifecycle import SPAWN
from permanent.measure.audio_analysis import mono, read_wav, rms
from permanent.model.process import ModelSupervisor
from permanent.room.audio_process import HumSupervisor

from conftest import recording_the_hum, wait_for_status

pytestmark = pytest.mark.slow


def test_a_burst_of_100_settings_applies_the_last(tiny_model, tmp_path):
    config = tmp_path / "config.yaml"
    # A short opening of its own: the piece's are whole sentences, shown whole however
    # short a pass is asked to be.
    config.write_text(f"model:\n  name: {tiny_model}\ntext:\n  min_tokens: 150\n"
                      "  max_tokens: 200\n  seed: 1\n  openings: ['A fan.']\n")
    settings = load_config(config)
    status = SPAWN.Queue()
    model = ModelSupervisor(settings, status).start()
    try:
        wait_for_status(status, "ready")
        model.ready()
        # 99 saves that keep long passes, then the one that matters: passes of 6 tokens.
        for n in range(99):
            model.apply(settings.replace(text=dataclasses.replace(
                settings.text, max_tokens=199 - n % 3)))
        model.apply(settings.replace(text=dataclasses.replace(
            settings.text, min_tokens=4, max_tokens=6)))
        passes: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(passes) < 6:
            model.watch(time.monotonic())   # as the main loop does every frame
            if (token := model.take()) is None:
                time.sleep(0.005)
                continue
            passes[token.pass_id] = passes.get(token.pass_id, 0) + 1
        lengths = [passes[p] for p in sorted(passes)]
        print(f"pass lengths after the burst: {lengths}")
        # Passes written ahead keep the old length; from then on, every one is short (an
        # opening is shown whole, so a pass may be a token or two over).
        assert len(lengths) >= 6 and all(n <= 10 for n in lengths[-3:]), lengths
    finally:
        model.stop()


def test_a_burst_of_volume_changes_in_a_flood_of_tokens_ends_at_the_last(
        pulse_env, tmp_path, monkeypatch):
    for key in ("PULSE_SERVER", "PULSE_RUNTIME_PATH"):
        monkeypatch.setenv(key, pulse_env[key])
    config = Config()
    config = config.replace(hum=dataclasses.replace(config.hum, volume=0.5,
                                                    fade_in_seconds=0.5))
    status = SPAWN.Queue()
    wav = tmp_path / "room.wav"
    with recording_the_hum(pulse_env, wav):
        time.sleep(1.0)   # the monitor first replays what the sink last played
        hum = HumSupervisor(config, status).start()
        try:
            wait_for_status(status, "playing", timeout=30)
            for _ in range(50):
                hum.show_token(3.0)
            time.sleep(3.0)
            for n in range(2000):   # far faster than the hum reads them
                hum.show_token(3.0)
                if n % 100 == 99:
                    hum.set_volume(0.6 - n / 20000, 0.05)
            hum.set_volume(0.125, 0.3)   # the last word
            for _ in range(500):
                hum.show_token(3.0)
            for _ in range(100):
                hum.watch(time.monotonic())   # as the main loop does every frame
                time.sleep(0.02)
            time.sleep(2.0)
        finally:
            hum.stop(0.1)
    # Levels from the recording alone: parec may join after the hum has begun, and lose its
    # last buffer at the end, so the wall clock does not place its samples to a tenth of a
    # second. The loud stretch is before the last word; the recording ends on the quiet
    # one (four seconds of it, the stop's fade in its last tenths).
    signal_ = mono(read_wav(wav)[0])
    tenth = 4800
    level = np.array([rms(signal_[i:i + tenth]) for i in range(0, len(signal_) - tenth, tenth)])
    before = float(np.median(level[level > 0.6 * level.max()]))
    after = float(np.median(level[-30:-5]))   # 3.0 to 0.5 s before the recording's end
    print(f"level before the flood {before:.4f}, after {after:.4f}: x{after / before:.3f} "
          f"(asked 0.125 / 0.5 = 0.25)")
    assert 0.2 < after / before < 0.3
