import math

import torch

from permanent.model.entropy import entropy_bits


def test_one_hot_is_zero_bits():
    logits = torch.full((49152,), -1e4)
    logits[7] = 10.0
    assert entropy_bits(logits).item() < 1e-6


def test_minus_infinity_logits_count_as_zero_probability():
    logits = torch.tensor([0.0, 0.0, float("-inf"), float("-inf")])
    assert abs(entropy_bits(logits).item() - 1.0) < 1e-6


def test_uniform_over_n_is_log2_n():
    for n in (2, 10, 1000, 49152):
        assert abs(entropy_bits(torch.zeros(n)).item() - math.log2(n)) < 1e-4


def test_matches_torch_categorical_on_random_logits():
    torch.manual_seed(0)
    logits = torch.randn(64, 5000) * 3
    expected = torch.distributions.Categorical(logits=logits).entropy() / math.log(2)
    assert torch.allclose(entropy_bits(logits), expected, atol=1e-4)


def test_half_precision_logits_are_measured_in_float32():
    logits = (torch.randn(3000) * 4).to(torch.bfloat16)
    expected = torch.distributions.Categorical(logits=logits.float()).entropy() / math.log(2)
    assert abs(entropy_bits(logits).item() - expected.item()) < 1e-3
