"""How unsure the model is: Shannon entropy of its next-token distribution, in bits."""

from __future__ import annotations

import math

import torch

_LN2 = math.log(2.0)


def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy over the last dimension of raw logits, in bits.

    H = -sum p log p, computed from log-softmax so that p = 0 entries contribute 0
    rather than 0 * -inf. Zero for a certain token, log2(N) for N equally likely ones.
    """
    return entropy_bits_of(torch.log_softmax(logits.float(), dim=-1))


def entropy_bits_of(logp: torch.Tensor) -> torch.Tensor:
    """The same, from log-probabilities a caller already has (a draft needs both)."""
    nats = -(logp.exp() * logp).nan_to_num(0.0).sum(dim=-1)  # 0 * -inf is nan: count it as 0
    return (nats / _LN2).clamp_min(0.0)
