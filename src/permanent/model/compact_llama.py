"""A compact forward pass for Llama-shaped models, one token at a time.

transformers' forward is general: masks, cache objects and hooks cost about as much as the
arithmetic when the model is as small as the embedded one. This decoder runs the same
weights through the same operations in fewer, larger steps: q/k/v and gate/up each packed
into one matrix (see `weight_packing`), a key/value cache written in place instead of
concatenated and kept for the prompt the next pass shares, and the rotary tables computed
once by the model's own rotary module. Its logits match transformers' to float rounding
(tests/test_runtime.py checks that).

Used for architectures that are this shape (Llama, Qwen2) when model.runtime is auto;
everything else runs through transformers.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .weight_packing import PackedLinear, Packing, output_packing

SUPPORTED = {"llama", "qwen2"}


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
    def __init__(self, block, packing: Packing):
        attention, mlp = block.self_attn, block.mlp
        self.qkv = PackedLinear([attention.q_proj, attention.k_proj, attention.v_proj], packing)
        self.out = PackedLinear([attention.o_proj], packing)
        self.gate_up = PackedLinear([mlp.gate_proj, mlp.up_proj], packing)
        self.down = PackedLinear([mlp.down_proj], packing)
        self.attention_norm = block.input_layernorm
        self.mlp_norm = block.post_attention_layernorm


class CompactLlama:
    """prefill(ids) then step(id), step(id), ...: logits for the next token each time."""

    def __init__(self, model, packing: Packing = "float"):
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.eps = config.rms_norm_eps
        self.embed = model.model.embed_tokens
        self.layers = [_Layer(block, packing) for block in model.model.layers]
        self.norm = model.model.norm
        self.rotary = model.model.rotary_emb
        self.head = PackedLinear([model.lm_head], output_packing(packing))
        self.packed = [m for layer in self.layers
                       for m in (layer.qkv, layer.out, layer.gate_up, layer.down)] + [self.head]
        self.dtype = self.embed.weight.dtype
        self.device = self.embed.weight.device
        self.cache = torch.empty(0)
        self.tokens = torch.empty(0, dtype=torch.long, device=self.device)  # what the cache holds

    def _norm(self, module, x):
        return F.rms_norm(x, module.weight.shape, module.weight, self.eps)

    @property
    def length(self) -> int:
        return self.tokens.numel()

    def _reserve(self, capacity: int) -> None:
        """One cache (layers, keys/values, kv heads, positions, head dim), grown in steps of
        256 positions and otherwise kept from pass to pass."""
        if self.cache.numel() and self.cache.shape[4] >= capacity:
            return
        capacity = -(-capacity // 256) * 256
        shape = (len(self.layers), 2, 1, self.kv_heads, capacity, self.head_dim)
        self.cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.tokens = self.tokens[:0]
        positions = torch.arange(capacity, device=self.device)[None]
        self.cos, self.sin = self.rotary(self.cache, positions)

    def prefill(self, ids: torch.Tensor, capacity: int, keep: int = 1) -> torch.Tensor:
        """Start a new sequence; logits (keep, vocab) for the last `keep` positions.

        Every pass begins with the same system prompt: the positions it shares with what
        the cache already holds are kept, not computed again."""
        self._reserve(max(capacity, ids.shape[1] + 1))
        new = ids[0]
        shared = min(self.length, new.numel() - keep)
        same = (self.tokens[:shared] == new[:shared]).long()
        shared = int(same.cumprod(0).sum()) if shared > 0 else 0
        self.tokens = self.tokens[:shared]
        return self._forward(ids[:, shared:], keep)[0]

    def step(self, token_id: torch.Tensor) -> torch.Tensor:
        """Append one token (tensor of shape (1, 1)); logits (vocab,) for the next one."""
        if self.length >= self.cache.shape[4]:
            raise RuntimeError(f"key/value cache full at {self.length} positions")
        return self._forward(token_id, 1)[0, -1]

    def _forward(self, ids: torch.Tensor, keep: int) -> torch.Tensor:
        count, start = ids.shape[1], self.length
        end = start + count
        cos, sin = self.cos[:, None, start:end], self.sin[:, None, start:end]
        rotated_heads, half = self.heads + self.kv_heads, self.head_dim // 2
        # Position start + i sees the keys up to itself; one new token sees them all.
        mask = None if count == 1 else torch.ones(
            count, end, dtype=torch.bool, device=self.device).tril(diagonal=start)
        x = self.embed(ids)
        for layer, cache in zip(self.layers, self.cache):
            qkv = layer.qkv(self._norm(layer.attention_norm, x))
            qkv = qkv.view(1, count, -1, self.head_dim).transpose(1, 2)   # (1, heads, count, dim)
            qk, v = qkv[:, :rotated_heads], qkv[:, rotated_heads:]
            # Rotary position, queries and keys in one go (transformers' rotate_half layout).
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
            q, k = qk[:, :self.heads], qk[:, self.heads:]
            cache[0, :, :, start:end] = k
            cache[1, :, :, start:end] = v
            attended = F.scaled_dot_product_attention(
                q, cache[0, :, :, :end], cache[1, :, :, :end], attn_mask=mask,
                enable_gqa=self.heads != self.kv_heads)
            x = x + layer.out(attended.transpose(1, 2).reshape(1, count, -1))
            gate, up = layer.gate_up(self._norm(layer.mlp_norm, x)).chunk(2, dim=-1)
            x = x + layer.down(F.silu(gate) * up)
        self.tokens = torch.cat([self.tokens, ids[0]])
        return self.head(self._norm(self.norm, x[:, -keep:]))
