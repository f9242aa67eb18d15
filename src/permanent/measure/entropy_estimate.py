"""How well the entropy of a server's top-k log-probabilities stands for the exact one.

The embedded model writes passes as the piece would; then one forward over each pass
gives the full next-token distribution at every token. Its exact entropy is compared with
`entropy_from_top_logprobs` of its k likeliest log-probabilities: what a server sends.
`fit_offset` chooses the tail's offset that makes the estimate's mean absolute error least.

    permanent bench entropy [--tokens 2000] [--top-k 20] [--seed 0]
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from ..config import Config

RANGES = ((0.0, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 8.0), (8.0, 99.0))


@dataclass
class Sample:
    exact: np.ndarray        # bits, one per token
    top: np.ndarray          # (tokens, max_k) log-probabilities in nats, likeliest first


def sample_model(config: Config, tokens: int, max_k: int = 100) -> Sample:
    """The embedded model's own writing, `tokens` long, with every token's exact entropy
    and its `max_k` likeliest log-probabilities."""
    import torch

    from ..model.entropy import entropy_bits
    from ..model.local.generator import load_generator
    from ..model.local.store import ensure_converted, progress_log, resolve

    source = resolve(config.model, config.base_dir)
    ensure_converted(source, log=progress_log)
    generator = load_generator(source, config.model, config.text, config.base_dir)
    exact, top = [], []
    pass_id = 0
    while sum(len(e) for e in exact) < tokens:
        written = "".join(event.text for event in generator.write_pass(pass_id))
        pass_id += 1
        prompt_ids, text_ids = generator.prompt_ids(written)
        ids = torch.tensor([prompt_ids + text_ids], device=generator.device)
        with torch.inference_mode():
            # The logits at the prompt's last position and after each written token but
            # the last predict the written tokens: the distributions the pass was drawn from.
            logits = generator.forward.prefill(ids, ids.shape[1] + 1, keep=len(text_ids) + 1)
        logits = logits[:-1].float()
        exact.append(entropy_bits(logits).cpu().numpy())
        top.append(torch.log_softmax(logits, dim=-1).topk(max_k, dim=-1).values.cpu().numpy())
    return Sample(np.concatenate(exact)[:tokens], np.concatenate(top)[:tokens])


def estimates(sample: Sample, k: int, offset_bits: float) -> np.ndarray:
    from ..model.server.top_k_entropy import entropy_from_top_logprobs

    return np.array([entropy_from_top_logprobs(row[:k].tolist(), offset_bits)
                     for row in sample.top])


def fit_offset(sample: Sample, k: int) -> float:
    """The tail offset, in bits, with the least mean absolute error (to 0.05 bits)."""
    grid = np.arange(0.0, 8.0001, 0.05)
    errors = [np.abs(estimates(sample, k, o) - sample.exact).mean() for o in grid]
    return float(grid[int(np.argmin(errors))])


def report(sample: Sample, k: int, offset_bits: float) -> dict:
    """Mean absolute error overall and by exact-entropy range, and the mean signed error."""
    error = estimates(sample, k, offset_bits) - sample.exact
    by_range = []
    for low, high in RANGES:
        inside = (sample.exact >= low) & (sample.exact < high)
        if inside.any():
            by_range.append(dict(bits=f"{low:g}-{high:g}" if high < 99 else f">={low:g}",
                                 tokens=int(inside.sum()),
                                 mae=round(float(np.abs(error[inside]).mean()), 3),
                                 bias=round(float(error[inside].mean()), 3)))
    return dict(top_k=k, offset_bits=offset_bits, tokens=int(len(error)),
                mae=round(float(np.abs(error).mean()), 3),
                bias=round(float(error.mean()), 3),
                exact_median=round(float(statistics.median(sample.exact)), 2),
                by_range=by_range)


def print_report(result: dict) -> None:
    print(f"entropy from the top {result['top_k']} log-probabilities, tail offset "
          f"{result['offset_bits']:.2f} bits, over {result['tokens']} tokens: mean absolute "
          f"error {result['mae']:.3f} bits, mean error {result['bias']:+.3f}")
    print(f"  {'exact bits':>10}  {'tokens':>6}  {'MAE':>6}  {'mean error':>10}")
    for row in result["by_range"]:
        print(f"  {row['bits']:>10}  {row['tokens']:>6}  {row['mae']:>6.3f}  "
              f"{row['bias']:>+10.3f}")
