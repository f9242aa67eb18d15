"""`permanent bench`'s model measurements run end to end (on the tiny model: the figures
themselves are for the machine, not for a test)."""

import dataclasses

import pytest

from permanent.measure.bench import VARIANTS, measure_generator, measure_variants
from permanent.config import Config, ModelConfig, TextConfig

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_config(tiny_model):
    return dataclasses.replace(Config(), model=ModelConfig(name=str(tiny_model)),
                               text=TextConfig(seed=2, min_tokens=30, max_tokens=40))


def test_generator_is_measured_against_plain_generate(tiny_config):
    row = measure_generator(tiny_config, passes=2)
    assert row["runtime"] == "compact decoder, float weights, float32"
    assert row["tokens"] >= 2 and row["tokens_per_second"] > 0
    assert row["generate_tokens_per_second"] > 0
    assert row["ratio_to_generate"] == pytest.approx(
        row["tokens_per_second"] / row["generate_tokens_per_second"], rel=0.05)


def test_variants_report_speed_and_how_far_each_moves_the_entropy(tiny_config):
    rows = measure_variants(tiny_config, tokens=24)
    assert len(rows) == len(VARIANTS)
    reference, *others = rows
    assert reference["kl_bits"] == 0 and reference["entropy_shift_bits"] == 0
    compact_float = next(r for r in others if r["note"] == "compact decoder")
    assert compact_float["kl_bits"] < 1e-4          # the same arithmetic, reordered
    packed = [r for r in others if "4-bit" in r["note"] or "8-bit" in r["note"]]
    assert all(r["kl_bits"] > 0 for r in packed)    # rounding the weights shows
    assert all(r["tokens_per_second"] > 0 for r in rows)
