"""Pacing and fades on a virtual clock: the same Conductor the live piece runs."""

import random

import pytest

from permanent.config import PacingConfig
from permanent.events import TokenEvent
from permanent.screen.pacing import Conductor, Phase, ease_in_out, perform, token_delay

STEADY = PacingConfig(tokens_per_second=4.0, jitter=0.0, comma_pause_seconds=0.5,
                      sentence_pause_seconds=1.0, line_break_pause_seconds=2.0,
                      uncertainty_pause_seconds_per_bit=0.1, uncertainty_threshold_bits=4.0,
                      hold_seconds=3.0, fade_seconds=2.0, gap_seconds=1.0)


def tokens(pass_id, texts, bits=1.0):
    return [TokenEvent(pass_id, i, t, bits, i == len(texts) - 1) for i, t in enumerate(texts)]


def run(conductor, feed, until, step=0.01):
    """Tick a virtual clock from 0 to `until`; return every cue and the opacity over time."""
    feed = list(feed)
    take = lambda: feed.pop(0) if feed else None
    cues, opacity = [], []
    t = 0.0
    while t <= until:
        cues += conductor.tick(t, take)
        opacity.append((t, conductor.opacity))
        t = round(t + step, 6)
    return cues, opacity


@pytest.mark.parametrize("text, bits, expected", [
    (" the", 1.0, 0.25),
    (" room,", 1.0, 0.25 + 0.5),
    (" hum.", 1.0, 0.25 + 1.0),
    (' end."', 1.0, 0.25 + 1.0),
    ("\n\n", 1.0, 0.25 + 2.0),
    (" perhaps", 6.0, 0.25 + 0.2),   # two bits over the threshold, 0.1 s each
])
def test_token_delay(text, bits, expected):
    token = TokenEvent(0, 0, text, bits, False)
    assert token_delay(token, STEADY, random.Random(1)) == pytest.approx(expected)


def test_jitter_stays_within_its_fraction():
    pacing = PacingConfig(tokens_per_second=2.0, jitter=0.3, uncertainty_pause_seconds_per_bit=0)
    rng = random.Random(5)
    delays = [token_delay(TokenEvent(0, 0, " a", 0.0, False), pacing, rng) for _ in range(500)]
    assert 0.35 - 1e-9 <= min(delays) < 0.4 and 0.6 < max(delays) <= 0.65 + 1e-9


def test_reveal_times_follow_the_pace_not_the_frame_rate():
    texts = ["I", " am", " here,", " now.", " Then", " this"]
    for step in (0.01, 1 / 60, 0.1):
        cues, _ = run(Conductor(STEADY), tokens(0, texts), until=4.0, step=step)
        times = [c.at for c in cues if c.kind == "reveal"]
        assert times == pytest.approx([0.0, 0.25, 0.5, 1.25, 2.5, 2.75])


def test_a_late_token_appears_when_it_arrives():
    conductor = Conductor(STEADY)
    feed = tokens(0, ["a", " b", " c"])
    conductor.tick(0.0, lambda: feed.pop(0))                     # "a" at 0
    assert conductor.tick(0.30, lambda: None) == []              # " b" was due at .25: not ready
    cues = conductor.tick(0.70, lambda: feed.pop(0))             # arrives late
    assert [c.at for c in cues] == [0.70]
    cues = conductor.tick(0.95, lambda: feed.pop(0))             # then the pace resumes
    assert [(c.kind, c.at) for c in cues] == [("reveal", 0.95), ("pass_end", 0.95)]


