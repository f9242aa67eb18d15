"""The hum on 2 to 8 speakers, rendered offline by pyo and measured channel by channel:
each fan in its own speaker, air of its own at every speaker, the mains and the room at
all of them, and the fans still following the entropy."""

import dataclasses

import numpy as np
import pytest

from permanent.config import AudioConfig, Config, HumConfig
from permanent.errors import ConfigError
from permanent.measure.audio_analysis import band_correlations, read_wav, tone_level_db, window
from permanent.room.hum_render import HumCommand, render_hum
from permanent.room.preset import Preset, load_preset
from permanent.room.speakers import nearest_speaker, opposite_speaker, ring_shares, stereo_pans
from permanent.schema import load_yaml

SETTINGS = HumConfig(spin_up_seconds=0.3, spin_down_seconds=0.5, fade_in_seconds=0.5)
LOW_BITS, HIGH_BITS = 1.0, 7.0
SWITCH, LENGTH = 4.0, 8.0
# Where the air alone sounds: above every fan's harmonics, below the top of the hiss.
NOISE_BAND = (1500.0, 8000.0)


def render(tmp_path, preset_name, channels, lead_speaker=None, preset=None):
    preset = preset or load_preset(preset_name)
    path = tmp_path / f"{preset_name}-{channels}-{lead_speaker}.wav"
    render_hum(preset, SETTINGS, [HumCommand(0.0, "token", LOW_BITS),
                                  HumCommand(SWITCH, "token", HIGH_BITS)],
               LENGTH, path, channels=channels, lead_speaker=lead_speaker)
    samples, rate = read_wav(path)
    return preset, samples, rate


def fan_hz(preset, fan, bits):
    return fan.blades * fan.detune * preset.rpm_for_entropy(bits, SETTINGS) / 60.0


@pytest.fixture(scope="module")
def aisle4(tmp_path_factory):
    return render(tmp_path_factory.mktemp("aisle"), "aisle", 4)


def test_the_render_has_a_channel_a_speaker(tmp_path, aisle4):
    assert aisle4[1].shape[1] == 4
    assert render(tmp_path, "closet", 8)[1].shape[1] == 8


def test_each_fan_is_at_least_6_db_stronger_in_its_speaker_than_across_the_room(aisle4):
    preset, samples, rate = aisle4
    shares = ring_shares([f.speaker for f in preset.fans], preset.speakers, 4)
    settled = window(samples, rate, SWITCH - 2.0, SWITCH)
    for fan, share in zip(preset.fans, shares):
        hz = fan_hz(preset, fan, LOW_BITS)
        levels = [tone_level_db(settled[:, c], rate, hz) for c in range(4)]
        # A fan between two speakers is its own in both: the louder of them counts (the
        # tone and its own reverb can cancel a little at either, as in a real room).
        own = max({nearest_speaker(share, 4), nearest_speaker(share + 0.49 / 4, 4)},
                  key=lambda s: levels[s - 1])
        across = opposite_speaker(own, 4)
        print(f"{fan.blades}-blade fan at {hz:.1f} Hz, speaker {own}: "
              + " ".join(f"{db:.1f}" for db in levels))
        assert levels[own - 1] - levels[across - 1] >= 6.0, (fan, levels)


def test_the_air_at_each_speaker_is_its_own(aisle4):
    _, samples, rate = aisle4
    correlations = band_correlations(window(samples, rate, 1.0, LENGTH), rate, *NOISE_BAND)
    worst = np.abs(correlations[~np.eye(4, dtype=bool)]).max()
    print(f"the air's largest correlation between two speakers: {worst:.3f}")
    assert worst < 0.3


