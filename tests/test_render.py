"""`permanent render`: the offline twin of the piece, measured."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from permanent.measure.audio_analysis import mono, read_wav
from permanent.config import Config
from permanent.room.preset import load_preset
from permanent.render import FanTrack, render

pytestmark = pytest.mark.slow
SECONDS = 45.0


def fan_trajectory(tokens, preset, settings, seconds, step=0.01):
    """The lead fan's blade-pass frequency over time, re-simulated from tokens.jsonl."""
    fan = FanTrack(preset.rpm.idle, settings.spin_up_seconds, settings.spin_down_seconds)
    events = [(t["t"], t["target_rpm"]) for t in tokens]
    events += [(t["t"] + 1e-9, preset.rpm.idle) for t in tokens if t["last"]]
    events.sort()
    times = np.arange(0, seconds, step)
    hz, i = [], 0
    for now in times:
        while i < len(events) and events[i][0] <= now:
            fan.aim(*events[i])
            i += 1
        hz.append(preset.lead_blade_pass_hz(fan.rpm_at(now)))
    return times, np.array(hz)


def tone_centroid(signal, rate, around):
    """Power-weighted mean frequency within 6% of `around`: where a gliding tone sat."""
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal)), n=len(signal) * 4)) ** 2
    freqs = np.fft.rfftfreq(len(signal) * 4, 1 / rate)
    band = (freqs > around * 0.94) & (freqs < around * 1.06)
    return float((freqs[band] * spectrum[band]).sum() / spectrum[band].sum())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, embedded_model):
    out = tmp_path_factory.mktemp("render")
    result = render(Config(), SECONDS, out, seed=3, progress=False)
    return out, result


def test_render_writes_every_file(rendered):
    out, result = rendered
    assert not result.interrupted and result.seconds == SECONDS and result.tokens > 20
    for name in ("hum.wav", "tokens.jsonl", "contact.png", "spectrogram.png"):
        assert (out / name).stat().st_size > 1000, name
    samples, rate = read_wav(out / "hum.wav")
    assert rate == 48000 and samples.shape[1] == 2 and abs(len(samples) / rate - SECONDS) < 0.05
    assert shutil.which("ffmpeg"), "CI installs ffmpeg; the video path must be tested"
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                            "stream=codec_type,width,height:format=duration", "-of", "json",
                            str(out / "piece.mp4")], capture_output=True, text=True, check=True)
    info = json.loads(probe.stdout)
    kinds = sorted(s["codec_type"] for s in info["streams"])
    assert kinds == ["audio", "video"]
    assert abs(float(info["format"]["duration"]) - SECONDS) < 0.2
    lines = [json.loads(l) for l in open(out / "tokens.jsonl", encoding="utf-8")]
    assert set(lines[0]) >= {"t", "pass", "text", "entropy_bits", "fan_rpm", "blade_pass_hz"}
    assert all(a["t"] <= b["t"] for a, b in zip(lines, lines[1:]))


def test_fan_tone_follows_tokens_jsonl_in_every_half_second(rendered):
    out, _ = rendered
    config = Config()
    preset = load_preset(config.hum.preset)
    tokens = [json.loads(l) for l in open(out / "tokens.jsonl", encoding="utf-8")]
    times, expected = fan_trajectory(tokens, preset, config.hum, SECONDS)
    # The re-simulation agrees with what the render wrote at each token.
    for t in tokens:
        k = int(round(t["t"] / 0.01))
        assert abs(expected[k] - t["blade_pass_hz"]) / t["blade_pass_hz"] < 0.01
    signal, rate = read_wav(out / "hum.wav")
    signal = mono(signal)
    worst = 0.0
    # Half-second windows: the fans glide across several semitones within a second now,
    # and a window's centroid only stands for its mean while the glide inside it is small.
    for start in np.arange(1.0, SECONDS - 0.5, 0.5):
        mean = expected[(times >= start) & (times < start + 0.5)].mean()
        window = signal[int(start * rate):int((start + 0.5) * rate)]
        measured = tone_centroid(window, rate, mean)
        error = abs(measured - mean) / mean
        worst = max(worst, error)
        assert error < 0.02, (start, measured, mean)
    print(f"worst half-second deviation from tokens.jsonl: {100 * worst:.2f} %")


def test_same_seed_same_render(tmp_path, embedded_model):
    a, b = tmp_path / "a", tmp_path / "b"
    render(Config(), 12.0, a, seed=11, progress=False)
    render(Config(), 12.0, b, seed=11, progress=False)
    assert (a / "tokens.jsonl").read_bytes() == (b / "tokens.jsonl").read_bytes()
    assert np.array_equal(read_wav(a / "hum.wav")[0], read_wav(b / "hum.wav")[0])
    render(Config(), 12.0, c := tmp_path / "c", seed=12, progress=False)
    assert (a / "tokens.jsonl").read_bytes() != (c / "tokens.jsonl").read_bytes()


def test_a_ring_of_speakers_renders_its_channels_and_the_pair_the_video_carries(
        tmp_path, embedded_model):
    import dataclasses

    base = Config()
    ring = base.replace(audio=dataclasses.replace(base.audio, channels=4),
                        hum=dataclasses.replace(base.hum, preset="aisle"))
    pair = ring.replace(audio=dataclasses.replace(ring.audio, channels=2))
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for config, out in ((ring, a), (ring, b), (pair, c)):
        render(config, 8.0, out, seed=5, progress=False)
    samples, rate = read_wav(a / "hum-4ch.wav")
    assert samples.shape[1] == 4 and abs(len(samples) / rate - 8.0) < 0.05
    assert read_wav(a / "hum.wav")[0].shape[1] == 2
    # Bit-identical for a seed, both files.
    for name in ("hum.wav", "hum-4ch.wav"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    # hum.wav is what the same room plays on a stereo pair, and what the video carries.
    assert (a / "hum.wav").read_bytes() == (c / "hum.wav").read_bytes()
    assert not (c / "hum-2ch.wav").exists()
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries",
                            "stream=channels", "-of", "csv=p=0", str(a / "piece.mp4")],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "2"
