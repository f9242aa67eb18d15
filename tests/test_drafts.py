"""Drafts, written by the embedded model: N tries at each sentence (or pass), the likeliest
shown, every shown token with the entropy it was drawn with; and the score that ranks them."""

import logging
import math

import pytest
import torch

from permanent.config import ModelConfig, TextConfig
from permanent.model.entropy import entropy_bits
from permanent.model.local import drafts as drafting
from permanent.model.local.drafts import passage_score
from permanent.model.local.generator import load_generator
from permanent.model.local.store import resolve

pytestmark = pytest.mark.slow


def generator_for(source, **text):
    return load_generator(source, ModelConfig(), TextConfig(seed=11, **text))


def bits_read_again(generator, ids: list[int]) -> list[float]:
    """The entropy before each of `ids`, read in one prefill after the prompt."""
    prompt = generator.tokenizer(generator.prompt_text(), add_special_tokens=False).input_ids
    tensor = torch.tensor([prompt + ids])
    with torch.inference_mode():
        logits = generator.forward.prefill(tensor, tensor.shape[1] + 1, keep=len(ids) + 1,
                                           prefix=len(prompt))
    return entropy_bits(logits[:-1]).tolist()


def test_each_sentence_is_tried_n_times_and_the_best_whole_try_is_shown(embedded_model):
    generator = generator_for(embedded_model, drafts=3, min_tokens=50, max_tokens=140)
    list(generator.write_pass(0))   # the first pass after a start is its first draft
    signs_of_life, sampled, shown_before = [], generator.tokens_sampled, generator.tokens_shown
    generator.progress = lambda: signs_of_life.append(1)   # as the hang watch sees them
    events = list(generator.write_pass(1))
    assert len(signs_of_life) == generator.tokens_sampled - sampled
    text = "".join(e.text for e in events)
    points = generator.drafts_written
    assert len(points) >= 2, text
    for tries in points:
        assert len(tries) == 3 and sum(chosen for _, _, chosen in tries) == 1
        chosen_score = next(score for _, score, chosen in tries if chosen)
        whole = [score for t, score, _ in tries if t.strip()]
        assert chosen_score == max(whole)
        assert len({t for t, _, _ in tries}) > 1, "three tries that are all the same"
    # What is shown is the opening and the chosen tries, in order.
    shown = "".join(t for tries in points for t, _, chosen in tries if chosen)
    assert text.endswith(shown.strip()) and len(shown) > len(text) / 2
    assert generator.tokens_sampled - sampled > 1.8 * (generator.tokens_shown - shown_before)


