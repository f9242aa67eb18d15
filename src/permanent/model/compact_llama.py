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
    def __init__(self, qkv, out, gate_up, down, attention_norm, mlp_norm):
        self.qkv, self.out, self.gate_up, self.down = qkv, out, gate_up, down
        self.attention_norm, self.mlp_norm = attention_norm, mlp_norm   # RMSNorm weights

    @classmethod
    def packed_from(cls, block, packing: Packing) -> "_Layer":
        attention, mlp = block.self_attn, block.mlp
        return cls(PackedLinear([attention.q_proj, attention.k_proj, attention.v_proj], packing),
                   PackedLinear([attention.o_proj], packing),
                   PackedLinear([mlp.gate_proj, mlp.up_proj], packing),
                   PackedLinear([mlp.down_proj], packing),
                   block.input_layernorm.weight.detach(),
                   block.post_attention_layernorm.weight.detach())


PACKED = ("qkv", "out", "gate_up", "down")
MAX_POSITIONS = 32768   # the rotary tables' length, at most: a pass needs a few hundred


class CompactLlama:
    """prefill(ids) then step(id), step(id), ...: logits for the next token each time."""

    def __init__(self, model, packing: Packing = "float"):
        config = model.config
        self._shape(config.num_attention_heads, config.num_key_value_heads,
                    getattr(config, "head_dim", None) or
                    config.hidden_size // config.num_attention_heads, config.rms_norm_eps)
        self.embed = model.model.embed_tokens.weight.detach()
        self.layers = [_Layer.packed_from(block, packing) for block in model.model.layers]
        self.norm = model.model.norm.weight.detach()
        self.head = PackedLinear([model.lm_head], output_packing(packing))
        # The model's own rotary module computes the tables once, for every position.
        positions = min(config.max_position_embeddings or MAX_POSITIONS, MAX_POSITIONS)
        cos, sin = model.model.rotary_emb(self.embed[:1],
                                          torch.arange(positions, device=self.embed.device)[None])
        self.rotary = (cos.detach(), sin.detach())
        self._start()

    def _shape(self, heads, kv_heads, head_dim, eps):
        self.heads, self.kv_heads, self.head_dim, self.eps = heads, kv_heads, head_dim, eps

    def _start(self):
        self.packed = [getattr(layer, name) for layer in self.layers for name in PACKED] + \
            [self.head]
        self.dtype = self.embed.dtype
        self.device = self.embed.device
        self.cache = torch.empty(0)
        self.tokens = torch.empty(0, dtype=torch.long, device=self.device)  # what the cache holds

    def to_tensors(self) -> tuple[dict, dict]:
        """Every tensor it holds, and what they are, for `warm_start` to keep on disk."""
        tensors = {"embed": self.embed, "norm": self.norm, "rotary_cos": self.rotary[0],
                   "rotary_sin": self.rotary[1]}
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
        self.rotary = (tensors["rotary_cos"], tensors["rotary_sin"])
        self.layers = [_Layer(*(PackedLinear.from_tensors(tensors, f"{i}.{name}", packed[name])
                                for name in PACKED),
                              tensors[f"{i}.attention_norm"], tensors[f"{i}.mlp_norm"])
                       for i, packed in enumerate(meta["layers"])]
        self.head = PackedLinear.from_tensors(tensors, "head", meta["head"])
        self._start()
        return self

    def _norm(self, weight, x):
        # Llama's RMSNorm as transformers writes it, in float32. torch's fused rms_norm
        # took 45 us a call on bfloat16 here, 61 calls a token: a tenth of the step.
        wide = x.float()
        wide = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * wide.to(x.dtype)

    @property
    def length(self) -> int:
        return self.tokens.numel()

    def _reserve(self, capacity: int) -> None:
        """One cache (layers, keys/values, kv heads, positions, head dim), grown in steps of
        256 positions and otherwise kept from pass to pass."""
        if self.cache.numel() and self.cache.shape[4] >= capacity:
            return
        capacity = -(-capacity // 256) * 256
        if capacity > self.rotary[0].shape[1]:
            raise RuntimeError(f"{capacity} positions asked, beyond the model's "
                               f"{self.rotary[0].shape[1]}; lower text.max_tokens")
        shape = (len(self.layers), 2, 1, self.kv_heads, capacity, self.head_dim)
        self.cache = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.tokens = self.tokens[:0]
        self.cos, self.sin = (table[:, :capacity] for table in self.rotary)

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
        x = F.embedding(ids, self.embed)
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
