"""How the loaded model runs forward: the compact Llama decoder, or transformers' own.

Both give the generator the same two calls, `prefill(ids, capacity, keep)` and
`step(token_id)`, each returning logits; which one runs, and how its weights are held,
follows model.runtime, model.weights and model.dtype in config.yaml.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from .compact_llama import CompactLlama, Unsupported, unsupported_reason
from ...config import ModelConfig
from .kernels import Packing
from .weight_packing import PackedLinear, fallback_note, kernel_note, output_packing


class ModelForward(Protocol):
    packed: list[PackedLinear]   # its packed layers: the description names any that fell back

    def prefill(self, ids: torch.Tensor, capacity: int, keep: int = 1,
                prefix: int = 0) -> torch.Tensor:
        """Start a sequence of (1, n) ids, room for `capacity` positions in all; logits
        (keep, vocab) for its last `keep` positions. The first `prefix` ids are the part
        every sequence shares (the prompt)."""

    def step(self, token_id: torch.Tensor) -> torch.Tensor:
        """Append one (1, 1) token; logits (vocab,) for the next."""


class TransformersForward:
    """transformers' forward with its own growing key/value cache: runs any causal LM."""

    def __init__(self, model, packing: Packing):
        if packing != "float":
            model.lm_head = PackedLinear([model.lm_head], output_packing(packing))
            _pack_linears(model, packing)   # the rest: PackedLinear is no nn.Linear
        self.model = model
        self.cache = None
        self.packed = [m for m in model.modules() if isinstance(m, PackedLinear)]

    def prefill(self, ids: torch.Tensor, capacity: int, keep: int = 1,
                prefix: int = 0) -> torch.Tensor:
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=keep)
        self.cache = out.cache
        return out.logits[0]

    def step(self, token_id: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=token_id, cache=self.cache, use_cache=True)
        self.cache = out.cache
        return out.logits[0, -1]


def _pack_linears(module: nn.Module, packing: Packing) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, PackedLinear([child], packing))
        else:
            _pack_linears(child, packing)


def choose_packing(settings: ModelConfig, embedded: bool, device: torch.device) -> Packing:
    """auto: the embedded model, shipped as 4-bit, runs as 4-bit on a CPU; any other
    model keeps the precision it was loaded in (int8/int4 are opt-in: they move entropy)."""
    if device.type != "cpu":
        return "float"   # the integer kernels are CPU ones; a GPU is not bound by bytes here
    if settings.weights == "auto":
        return "int4" if embedded else "float"
    return settings.weights


def activation_dtype(settings: ModelConfig, packing: Packing) -> torch.dtype:
    """auto: bfloat16 beside packed weights, whose kernels take bf16 anyway (a little
    faster, the same KL); float32 otherwise, which a CPU runs fastest. The compact
    decoder keeps its residual stream in float32 whatever this says: the dtype is that
    of the key/value cache and of what the matrices read."""
    if settings.dtype == "auto":
        return torch.bfloat16 if packing != "float" else torch.float32
    return getattr(torch, settings.dtype)


def open_runtime(model, settings: ModelConfig, packing: Packing) -> tuple[ModelForward, str]:
    """The forward the generator will call, and a few words on what it is."""
    reason = unsupported_reason(model) if settings.runtime == "auto" else \
        "model.runtime is transformers"
    dtype = str(model.dtype).removeprefix("torch.")
    if reason is None:
        try:
            forward, words = CompactLlama(model, packing), "compact decoder"
            if forward.c_step is not None:
                words += " (a token's layers in one C call)"
        except Unsupported as e:
            reason = str(e)
    if reason is not None:
        forward, words = TransformersForward(model, packing), f"transformers' forward ({reason})"
    # Layers the kernels could not take are named here, so the model-ready log line and
    # the bench say so: otherwise a packed model that runs partly in float looks exact.
    notes = "; ".join(note for note in (kernel_note(forward.packed),
                                        fallback_note(forward.packed)) if note)
    return forward, f"{words}, {packing} weights{f' ({notes})' if notes else ''}, {dtype}"