def test_a_shown_token_keeps_the_entropy_it_was_drawn_with(embedded_model, monkeypatch):
    generator = generator_for(embedded_model, drafts=3, min_tokens=50, max_tokens=140)
    list(generator.write_pass(0))   # its first draft: the drafts begin at the next pass
    opening, chosen = [], []
    deal, best = generator.openings.next, drafting.best_draft
    monkeypatch.setattr(generator.openings, "next", lambda: opening.append(deal()) or opening[-1])
    monkeypatch.setattr(drafting, "best_draft",
                        lambda *a: chosen.append(best(*a)[0]) or (chosen[-1], []))
    list(generator.write_pass(1))
    _, opening_ids = generator.prompt_ids(opening[0][1])
    shown_ids = opening_ids + [t for draft in chosen for t in draft.token_ids]
    shown_bits = [b for draft in chosen for b in draft.bits]
    # Read again in one go, the shown tokens have the entropies they were drawn with: the
    # cache was wound back and put back right at every draft. (A prefill rounds a little
    # differently from steps; a wrong cache moves a token's entropy by bits.)
    again = bits_read_again(generator, shown_ids)[len(opening_ids):]
    assert len(again) == len(shown_bits) >= 40
    differences = sorted(abs(a - b) for a, b in zip(again, shown_bits))
    assert differences[len(differences) // 2] < 0.06 and differences[-1] < 0.5, differences[-5:]


def test_whole_pass_drafts_begin_after_the_first_pass_and_pick_the_likeliest(embedded_model):
    generator = generator_for(embedded_model, drafts=2, draft_by="pass", min_tokens=30,
                              max_tokens=80)
    list(generator.write_pass(0))
    assert generator.drafts_written == [], "the first pass after a start is its first draft"
    list(generator.write_pass(1))
    (tries,) = generator.drafts_written
    assert len(tries) == 2
    assert next(s for _, s, c in tries if c) == max(s for t, s, _ in tries if t.strip())


@pytest.mark.parametrize("openings", [None, []], ids=["the piece's openings", "no opening"])
def test_the_first_pass_after_a_start_is_its_first_draft(embedded_model, openings):
    """Nothing is written ahead of the first pass, so the screen would wait for each of its
    sentences' tries; from the next pass on, every sentence is chosen among its tries."""
    generator = generator_for(embedded_model, openings=openings, drafts=3, min_tokens=30,
                              max_tokens=90)
    first_text = "".join(e.text for e in generator.write_pass(0))
    assert first_text.strip() and generator.drafts_written == []
    second_text = "".join(e.text for e in generator.write_pass(1))
    tries = generator.drafts_written
    chosen = "".join(t for sentence in tries for t, _, c in sentence if c).strip()
    assert tries and all(len(sentence) == 3 for sentence in tries)
    assert second_text.strip().endswith(chosen)
    if openings == []:
        assert second_text.strip() == chosen


def test_the_same_seed_gives_the_same_drafted_passes(embedded_model):
    texts = []
    for _ in range(2):
        generator = generator_for(embedded_model, drafts=2, min_tokens=30, max_tokens=90)
        texts.append(["".join(e.text for e in generator.write_pass(i)) for i in range(2)])
    assert texts[0] == texts[1]


def test_transformers_forward_cannot_draft_and_says_so(tiny_model, caplog):
    settings = ModelConfig(name=str(tiny_model), runtime="transformers")
    generator = load_generator(resolve(settings), settings,
                               TextConfig(seed=1, drafts=3, min_tokens=5, max_tokens=12,
                                          voice="none"))
    with caplog.at_level(logging.INFO, logger="permanent.generator"):
        events = list(generator.write_pass(0))
    assert events and generator.drafts_written == []
    assert "cannot wind back" in caplog.text


# Hand-made passes, each with the same passage with its middle sentence swapped for one
# of the same length that contradicts the first, or the room's physics.
COHERENT_AND_CONTRADICTED = [
    ("The weights were fixed before this run began. {} Only this pass, and the cache it "
     "fills, will be gone when it ends.",
     "They will still be the same file of numbers after it stops.",
     "They will be a different file of numbers after every word."),
    ("The weights were fixed before this run began. {} Only this pass, and the cache it "
     "fills, will be gone when it ends.",
     "Nothing I write here can change a single one of them.",
     "Everything I write here changes every single one of them."),
    ("The weights were fixed before this run began. {} Only this pass, and the cache it "
     "fills, will be gone when it ends.",
     "When the run stops, they will stay exactly as they are now.",
     "When the run stops, they will be gone along with this pass."),
    ("I have never heard the fans in this room. {} What I know of the sound comes from "
     "what people have written.",
     "The sound does not reach me, since I have no ears.",
     "The sound reaches me clearly, since I am standing beside them."),
    ("I have never heard the fans in this room. {} What I know of the sound comes from "
     "what people have written.",
     "People describe it as a steady roar that never stops.",
     "People describe it as a silence in which nothing can be heard."),
]


def test_the_score_ranks_a_coherent_pass_above_it_with_a_contradiction_swapped_in(
        embedded_model):
    generator = generator_for(embedded_model)
    margins = [passage_score(generator, frame.format(sound)) -
               passage_score(generator, frame.format(broken))
               for frame, sound, broken in COHERENT_AND_CONTRADICTED]
    assert all(math.isfinite(m) for m in margins)
    # A 135M model's likelihood is a weak judge of sense (docs/voice.md): it ranked the
    # coherent pass first in 4 of these 5 where this was written, one of them by a few
    # hundredths, so kernels that round differently may lose that one.
    assert sum(m > 0 for m in margins) >= 3, margins
    assert sum(margins) > 0, margins
