"""How passes begin: dealt so that a visitor who stays cannot learn them, and counted."""

import random
from collections import Counter

import pytest

from permanent.config import Config, TextConfig
from permanent.measure import reading
from permanent.measure.audition import AuditionedPass, summarize
from permanent.model.voice.openings import FREE, Openings, first_sentence, piece_openings


def four_words(text: str) -> str:
    return " ".join(reading.words(text)[:4])


def test_the_piece_has_a_thousand_openings_each_a_whole_sentence_of_its_theme():
    themes = piece_openings()
    assert len(themes) == 3 and all(len(cards) >= 300 for cards in themes.values())
    every = [card for cards in themes.values() for card in cards]
    assert len({four_words(card) for card in every}) == len(every)
    for card in every:
        assert reading.sentences(card) == [card], card       # one sentence, ended
        assert not {"you", "your"} & set(reading.words(card)), card


@pytest.mark.parametrize("seed", range(5))
def test_twenty_consecutive_passes_begin_in_twenty_ways_and_every_theme_comes_back(seed):
    openings = Openings(None, random.Random(seed))
    dealt = [openings.next() for _ in range(20)]
    assert len({four_words(opening) for _, opening in dealt}) == 20
    themes = Counter(theme for theme, _ in dealt)
    # The themes take turns, in an order shuffled each round: of 20, each has 6 or 7.
    assert set(themes.values()) <= {6, 7}, themes
    assert len({tuple(t for t, _ in dealt[i:i + 3]) for i in range(0, 18, 3)}) > 1, \
        "the order of the themes must not repeat round after round"


def test_an_opening_returns_only_after_all_of_its_theme_have_been_shown():
    openings = Openings(None, random.Random(1))
    size = {theme: len(cards) for theme, cards in piece_openings().items()}
    seen: dict[str, list[str]] = {theme: [] for theme in size}
    for _ in range(sum(size.values())):
        theme, opening = openings.next()
        seen[theme].append(opening)
    assert all(len(set(cards)) == size[theme] for theme, cards in seen.items())


def test_a_configured_list_is_dealt_without_repeats_and_an_empty_one_starts_nothing():
    mine = ["The fans.", "A disk wakes.", "  ", "The heat rises."]
    openings = Openings(mine, random.Random(3))
    first_round = [openings.next() for _ in range(3)]
    assert sorted(o for _, o in first_round) == ["A disk wakes.", "The fans.", "The heat rises."]
    assert {theme for theme, _ in first_round} == {""}
    assert Openings([], random.Random(3)).next() == ("", FREE)


def test_a_first_sentence_ends_where_the_sentence_does_not_inside_a_number():
    assert first_sentence("The fan runs at 0.5 of its speed. Then faster.") == \
        "The fan runs at 0.5 of its speed."
    assert first_sentence("No end here") == "No end here"


def test_the_config_takes_an_empty_list_and_refuses_only_blank_openings():
    assert TextConfig(openings=[]).validate() is None
    key, message = TextConfig(openings=["", " "]).validate()
    assert key == "openings" and "[]" in message


def test_the_audition_counts_openings_and_themes():
    def audited(number, text, theme):
        return AuditionedPass(number, text, [1.0, 3.0, 5.0], reading.read_pass(text), theme)

    written = [audited(1, "The weights stay here. They do not move.", "weights"),
               audited(2, "The weights stay here, and the run ends.", "weights"),
               audited(3, "A fan I never heard is spinning.", "room")]
    summary = summarize(written, Config())
    assert summary["distinct_openings"] == 2        # "the weights stay here" twice
    assert summary["themes"] == {"room": 1, "weights": 2}
