"""The hum on four speakers, through a real sound server: a 4-channel PulseAudio null
sink, recorded with parec, read channel by channel."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from permanent.config import Config
from permanent.lifecycle import SPAWN
from permanent.measure.audio_analysis import band_correlations, read_wav, rms, tone_level_db
from permanent.measure.audio_soak import dropouts, largest_step
from permanent.room.audio_process import HumSupervisor
from permanent.room.preset import load_preset
from permanent.room.speakers import nearest_speaker, opposite_speaker, ring_shares

from conftest import REPO, private_pulse, recording_the_hum, wait_for_status
from test_piece import Running

pytestmark = pytest.mark.slow

CHANNELS = 4
LOW_BITS, HIGH_BITS = 1.0, 7.0
PLATEAU = 4.0                  # s at each entropy: the fans settle in under 2
NOISE_BAND = (1500.0, 8000.0)  # above every fan's harmonics: the air alone


@pytest.fixture(scope="module")
def quad_pulse(tmp_path_factory):
    env = private_pulse(tmp_path_factory.mktemp("pulse4"), channels=CHANNELS)
    yield env
    subprocess.run(["pulseaudio", "--kill"], env=env, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def recorded(quad_pulse, tmp_path_factory, request):
    """The aisle on four speakers: a plateau at 1 bit, one at 7 bits, then a stop."""
    mp = pytest.MonkeyPatch()
    request.addfinalizer(mp.undo)
    for key in ("PULSE_SERVER", "PULSE_RUNTIME_PATH"):
        mp.setenv(key, quad_pulse[key])
    config = Config()
    config = config.replace(
        audio=dataclasses.replace(config.audio, channels=CHANNELS),
        hum=dataclasses.replace(config.hum, preset="aisle", fade_in_seconds=0.5,
                                spin_up_seconds=0.3, spin_down_seconds=0.5))
    status = SPAWN.Queue()
    wav = tmp_path_factory.mktemp("room4") / "room.wav"
    marks = {}
    with recording_the_hum(quad_pulse, wav, channels=CHANNELS):
        time.sleep(1.0)   # the monitor first replays what the sink last played
        hum = HumSupervisor(config, status).start()
        try:
            marks["playing"] = wait_for_status(status, "playing", 30.0).seconds
            hum.show_token(LOW_BITS)
            time.sleep(PLATEAU)
            marks["high"] = time.monotonic()
            hum.show_token(HIGH_BITS)
            time.sleep(PLATEAU)
            marks["stop"] = time.monotonic()
        finally:
            hum.stop(config.hum.fade_out_seconds)
        time.sleep(0.5)
    samples, rate = read_wav(wav)
    audible = np.flatnonzero(np.abs(samples).max(axis=1) > 1e-3)
    start, end = audible[0] / rate, audible[-1] / rate
    # The first audible sample is `playing` on the recording's own clock.
    at = lambda t: int((start + t - marks["playing"]) * rate)
    return config, samples, rate, at, marks, (int(start * rate), int(end * rate))


def test_the_recording_has_four_channels_and_the_hum_in_each(recorded):
    _, samples, rate, at, marks, (first, last) = recorded
    assert samples.shape[1] == CHANNELS
    steady = samples[at(marks["playing"] + 1.0):at(marks["stop"])]
    assert all(rms(steady[:, c]) > 0.005 for c in range(CHANNELS))


def test_each_fan_is_6_db_stronger_in_its_own_speaker_than_across(recorded):
    config, samples, rate, at, marks, _ = recorded
    preset = load_preset("aisle")
    shares = ring_shares([f.speaker for f in preset.fans], preset.speakers, CHANNELS)
    low = samples[at(marks["high"] - 2.0):at(marks["high"])]
    rpm = preset.rpm_for_entropy(LOW_BITS, config.hum)
    print("\nfan (blades, Hz) | dB at speaker 1 2 3 4 | own - across")
    for fan, share in zip(preset.fans, shares):
        hz = fan.blades * fan.detune * rpm / 60.0
        levels = [tone_level_db(low[:, c], rate, hz) for c in range(CHANNELS)]
        # Between two speakers a fan is its own in both; the louder counts.
        own = max({nearest_speaker(share, CHANNELS), nearest_speaker(share + 0.49 / CHANNELS,
                                                                     CHANNELS)},
                  key=lambda s: levels[s - 1])
        across = opposite_speaker(own, CHANNELS)
        margin = levels[own - 1] - levels[across - 1]
        print(f"{fan.blades:2d} blades {hz:6.1f} Hz | "
              + " ".join(f"{db:6.1f}" for db in levels)
              + f" | speaker {own} - speaker {across} = {margin:.1f} dB")
        assert margin >= 6.0, (fan, levels)


def test_raising_the_entropy_moves_the_lead_fan_in_its_own_speaker(recorded):
    config, samples, rate, at, marks, _ = recorded
    preset = load_preset("aisle")
    own = nearest_speaker(ring_shares([f.speaker for f in preset.fans], preset.speakers,
                                      CHANNELS)[0], CHANNELS)
    channel = samples[:, own - 1]
    low_hz, high_hz = (preset.lead_blade_pass_hz(preset.rpm_for_entropy(bits, config.hum))
                       for bits in (LOW_BITS, HIGH_BITS))
    before = channel[at(marks["high"] - 2.0):at(marks["high"])]
    after = channel[at(marks["stop"] - 2.0):at(marks["stop"])]
    moved = {name: (tone_level_db(part, rate, low_hz), tone_level_db(part, rate, high_hz))
             for name, part in (("at 1 bit", before), ("at 7 bits", after))}
    print(f"\nlead fan in speaker {own}: {low_hz:.1f} Hz / {high_hz:.1f} Hz levels {moved}")
    assert moved["at 1 bit"][0] > moved["at 1 bit"][1] + 10
    assert moved["at 7 bits"][1] > moved["at 7 bits"][0] + 10


def test_the_air_in_each_speaker_is_its_own(recorded):
    _, samples, rate, at, marks, _ = recorded
    steady = samples[at(marks["playing"] + 1.0):at(marks["stop"])]
    correlations = band_correlations(steady, rate, *NOISE_BAND)
    pairs = correlations[~np.eye(CHANNELS, dtype=bool)]
    print(f"\nthe air's correlation between speakers ({NOISE_BAND[0]:.0f}-{NOISE_BAND[1]:.0f}"
          f" Hz): largest {np.abs(pairs).max():.3f}\n{np.round(correlations, 3)}")
    assert np.abs(pairs).max() < 0.3


def test_no_dropouts_and_no_click_at_exit_in_any_speaker(recorded):
    config, samples, rate, at, marks, (first, last) = recorded
    gaps = dropouts(samples[first:last], rate)
    assert not gaps, gaps
    fade = config.hum.fade_out_seconds
    for c in range(CHANNELS):
        steady = samples[at(marks["stop"] - 2.0):at(marks["stop"]), c]
        ending = samples[last - int(1.0 * rate):last + int(0.2 * rate), c]
        tail = samples[last - int(fade / 3 * rate):last + 1, c]
        print(f"speaker {c + 1}: largest step steady {largest_step(steady):.4f}, at the end "
              f"{largest_step(ending):.4f}; the fade's last third at "
              f"{rms(tail) / rms(steady):.2f} of the level")
        # A fade only scales the sound down: no step larger than the hum's own, and its
        # last third well below the level before it (a cut would hold it to the end).
        assert largest_step(ending) <= 1.2 * largest_step(steady)
        assert rms(tail) < 0.5 * rms(steady)


# An output of two channels, as ALSA sees a stereo card: PortAudio counts a `multi`
# device's bindings (over `plug`, which the pulse plugin needs beneath it).
STEREO_OUTPUT = """\
pcm.gallerypair {
    type multi
    slaves.a.pcm { type plug; slave.pcm "pulse" }
    slaves.a.channels 2
    bindings.0 { slave a; channel 0 }
    bindings.1 { slave a; channel 1 }
}
"""


@pytest.fixture
def with_a_stereo_output(quad_pulse, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(STEREO_OUTPUT)
    # The model's cache stays where it is; only ALSA reads the new home.
    return dict(quad_pulse, HOME=str(home), SDL_VIDEODRIVER="dummy",
                XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME",
                                              os.path.expanduser("~/.cache")))


def run_permanent(env, *args):
    return subprocess.run([sys.executable, "-m", "permanent", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_devices_shows_each_outputs_channels(with_a_stereo_output):
    done = run_permanent(with_a_stereo_output, "devices")
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    lines = {line.split()[1]: line for line in done.stdout.splitlines()[1:]}
    assert "(2 channels)" in lines["gallerypair"]
    # The sound server's devices take what its sink has (PortAudio alone says 32).
    for name in ("pulse", "default"):
        assert "(4 channels: the sound server's sink 'hum')" in lines[name], done.stdout


def test_a_ring_on_a_stereo_sink_stops_the_start_naming_the_sink(pulse_env, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("audio:\n  channels: 4\n")
    done = run_permanent(dict(pulse_env, SDL_VIDEODRIVER="dummy"), "--config", str(config),
                         "--windowed")
    print(done.stderr)
    assert done.returncode == 2
    assert re.search(r"line 2: audio.channels: is 4, but the output 'default' \(device \d+, "
                     r"the sound server's sink 'hum'\) has 2 channels. Set audio.channels to "
                     r"2, or give the sink 4 channels or more", done.stderr)
    assert "window open" not in done.stderr


def test_more_channels_than_the_output_has_stops_the_start_naming_both(
        with_a_stereo_output, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("audio:\n  device: gallerypair\n  channels: 4\nhum:\n  preset: aisle\n")
    done = run_permanent(with_a_stereo_output, "--config", str(config), "--windowed")
    print(done.stderr)
    assert done.returncode == 2
    assert re.search(r"line 3: audio.channels: is 4, but the output 'gallerypair' \(device "
                     r"\d+\) has 2 channels. Set audio.channels to 2", done.stderr)
    assert "window open" not in done.stderr and "hum playing" not in done.stderr
    checked = run_permanent(with_a_stereo_output, "check", "--config", str(config))
    assert checked.returncode == 1
    assert "audio.channels: is 4, but the output 'gallerypair'" in checked.stdout
    # The same four speakers on an output that has them: check says so, and passes.
    config.write_text("audio:\n  channels: 4\n")
    checked = run_permanent(with_a_stereo_output, "check", "--config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "audio:   4 channels on 'default'" in checked.stdout


SHORT_PASSES = """\
audio:
  device: {device}
  channels: {channels}