def test_mains_and_reverb_reach_every_speaker(tmp_path):
    # One fan, at speaker 1, and no air: what the other speakers carry of it is the room.
    aisle = load_preset("aisle")
    one_fan = dataclasses.replace(aisle, fans=aisle.fans[:1], airflow=dataclasses.replace(
        aisle.airflow, level=0.0, hiss_level=0.0))
    preset, samples, rate = render(tmp_path, "one-fan", 4, preset=one_fan)
    settled = window(samples, rate, SWITCH - 2.0, SWITCH)
    hz = fan_hz(preset, preset.fans[0], LOW_BITS)
    mains = [tone_level_db(settled[:, c], rate, preset.mains.hz) for c in range(4)]
    fan = [tone_level_db(settled[:, c], rate, hz) for c in range(4)]
    print("mains dB", [round(m, 1) for m in mains], "the fan dB", [round(f, 1) for f in fan])
    # Alike everywhere, but for the room: a steady tone and its own reverb add up a
    # little differently at each speaker, as standing waves do.
    assert max(mains) - min(mains) < 6.0
    assert min(fan[1:]) > fan[0] - 30.0        # its reverb in every other speaker ...
    assert max(fan[1:]) < fan[0] - 6.0         # ... well below the fan itself


@pytest.mark.parametrize("channels", [4, 8])
def test_entropy_still_drives_every_fan_in_every_speaker_count(tmp_path, channels):
    preset, samples, rate = render(tmp_path, "aisle", channels)
    shares = ring_shares([f.speaker for f in preset.fans], preset.speakers, channels)
    for fan, share in zip(preset.fans, shares):
        own = samples[:, nearest_speaker(share, channels) - 1]
        low, high = fan_hz(preset, fan, LOW_BITS), fan_hz(preset, fan, HIGH_BITS)
        before = window(own, rate, SWITCH - 2.0, SWITCH)
        after = window(own, rate, LENGTH - 2.0, LENGTH)
        # The tone has left the low pitch and sits at the high one.
        assert tone_level_db(after, rate, high) > tone_level_db(after, rate, low) + 10, fan
        assert tone_level_db(before, rate, low) > tone_level_db(before, rate, high) + 10, fan


def test_the_lead_speaker_moves_the_lead_fan(tmp_path):
    preset, samples, rate = render(tmp_path, "aisle", 4, lead_speaker=3)
    hz = fan_hz(preset, preset.lead, LOW_BITS)
    settled = window(samples, rate, SWITCH - 2.0, SWITCH)
    levels = [tone_level_db(settled[:, c], rate, hz) for c in range(4)]
    assert int(np.argmax(levels)) == 2 and levels[2] - levels[0] >= 6.0, levels


def test_places_on_a_pair_and_on_a_ring():
    # A preset that places nothing spreads its fans evenly.
    assert stereo_pans([None, None]) == [0.25, 0.75]
    assert ring_shares([None] * 4, 4, 8) == [0.0, 0.25, 0.5, 0.75]
    # Written for a ring of 4, played on 8: each keeps its share of the way round.
    assert ring_shares([1, 2.5, 4.5], 4, 8) == [0.0, 0.375, 0.875]
    assert ring_shares([1, 2], 4, 6, lead_speaker=4) == [0.5, 0.25]
    assert stereo_pans([0.4, 0.6], lead_speaker=2) == [1.0, 0.6]
    assert [opposite_speaker(s, 4) for s in (1, 2, 3, 4)] == [3, 4, 1, 2]
    assert nearest_speaker(0.99, 8) == 1


@pytest.mark.parametrize("text, words", [
    ("fans:\n  - speaker: 1\n  - blades: 5\n", "fans[1] has no speaker while fans[0] has"),
    ("speakers: 4\nfans:\n  - speaker: 5.5\n", "past the last of the preset's 4 speakers"),
    ("fans:\n  - pan: 0.2\n  - pan: 0.8\n  - blades: 9\n", "fans[2] has no pan"),
])
def test_a_preset_places_every_fan_or_none(text, words):
    with pytest.raises(ConfigError, match="aisle.yaml, line 1|aisle.yaml, line 2") as caught:
        load_yaml(Preset, text, "aisle.yaml")
    assert words in str(caught.value)


def test_the_default_is_a_stereo_pair():
    assert AudioConfig().channels == 2 and AudioConfig().lead_speaker is None
    assert Config().audio == AudioConfig()