def test_a_pass_holds_fades_with_an_eased_curve_then_clears_and_waits():
    texts = ["The", " fans", " spin."]
    cues, opacity = run(Conductor(STEADY), tokens(0, texts) + tokens(1, ["Again", " and"]), until=6.6)
    kinds = [(c.kind, round(c.at, 6)) for c in cues]
    # last token at 0.5; hold 3 s; fade 2 s; gap 1 s; next pass at 6.5
    assert kinds == [("reveal", 0.0), ("reveal", 0.25), ("reveal", 0.5), ("pass_end", 0.5),
                     ("fade", 3.5), ("clear", 5.5), ("reveal", 6.5)]
    at = dict((round(t, 2), o) for t, o in opacity)
    assert at[3.0] == 1.0                           # holding
    assert at[4.5] == pytest.approx(0.5, abs=1e-6)  # halfway through the fade
    assert at[3.6] == pytest.approx(1 - ease_in_out(0.05), abs=1e-6)
    assert 0.99 < at[3.6] < 1.0                     # eased: starts slowly, no jump
    assert at[5.0] == pytest.approx(1 - ease_in_out(0.75), abs=1e-6)
    assert at[5.6] == 0.0 and at[6.4] == 0.0        # black through the gap
    assert at[6.5] == 1.0                           # the next pass is visible at once
    fading = [o for t, o in opacity if 3.5 <= t <= 5.5]
    assert all(a >= b for a, b in zip(fading, fading[1:]))   # never brightens mid-fade


def test_a_pass_cut_short_by_a_new_pass_still_ends_calmly():
    feed = [TokenEvent(0, 0, "Half", 1.0, False), TokenEvent(0, 1, " a", 1.0, False),
            TokenEvent(1, 0, "Fresh", 1.0, False)]
    conductor = Conductor(STEADY)
    cues, _ = run(conductor, feed, until=7.0)
    kinds = [(c.kind, round(c.at, 6)) for c in cues]
    assert kinds[:3] == [("reveal", 0.0), ("reveal", 0.25), ("pass_end", 0.5)]
    assert ("reveal", 6.5) in kinds and cues[-1].token.text == "Fresh"


def test_waiting_for_the_first_token_shows_an_empty_page():
    conductor = Conductor(STEADY)
    assert conductor.tick(0.0, lambda: None) == [] and conductor.phase is Phase.WRITING
    assert conductor.opacity == 1.0


def test_easing_has_flat_ends():
    assert ease_in_out(0) == 0 and ease_in_out(1) == 1 and ease_in_out(0.5) == pytest.approx(0.5)
    assert ease_in_out(0.01) < 0.001 and ease_in_out(-1) == 0 and ease_in_out(2) == 1


def test_an_interrupted_pass_fades_at_once():
    conductor = Conductor(STEADY)
    feed = tokens(0, ["Cut", " off", " here", " and"])[:3]   # no last token: the model died
    cues, _ = run(conductor, feed, until=1.0)
    assert [c.kind for c in cues] == ["reveal"] * 3
    cut = conductor.interrupt(1.0)
    assert [(c.kind, c.at) for c in cut] == [("pass_end", 1.0)]
    assert [(c.kind, c.at) for c in conductor.tick(1.01, lambda: None)] == [("fade", 1.0)]
    assert conductor.interrupt(1.5) == []   # only a pass being written can be cut


def test_perform_acts_on_each_cue_and_reports_the_boundary():
    """The one cue-to-action step the live piece and the render share: every reveal at its
    due time in the frame that shows it, the pass's end, and the clear as the boundary."""
    class Recording:
        def __init__(self):
            self.calls = []

        def reveal(self, token, due, now):
            self.calls.append(("reveal", token.text, due, now))

        def pass_ended(self, due):
            self.calls.append(("pass_ended", due))

        def cleared(self):
            self.calls.append(("cleared",))

    conductor = Conductor(STEADY, random.Random(0))
    feed = tokens(0, ["One", " two."])
    take = lambda: feed.pop(0) if feed else None
    stage = Recording()
    assert perform(conductor.tick(0.0, take), stage, 0.0) is False
    assert perform(conductor.tick(0.3, take), stage, 0.3) is False   # " two." due at 0.25
    assert stage.calls == [("reveal", "One", 0.0, 0.0), ("reveal", " two.", 0.25, 0.3),
                           ("pass_ended", 0.25)]
    assert perform(conductor.tick(0.25 + 3.0 + 2.0 + 0.01, take), stage, 5.26) is True
    assert stage.calls[-1] == ("cleared",)
