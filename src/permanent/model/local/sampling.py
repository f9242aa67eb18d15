"""Choosing the next token: a bias against avoided words, repetition penalty, temperature,
top-k, top-p and min-p, then a draw.

The same rules as transformers' logits processors, applied in the same order, but to the
top-k candidates only: sorting and drawing from a 49,152-token vocabulary took longer than
the forward pass of the small model itself, and outside the top k every probability is
zero anyway. tests/test_runtime.py checks the distribution against transformers' own.
"""

from __future__ import annotations

import torch

from ...config import TextConfig


def penalize_repetition(ids: torch.Tensor, logits: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' repetition penalty (CTRL's), in place: each token already in `ids`
    has its logit divided by `penalty` if positive, multiplied if negative. Written out
    here so the model process needs no transformers import to start (a slow one);
    tests/test_runtime.py checks it against transformers' own processor."""
    if penalty == 1.0:
        return logits
    seen = logits.gather(-1, ids)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter_(-1, ids, seen)


class TokenSampler:
    def __init__(self, text: TextConfig, generator: torch.Generator,
                 avoided_ids: torch.Tensor | None = None):
        self.text = text
        self.generator = generator   # the random stream; kept across settings changes
        self.avoided_ids = avoided_ids if text.avoid_strength > 0 else None

    def candidates(self, ids: torch.Tensor, logits: torch.Tensor):
        """(token ids, probabilities) of every token that can be drawn, likeliest first."""
        # One copy of the 49,152 logits, changed in place; the temperature, which keeps
        # their order, divides only the k that are kept (a full-vocabulary pass less).
        scores = logits.clone()
        if self.avoided_ids is not None and len(self.avoided_ids):
            scores[self.avoided_ids] -= self.text.avoid_strength
        penalize_repetition(ids, scores[None], self.text.repetition_penalty)
        k = min(self.text.top_k or scores.numel(), scores.numel())
        top, tokens = torch.topk(scores, k)
        probabilities = torch.softmax(top / self.text.temperature, dim=-1)
        if self.text.top_p < 1.0:
            # Keep the likeliest tokens until they reach top_p; the first always stays.
            before = probabilities.cumsum(dim=-1) - probabilities
            keep = int((before < self.text.top_p).sum().clamp(min=1))
            tokens, probabilities = tokens[:keep], probabilities[:keep]
            probabilities = probabilities / probabilities.sum()
        if self.text.min_p > 0.0:
            # Drop what is far less likely than the favourite (sorted: a prefix stays).
            keep = int((probabilities >= self.text.min_p * probabilities[0]).sum())
            tokens, probabilities = tokens[:keep], probabilities[:keep]
            probabilities = probabilities / probabilities.sum()
        return tokens, probabilities

    def __call__(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The next token, drawn from (1, sequence) ids and their (vocab,) logits: (1, 1)."""
        tokens, probabilities = self.candidates(ids, logits)
        return tokens[torch.multinomial(probabilities, 1, generator=self.generator)][None]
