"""A compact forward pass for Llama-shaped models, one token at a time.

transformers' forward is general: masks, cache objects and hooks cost about as much as the
arithmetic when the model is as small as the embedded one. This decoder runs the same
weights through the same operations in fewer, larger steps, because at one token a step
every torch call costs a few microseconds whatever its size:
- q/k/v and gate/up each packed into one matrix (see `weight_packing`);
- the residual stream held in float32, as llama.cpp holds it, so norms and the voice's
  products need no conversions; on a CPU the key/value cache too, where torch's attention
  over bfloat16 was many times slower; only the kernels' inputs are in the narrower
  activation dtype;
- each rotary pair laid side by side in the q and k rows (the order llama.cpp's GGUF files
  use), so the rotation is one complex multiplication, in place;
- a key/value cache written in place instead of concatenated, and kept for the prompt the
  next pass shares; each opening's rows past the prompt are kept too.
Its logits match transformers' to float rounding (tests/test_runtime.py checks that).

Used for architectures that are this shape (Llama, Qwen2) when model.runtime is auto;
everything else runs through transformers.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch.nn import functional as F

from . import decode_step
from .kernels import Packing
from .weight_packing import PackedLinear, output_packing

SUPPORTED = {"llama", "qwen2"}


class Unsupported(ValueError):
    """This model's shape is one the compact decoder does not run; the words say why."""


def unsupported_reason(model) -> str | None:
    """Why this model can't use the compact decoder, or None if it can."""
    config = model.config
    if config.model_type not in SUPPORTED:
        return f"architecture {config.model_type!r}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    if getattr(config, "use_sliding_window", False):
        return "sliding-window attention"
    if (config.rope_parameters or {}).get("rope_type", "default") == "dynamic":
        return "dynamic rotary scaling"
    return None


class _Layer:
    def __init__(self, qkv, out, gate_up, down, attention_norm, mlp_norm):
        self.qkv, self.out, self.gate_up, self.down = qkv, out, gate_up, down
        self.attention_norm, self.mlp_norm = attention_norm, mlp_norm   # RMSNorm weights

    @classmethod
    def packed_from(cls, block, packing: Packing, qkv_rows: torch.Tensor) -> "_Layer":
        attention, mlp = block.self_attn, block.mlp
        return cls(PackedLinear([attention.q_proj, attention.k_proj, attention.v_proj], packing,
                                rows=qkv_rows),
                   PackedLinear([attention.o_proj], packing),
                   PackedLinear([mlp.gate_proj, mlp.up_proj], packing),
                   PackedLinear([mlp.down_proj], packing),
                   block.input_layernorm.weight.detach().float(),
                   block.post_attention_layernorm.weight.detach().float())


def rotary_pairs_side_by_side(rotated_heads: int, head_dim: int, rows: int) -> torch.Tensor:
    """The q/k/v row order in which each rotary pair, rows (i, i + head_dim / 2) of a query
    or key head in transformers' layout, become neighbours; the value rows keep theirs.
    Queries and keys are reordered alike, so their dot products do not change."""
    half = head_dim // 2
    within = torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()
    rotated = (torch.arange(rotated_heads)[:, None] * head_dim + within).flatten()
    return torch.cat([rotated, torch.arange(rotated_heads * head_dim, rows)])


PACKED = ("qkv", "out", "gate_up", "down")
MAX_POSITIONS = 32768   # the rotary tables' length, at most: a pass needs a few hundred
OPENINGS_KEPT = 16      # prefills remembered past the prompt, the latest read