text:
  min_tokens: 8
  max_tokens: 16
pacing:
  tokens_per_second: 12
  hold_seconds: 0.5
  fade_seconds: 0.3
  gap_seconds: 0.3
"""


def test_a_live_edit_asking_too_many_channels_silences_the_room_and_stops_nothing(
        with_a_stereo_output, embedded_model, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(SHORT_PASSES.format(device="default", channels=2))
    piece = Running(with_a_stereo_output, "--windowed", "--config", str(config))
    try:
        piece.wait_for(r"hum playing on default")
        piece.wait_for(r"first token shown")
        config.write_text(SHORT_PASSES.format(device="gallerypair", channels=4))
        piece.wait_for(r"audio.channels: is 4, but the output 'gallerypair' \(device \d+\) "
                       r"has 2 channels", timeout=60)
        shown = piece.count(r"shown '")
        time.sleep(2.0)
        assert piece.process.poll() is None and piece.count(r"shown '") > shown, piece.log
        config.write_text(SHORT_PASSES.format(device="default", channels=2))   # the fix
        deadline = time.monotonic() + 60
        while piece.count(r"hum playing on default") < 2:
            assert time.monotonic() < deadline and piece.process.poll() is None, piece.log
            time.sleep(0.1)
        assert piece.terminate() < 2.0 and piece.process.returncode == 0, piece.log
    finally:
        piece.kill()


def swap_sink(env, channels: int) -> None:
    """The sink `hum` taken away and put back with `channels` channels: the card's profile
    changed under the piece (a sound server restarted on stereo where the ring was)."""
    from conftest import CHANNEL_MAPS

    modules = subprocess.run(["pactl", "list", "short", "modules"], env=env,
                             capture_output=True, text=True, check=True).stdout
    index = next(line.split()[0] for line in modules.splitlines()
                 if "module-null-sink" in line and "sink_name=hum" in line)
    subprocess.run(["pactl", "unload-module", index], env=env, check=True)
    subprocess.run(["pactl", "load-module", "module-null-sink", "sink_name=hum", "rate=48000",
                    f"channels={channels}", f"channel_map={CHANNEL_MAPS[channels]}"],
                   env=env, check=True, capture_output=True)


def test_an_output_back_with_fewer_channels_is_named_and_waited_out(embedded_model, tmp_path):
    env = private_pulse(tmp_path / "pulse", channels=CHANNELS)
    config = tmp_path / "config.yaml"
    config.write_text(SHORT_PASSES.format(device="default", channels=CHANNELS))
    piece = Running(env, "--windowed", "--config", str(config))
    try:
        piece.wait_for(r"hum playing on default")
        piece.wait_for(r"first token shown")
        swap_sink(env, 2)
        piece.wait_for(r"the output now has fewer channels than audio.channels asks: the "
                       r"room is silent until the hum is back", timeout=30)
        shown = piece.count(r"shown '")
        swap_sink(env, CHANNELS)
        piece.wait_for(r"the hum is back on default", timeout=40)
        assert piece.count(r"shown '") > shown and piece.process.poll() is None, piece.log
        assert piece.count(r"fewer channels than audio.channels asks") == 1, piece.log
        print("\n".join(line for _, line in piece.lines if "permanent.audio" in line))
        assert piece.terminate() < 2.0 and piece.process.returncode == 0, piece.log
    finally:
        piece.kill()
        subprocess.run(["pulseaudio", "--kill"], env=env, stderr=subprocess.DEVNULL)
