"""The hum, rendered offline for a scripted entropy sequence, and measured."""

import dataclasses

import numpy as np
import pytest

from permanent.config import HumConfig
from permanent.room.fans import blade_pass_hz, rpm_for_speed, semitones, speed_from_entropy
from permanent.room.hum_render import HumCommand, render_hum
from permanent.room.preset import available_presets, load_preset

from permanent.measure.audio_analysis import mono, peak_hz, read_wav, rms, window

SETTINGS = HumConfig(spin_up_seconds=0.3, spin_down_seconds=0.5, fade_in_seconds=1.0)
assert SETTINGS.fade_out_seconds <= 0.1   # the default fade-out, the shortest a gallery hears
# (start, entropy bits or None for idle); each plateau lasts 3 s (> 5 time constants).
SCRIPT = [(0.0, None), (3.0, 1.0), (6.0, 7.0), (9.0, 4.0), (12.0, None)]
LENGTH, FADE_AT = 16.0, 15.0


def cues():
    out = [HumCommand(t, "idle") if bits is None else HumCommand(t, "token", bits)
           for t, bits in SCRIPT]
    return out + [HumCommand(FADE_AT, "fade_out", SETTINGS.fade_out_seconds)]


def predicted_hz(preset, bits):
    rpm = preset.rpm.idle if bits is None else preset.rpm_for_entropy(bits, SETTINGS)
    return preset.lead_blade_pass_hz(rpm)


@pytest.fixture(scope="module", params=["closet", "hall"])
def rendered(request, tmp_path_factory):
    preset = load_preset(request.param)
    path = tmp_path_factory.mktemp("hum") / f"{request.param}.wav"
    render_hum(preset, SETTINGS, cues(), LENGTH, path)
    samples, rate = read_wav(path)
    return preset, samples, rate


def test_presets_ship_and_differ():
    assert {"closet", "hall"} <= set(available_presets())
    closet, hall = load_preset("closet"), load_preset("hall")
    assert closet.mains.hz != hall.mains.hz
    assert hall.lead_blade_pass_hz(hall.rpm.idle) < 0.5 * closet.lead_blade_pass_hz(closet.rpm.idle)
    assert len(hall.fans) > len(closet.fans) and hall.room.size > closet.room.size


def test_render_is_stereo_48k_and_the_right_length(rendered):
    _, samples, rate = rendered
    assert rate == 48000 and samples.shape[1] == 2
    assert abs(len(samples) / rate - LENGTH) < 0.01


def test_fan_tone_sits_at_the_predicted_blade_pass_frequency(rendered):
    preset, samples, rate = rendered
    signal = mono(samples)
    measured = []
    for (start, bits), (end, _) in zip(SCRIPT, SCRIPT[1:] + [(FADE_AT, None)]):
        expected = predicted_hz(preset, bits)
        # The last 1.5 s of each plateau: the fans have long since settled.
        found = peak_hz(window(signal, rate, end - 1.5, end), rate, expected * 0.85, expected * 1.15)
        assert abs(found - expected) / expected < 0.02, (preset.description, bits, found, expected)
        measured.append(found)
    idle, low, high, middle, idle_again = measured
    assert idle < low < middle < high and idle_again < low   # the expected way


def test_one_to_seven_bits_moves_the_tone_at_least_three_semitones(rendered):
    preset, _, _ = rendered
    moved = semitones(predicted_hz(preset, 1.0), predicted_hz(preset, 7.0))
    assert moved >= 3.0


def test_mains_line_is_at_the_configured_frequency(rendered):
    preset, samples, rate = rendered
    found = peak_hz(window(mono(samples), rate, 1.0, 3.0), rate, 30, 75)
    assert abs(found - preset.mains.hz) < 0.5


def test_no_clicks_at_start_entropy_changes_or_fade_out(rendered, tmp_path):
    preset, samples, rate = rendered
    signal = mono(samples)
    # Fade in: silence at the first sample, growing gently.
    assert abs(signal[0]) < 1e-4 and rms(window(signal, rate, 0, 0.01)) < 0.002
    assert rms(window(signal, rate, 0.9, 1.0)) > 10 * rms(window(signal, rate, 0, 0.05))
    # Fade out: silence at the end, and no step on the way down.
    assert rms(window(signal, rate, FADE_AT + SETTINGS.fade_out_seconds + 0.05, LENGTH)) < 1e-4
    # Airflow noise hides steps in sample-to-sample differences, so the tonal parts are
    # rendered alone: pure sines move smoothly, a click would be a jump far above that.
    tonal = dataclasses.replace(preset, airflow=dataclasses.replace(
        preset.airflow, level=0.0, hiss_level=0.0))
    path = render_hum(tonal, SETTINGS, cues(), LENGTH, tmp_path / "tonal.wav")
    tones = mono(read_wav(path)[0])
    jumps = np.abs(np.diff(tones))
    steady = jumps[int(4.5 * rate):int(6 * rate)].max()   # settled, low plateau
    highest = jumps[int(7.5 * rate):int(9 * rate)].max()  # settled, high plateau
    for name, start, end in [("start", 0, 0.5), ("to 1 bit", 3, 4), ("to 7 bits", 6, 7),
                             ("to 4 bits", 9, 10), ("to idle", 12, 13), ("fade", FADE_AT, LENGTH)]:
        worst = jumps[int(start * rate):int(end * rate)].max()
        # A gliding tone beating against its own reverb tail can briefly add up to more
        # than a settled one; a click (a step in level) is tens of times larger.
        assert worst <= 2.0 * max(steady, highest), (name, worst, steady, highest)


def test_two_renders_are_identical(tmp_path):
    preset = load_preset("closet")
    a = render_hum(preset, SETTINGS, cues(), 4.0, tmp_path / "a.wav")
    b = render_hum(preset, SETTINGS, cues(), 4.0, tmp_path / "b.wav")
    assert np.array_equal(read_wav(a)[0], read_wav(b)[0])


def test_blade_pass_arithmetic():
    assert blade_pass_hz(3000, 7) == 350.0
    assert rpm_for_speed(0.0, 2000, 4000) == 2000 and rpm_for_speed(1.0, 2000, 4000) == 4000
    assert speed_from_entropy(-3, 1, 7) == 0.0 and speed_from_entropy(99, 1, 7) == 1.0
    assert semitones(440, 880) == pytest.approx(12.0)


def test_bench_measures_the_fan_tone_from_a_render():
    from permanent.measure.bench import measure_hum
    from permanent.config import Config

    result = measure_hum(Config())
    closet = load_preset("closet")
    settings = Config().hum
    for bits, key in ((1.0, "blade_pass_hz_at_1_bit"), (7.0, "blade_pass_hz_at_7_bits")):
        expected = closet.lead_blade_pass_hz(closet.rpm_for_entropy(bits, settings))
        assert abs(result[key] - expected) / expected < 0.02
    assert result["semitones_1_to_7_bits"] >= 3.0
    assert 0 < result["cpu_share_of_one_core"] < 1
    by_channels = result["cpu_share_by_channels"]
    print(f"the hum's CPU, share of one core, by channels: {by_channels}")
    assert set(by_channels) == {2, 4, 8} and by_channels[2] == result["cpu_share_of_one_core"]
    assert by_channels[8] <= 0.10   # the target: eight speakers in a tenth of a core