class CompactLlama:
    """prefill(ids) then step(id), step(id), ...: logits for the next token each time."""

    def __init__(self, model, packing: Packing = "float"):
        config = model.config
        self._shape(config.num_attention_heads, config.num_key_value_heads,
                    getattr(config, "head_dim", None) or
                    config.hidden_size // config.num_attention_heads, config.rms_norm_eps)
        self.embed = model.model.embed_tokens.weight.detach()
        # The model's own rotary module computes the tables once, for every position, in
        # float32 (it would round them to the activations' dtype).
        positions = min(config.max_position_embeddings or MAX_POSITIONS, MAX_POSITIONS)
        cos, sin = model.model.rotary_emb(self.embed[:1].float(),
                                          torch.arange(positions, device=self.embed.device)[None])
        half = self.head_dim // 2
        if not (torch.equal(cos[..., :half], cos[..., half:]) and
                torch.equal(sin[..., :half], sin[..., half:])):
            raise Unsupported("rotary tables that differ between the halves of a head")
        self.rotary_halves = (cos[0, :, :half].detach(), sin[0, :, :half].detach())
        qkv_rows = rotary_pairs_side_by_side(
            self.heads + self.kv_heads, self.head_dim,
            (self.heads + 2 * self.kv_heads) * self.head_dim)
        self.layers = [_Layer.packed_from(block, packing, qkv_rows) for block in model.model.layers]
        self.norm = model.model.norm.weight.detach().float()
        self.head = PackedLinear([model.lm_head], output_packing(packing))
        self._start()

    def _shape(self, heads, kv_heads, head_dim, eps):
        self.heads, self.kv_heads, self.head_dim, self.eps = heads, kv_heads, head_dim, eps

    def _start(self):
        self.packed = [getattr(layer, name) for layer in self.layers for name in PACKED] + \
            [self.head]
        self.device = self.embed.device
        # The key/value cache's dtype. On a CPU, float32: torch's attention over a bfloat16
        # cache, one query at a time, took about ten times as long as over a float32 one on
        # a CPU without AMX (docs/performance.md), a third of a token; the cache is a few
        # MiB either way. Elsewhere the activations' own.
        self.dtype = torch.float32 if self.device.type == "cpu" else self.embed.dtype
        # Position p turns pair j by the angle p * theta_j: one complex number per pair.
        self.rotary = torch.complex(*self.rotary_halves)   # (positions, head_dim / 2)
        self.cache = torch.empty(0)
        self.tokens = torch.empty(0, dtype=torch.long, device=self.device)  # what the cache holds
        # (all ids, keep) -> (keys and values past the prompt, logits): see `prefill`.
        self.openings: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        # Off where the openings are too many to come back while kept: each holds its
        # logits for every position, tens of MiB in all that would only churn.
        self.remember_openings = True
        # A token through every layer in one C call, where every layer is on the
        # project's kernel; else torch's calls below (`unfit` says why).
        self.c_step_unfit = decode_step.unfit(self)
        self.c_step = decode_step.DecodeStep(self) if self.c_step_unfit is None else None

    def to_tensors(self) -> tuple[dict, dict]:
        """Every tensor it holds, and what they are, for `warm_start` to keep on disk."""
        tensors = {"embed": self.embed, "norm": self.norm, "rotary_cos": self.rotary_halves[0],
                   "rotary_sin": self.rotary_halves[1]}
        meta = {"shape": [self.heads, self.kv_heads, self.head_dim, self.eps], "layers": []}
        for i, layer in enumerate(self.layers):
            tensors[f"{i}.attention_norm"] = layer.attention_norm
            tensors[f"{i}.mlp_norm"] = layer.mlp_norm
            layer_meta = {}
            for name in PACKED:
                more, layer_meta[name] = getattr(layer, name).to_tensors(f"{i}.{name}")
                tensors.update(more)
            meta["layers"].append(layer_meta)
        more, meta["head"] = self.head.to_tensors("head")
        tensors.update(more)
        return tensors, meta

    @classmethod
    def from_tensors(cls, tensors: dict, meta: dict) -> "CompactLlama":
        self = cls.__new__(cls)
        self._shape(*meta["shape"])
        self.embed, self.norm = tensors["embed"], tensors["norm"]
        self.rotary_halves = (tensors["rotary_cos"], tensors["rotary_sin"])
        self.layers = [_Layer(*(PackedLinear.from_tensors(tensors, f"{i}.{name}", packed[name])
                                for name in PACKED),
                              tensors[f"{i}.attention_norm"], tensors[f"{i}.mlp_norm"])
                       for i, packed in enumerate(meta["layers"])]
        self.head = PackedLinear.from_tensors(tensors, "head", meta["head"])
        self._start()
        return self

    def _norm(self, weight, x):
        # Llama's RMSNorm in float32, as transformers computes it, in one fused call.
        return F.rms_norm(x, x.shape[-1:], weight, self.eps)

    @property
    def length(self) -> int:
        return self.tokens.numel()

    def _reserve(self, capacity: int) -> None:
        """One cache (layers, keys/values, kv heads, positions, head dim), grown in steps of
        256 positions, keeping what it holds, and otherwise kept from pass to pass."""
        if self.cache.numel() and self.cache.shape[4] >= capacity:
            return
        capacity = -(-capacity // 256) * 256
        if capacity > self.rotary.shape[0]:
            raise RuntimeError(f"{capacity} positions asked, beyond the model's "
                               f"{self.rotary.shape[0]}; lower text.max_tokens")
        shape = (len(self.layers), 2, 1, self.kv_heads, capacity, self.head_dim)
        held, self.cache = self.cache, torch.zeros(shape, dtype=self.dtype, device=self.device)
        if self.length:   # the system prompt a warm start brought, not computed again
            self.cache[:, :, :, :, :self.length] = held[:, :, :, :, :self.length]

    def prefill(self, ids: torch.Tensor, capacity: int, keep: int = 1,
                prefix: int = 0) -> torch.Tensor:
        """Start a new sequence; logits (keep, vocab) for the last `keep` positions.

        Every pass begins with the same system prompt: the positions it shares with what
        the cache already holds are kept, not computed again. The first `prefix` ids (the
        prompt) are computed on their own when they are not held, so every pass, and a
        warm start that brings them, reads the same keys and values for them: the kernels
        round a row a little differently beside a different number of rows."""
        self._reserve(max(capacity, ids.shape[1] + 1))
        new = ids[0]
        shared = min(self.length, new.numel() - keep)
        same = (self.tokens[:shared] == new[:shared]).long()
        shared = int(same.cumprod(0).sum()) if shared > 0 else 0
        self.tokens = self.tokens[:shared]
        prefix = min(prefix, new.numel() - keep)   # the rows asked for are computed below
        if shared != prefix or prefix == 0:
            self.openings.clear()   # what they were computed against is about to change
        if shared < prefix:
            self._forward(ids[:, shared:prefix], 1)
            shared = prefix
        if shared > prefix or prefix == 0:
            return self._forward(ids[:, shared:], keep)
        # Past a prompt that stays as it was computed, the same opening reads the same
        # keys and values and gives the same logits: kept, a pass that begins as an
        # earlier one did skips its prefill (as long as a few steps: the 4-bit kernel
        # reads rows almost one at a time).
        if not self.remember_openings:
            self.openings.clear()
            return self._forward(ids[:, shared:], keep)
        key = (tuple(new.tolist()), keep)
        if (kept := self.openings.get(key)) is not None:
            self.openings.move_to_end(key)
            keys_values, logits = kept
            self.cache[:, :, :, :, shared:new.numel()] = keys_values
            self.tokens = new.clone()
            return logits.clone()
        logits = self._forward(ids[:, shared:], keep)
        self.openings[key] = (self.cache[:, :, :, :, shared:new.numel()].clone(), logits.clone())
        while len(self.openings) > OPENINGS_KEPT:
            self.openings.popitem(last=False)
        return logits

    def take(self, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """What the cache holds from position `start` on, to be put back after something
        else has been tried there (see `drafts`)."""
        return self.cache[:, :, :, :, start:self.length].clone(), self.tokens[start:].clone()

    def rewind(self, start: int) -> None:
        """Forget the positions from `start` on: the next step writes there."""
        self.tokens = self.tokens[:start]

    def put(self, start: int, taken: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Hold again, from `start` on, what `take` kept."""
        keys_values, tokens = taken
        self.rewind(start)
        self.cache[:, :, :, :, start:start + tokens.numel()] = keys_values
        self.tokens = torch.cat([self.tokens, tokens])

    def step(self, token_id: torch.Tensor) -> torch.Tensor:
        """Append one token (tensor of shape (1, 1)); logits (vocab,) for the next one."""
        if self.length >= self.cache.shape[4]:
            raise RuntimeError(f"key/value cache full at {self.length} positions")
        return self._forward(token_id, 1)[-1]

    def _forward(self, ids: torch.Tensor, keep: int) -> torch.Tensor:
        """Logits (keep, vocab), float32, after reading (1, count) ids."""
        count, start = ids.shape[1], self.length
        end = start + count
        if count == 1 and self.c_step is not None:
            x = F.embedding(ids[0], self.embed).float()
            self.c_step(x, self.cache, start)
            self.tokens = torch.cat([self.tokens, ids[0]])
            return self.head.wide(self._norm(self.norm, x))
        turns = self.rotary[start:end, None]               # (count, 1, pairs)
        queries = self.heads * self.head_dim
        rotated = queries + self.kv_heads * self.head_dim
        # Position start + i sees the keys up to itself; one new token sees them all.
        mask = None if count == 1 else torch.ones(
            count, end, dtype=torch.bool, device=self.device).tril(diagonal=start)
        x = F.embedding(ids[0], self.embed).float()         # (count, hidden)
        for layer, cache in zip(self.layers, self.cache):
            qkv = layer.qkv.wide(self._norm(layer.attention_norm, x))
            # Queries and keys turned in place, every pair one complex multiplication.
            torch.view_as_complex(qkv[:, :rotated].view(count, -1, self.head_dim // 2, 2)) \
                .mul_(turns)
            q = qkv[:, :queries].view(count, self.heads, self.head_dim).transpose(0, 1)
            cache[:, 0, :, start:end] = qkv[:, queries:].view(
                count, 2, self.kv_heads, self.head_dim).permute(1, 2, 0, 3)
            attended = F.scaled_dot_product_attention(
                q[None].to(self.dtype), cache[0, :, :, :end], cache[1, :, :, :end],
                attn_mask=mask, enable_gqa=self.heads != self.kv_heads)
            x = layer.out.wide(attended[0].transpose(0, 1).reshape(count, queries), residual=x)
            gate, up = layer.gate_up.wide(self._norm(layer.mlp_norm, x)).chunk(2, dim=-1)
            x = layer.down.wide(F.silu(gate).mul_(up), residual=x)
        self.tokens = torch.cat([self.tokens, ids[0]])
        return self.head.wide(self._norm(self.norm, x[-keep:]))
