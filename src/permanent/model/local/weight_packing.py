"""Linear layers packed for a CPU that reads weights faster than it multiplies them.

A token of a small model is bound by how many bytes of weights stream through the cores,
so the piece can hold them as 4- or 8-bit integers and let torch's weight-only kernels
(`_weight_int4pack_mm_for_cpu`, `_weight_int8pack_mm`, the ones torchao and gpt-fast use)
expand them on the fly. Several layers that read the same input (q, k, v; gate, up) are
packed side by side into one matrix, so each costs one kernel call instead of three.

int4 keeps a scale and a minimum per group of 32 input weights, exactly the grid of the
embedded model's GGUF (Q4_1), so re-packing its de-quantized weights loses nothing but
rounding. int8 keeps one scale per output row. int4 runs on the project's own kernel
(`int4_kernel`: integer products, as llama.cpp multiplies, on inputs held to about 15
bits; float16 scales) or on torch's (bfloat16 inputs, scales); which one, and the packing
a layer's shape allows, `kernels` decides.

int4+int8 is for the output matrix (hidden state -> vocabulary): int4, and beside it what
int4 rounded away, in int8 rows, added only to the logits within NEAR_LOGITS of the
largest (at most half of them, the likeliest). Those are the tokens that can be drawn and
that carry the entropy; the rest keep int4's rounding, a fraction of a logit on tokens
e^10 times less likely than the favourite. The int4 kernel reads the whole matrix in a
fraction of the time the int8 one would take.
"""

from __future__ import annotations

import torch
from torch import nn

from . import int4_kernel, kernels
from .kernels import INT4_GROUP, KernelChoice, Packing

NEAR_LOGITS = 10.0   # int4+int8: outputs this close to the largest get the 8-bit correction
NEAR_SHARE = 2       # ... but at most one in this many: the likeliest, when more are near


def output_packing(packing: Packing) -> Packing:
    """The output matrix keeps about 8 bits where it matters beside 4-bit layers: the
    embedded model's was Q8_0, and int4 alone moved the distribution (its KL from float32
    on corpus text) far more than all the other layers in int4 together."""
    return "int4+int8" if packing == "int4" else packing


class PackedLinear(nn.Module):
    """y = x W^T + b for one or more `nn.Linear` read side by side, in the packing asked.

    A layer carrying a voice (`low_rank` = (A, B), see `voice.adapter.apply_voice`) adds
    x A^T B^T: merged into float weights, or run beside packed ones, so the packed weights
    stay on their exact grid and the voice is not rounded away. It is held as (A^T, B^T),
    each contiguous: two plain products, the second with the sum folded in (`addmm`).

    `rows` reorders the outputs (the compact decoder lays each rotary pair side by side)."""

    def __init__(self, layers: list[nn.Linear], packing: Packing,
                 rows: torch.Tensor | None = None):
        super().__init__()
        weight = torch.cat([layer.weight.detach() for layer in layers])
        low_rank = _stack_low_rank(layers)
        biases = [layer.bias for layer in layers]
        self.bias = torch.cat([b.detach() for b in biases]) if all(
            b is not None for b in biases) else None
        if rows is not None:
            weight = weight[rows]
            low_rank = low_rank and (low_rank[0], low_rank[1][rows])
            self.bias = None if self.bias is None else self.bias[rows]
        self.low_rank = low_rank and (low_rank[0].t().contiguous(), low_rank[1].t().contiguous())
        self.out_features, self.in_features = weight.shape
        self.linears = len(layers)   # how many of the model's nn.Linear this one stands for
        # How it is held and which kernel runs it (see `kernels`); the fallback is said
        # in the runtime's description: a packed model that silently runs in float
        # measures as exact.
        choice = kernels.choose(packing, self.in_features, self.out_features, weight.device)
        self._hold(choice)
        if choice.packing == "float":
            if self.low_rank is not None:
                a_t, b_t = self.low_rank
                weight = weight + (a_t @ b_t).t().to(weight.device, weight.dtype)
                self.low_rank = None
            self.weight = weight
            return
        if choice.packing == "int8":
            self.weight, self.scale = _pack_int8(weight.float())
        else:
            self.weight, self.scale, residual = _pack_int4(
                weight, choice.packing == "int4+int8", choice.kernel == "own")
            if residual is not None:
                self.residual_weight, self.residual_scale = residual
        held = kernels.probed(choice, self.in_features, self.out_features,
                              lambda: self._kernel_failure(weight))
        if held.packing == "float":   # its kernel fails here: float, the voice beside it
            self._hold(held)
            self.weight = weight

    def _hold(self, choice: KernelChoice) -> None:
        """Take the choice's attributes, as a warm start keeps and restores them."""
        self.packing, self.kernel = choice.packing, choice.kernel
        self.kernel_note, self.fallback = choice.kernel_note, choice.fallback

    def _packed_matmul(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """(x W^T, or residual + x W^T in float32 where the kernel adds it as it writes;
        whether it did). x (rows, in) in float32 or bfloat16; the product in bfloat16, or
        float32 from the project's kernel and for int4+int8. torch's kernels take x in
        bfloat16, the one dtype their int4 runs fast (float32 took many times as long)."""
        if self.kernel == "own" and self.packing == "int4":
            return int4_kernel.linear(x, self.weight, self.scale, residual), residual is not None
        flat = x.to(torch.bfloat16)   # what torch's kernels read, the correction's too
        if self.packing == "int8":
            return torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scale), False
        y = int4_kernel.linear(x, self.weight, self.scale) if self.kernel == "own" else \
            torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.weight, INT4_GROUP, self.scale)
        if self.packing == "int4+int8":   # in float32: bf16 would round the correction away
            y = y.float()
            near = (y >= y.amax(-1, keepdim=True) - NEAR_LOGITS).any(0).nonzero()[:, 0]
            if near.numel() > (most := self.out_features // NEAR_SHARE):
                # A flat distribution (random weights: every row) costs no more than this.
                near = y.amax(0).topk(most, sorted=False).indices
            y.index_add_(-1, near, torch.ops.aten._weight_int8pack_mm(
                flat, self.residual_weight.index_select(0, near),
                self.residual_scale.index_select(0, near)).float())
        return y, False

    def _kernel_failure(self, weight: torch.Tensor) -> str | None:
        """One row through the packed kernel against the float weights: a kernel that
        raises on this CPU, or computes something else, is a reason to stay in float."""
        probe = torch.randn(1, self.in_features, generator=torch.Generator().manual_seed(0))
        try:
            packed = self._packed_matmul(probe)[0].float()
        except RuntimeError as e:
            return f"the {self.packing} kernel failed here: {str(e).splitlines()[0]}"
        exact = nn.functional.linear(probe.to(weight.dtype), weight).float()
        error = float((packed - exact).norm() / (exact.norm() + 1e-6))
        # Rounding moves a row by a few percent (more with outlying weights); a kernel
        # that reads the packed layout wrongly moves it by more than its own length.
        if not error < 0.5:
            return f"the {self.packing} kernel is {error:.0%} off here"
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """As an nn.Linear in transformers' forward: any leading shape, x's dtype out."""
        y = self.wide(x.reshape(-1, self.in_features))
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def wide(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """residual + x W^T + b in float32, as the compact decoder's float32 stream holds
        it; x is (rows, in), in float32 or the kernels' own dtype. A token calls this for
        every packed layer, and each torch call costs a few microseconds however small its
        work: the voice's pair runs in float32, where such small products are quicker than
        in bfloat16, its second product with the sum folded in."""
        if self.packing == "float":
            y = nn.functional.linear(x.to(self.weight.dtype), self.weight)
        else:
            y, added = self._packed_matmul(x, residual)
            residual = None if added else residual
        y = y.float() if residual is None else residual + y   # float32 either way
        if self.low_rank is not None:
            a_t, b_t = self.low_rank
            y = torch.addmm(y, x.float() @ a_t, b_t)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.packing}"

    # Kept on disk as held in memory (see `warm_start`): the packed tensors and what they are.
    _TENSORS = ("weight", "scale", "residual_weight", "residual_scale", "bias")

    def to_tensors(self, prefix: str) -> tuple[dict, dict]:
        tensors = {f"{prefix}.{name}": getattr(self, name) for name in self._TENSORS
                   if getattr(self, name, None) is not None}
        if self.low_rank is not None:
            tensors[f"{prefix}.low_rank_at"], tensors[f"{prefix}.low_rank_bt"] = self.low_rank
        meta = dict(packing=self.packing, in_features=self.in_features,
                    out_features=self.out_features, linears=self.linears, fallback=self.fallback,
                    kernel=self.kernel, kernel_note=self.kernel_note)
        return tensors, meta

    @classmethod
    def from_tensors(cls, tensors: dict, prefix: str, meta: dict) -> "PackedLinear":
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        for key, value in meta.items():
            setattr(layer, key, value)
        for name in cls._TENSORS:
            setattr(layer, name, tensors.get(f"{prefix}.{name}"))
        a_t = tensors.get(f"{prefix}.low_rank_at")
        layer.low_rank = None if a_t is None else (a_t, tensors[f"{prefix}.low_rank_bt"])
        return layer


PACK_ROWS = 4096   # rows packed at a time: the temporaries of a 49,152-row matrix stay small


def _pack_int4(weight: torch.Tensor, residual_int8: bool = False, own: bool = False):
    """(packed, scales, None) for a float (out, in) matrix in int4, per group of 32 inputs
    16 levels from the group's minimum to its maximum; with `residual_int8`, the last is
    what int4 rounded away, packed as int8 rows. A block of rows at a time, so the
    temporaries of a 49,152-row matrix stay small (the packed layout keeps rows apart, so
    the blocks join exactly). `own`: in the layout of the project's kernel."""
    packed, scales, residuals = [], [], []
    for rows in weight.split(PACK_ROWS):
        rows = rows.float()
        block, scale, rounded = _pack_int4_rows(rows, residual_int8, own)
        packed.append(block)
        scales.append(scale)
        if residual_int8:
            residuals.append(_pack_int8(rows - rounded))
    residual = (torch.cat([w for w, _ in residuals]), torch.cat([s for _, s in residuals])) \
        if residual_int8 else None
    return torch.cat(packed), torch.cat(scales, dim=0 if own else 1).contiguous(), residual


def _pack_int8(weight: torch.Tensor):
    """(int8 weights, bf16 scales): one scale per row, 255 levels. In place where it can:
    one temporary copy of the matrix at a time."""
    scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)
    levels = (weight / scale[:, None]).round_().clamp_(-127, 127).to(torch.int8)
    return levels, scale.to(torch.bfloat16)


def _pack_int4_rows(weight: torch.Tensor, rounded: bool, own: bool):
    """(packed, scales as the kernel reads them, and if `rounded` the weights they stand
    for, else None: only the output matrix's correction needs them)."""
    out_features, in_features = weight.shape
    groups = weight.reshape(out_features, -1, INT4_GROUP)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    step = ((high - low) / 15).clamp(min=1e-12)
    levels = (groups - low[..., None]).div_(step[..., None]).round_().clamp_(0, 15)
    if own:
        packed, scale = int4_kernel.pack(levels.reshape(out_features, in_features), step, low)
        if not rounded:
            return packed, scale, None
        step, low = scale.float().unbind(-1)   # as held: in half floats
        weights = levels.mul_(step[..., None]).add_(low[..., None])
        return packed, scale, weights.reshape(out_features, in_features)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
        levels.to(torch.int32).reshape(out_features, in_features), 1)
    # The kernel reads w = (level - 8) * scale + zero, per group, as [groups, out, 2].
    scale = torch.stack([step, low + 8 * step], dim=-1).to(torch.bfloat16)
    if not rounded:
        return packed, scale.transpose(0, 1), None
    weights = levels.sub_(8).mul_(scale[..., :1].float()).add_(scale[..., 1:].float())
    return packed, scale.transpose(0, 1), weights.reshape(out_features, in_features)


def _stack_low_rank(layers: list[nn.Linear]):
    """The voices of layers read side by side as one pair: A stacked, B block-diagonal
    (each output block sees only its own layer's ranks). None when no layer has one."""
    pairs = [getattr(layer, "low_rank", None) for layer in layers]
    if all(pair is None for pair in pairs):
        return None
    rank = sum(pair[0].shape[0] for pair in pairs if pair is not None)
    a = torch.zeros(rank, layers[0].in_features)
    b = torch.zeros(sum(layer.out_features for layer in layers), rank)
    row = col = 0
    for layer, pair in zip(layers, pairs):
        if pair is not None:
            r = pair[0].shape[0]
            a[col:col + r] = pair[0]
            b[row:row + layer.out_features, col:col + r] = pair[1]
            col += r
        row += layer.out_features
    return a, b


def fallback_note(packed: list[PackedLinear]) -> str:
    """Which packed layers fell back and why, e.g. '2 of 211 layers kept in float: 40
    inputs are not whole multiples of 16'; '' when every layer is held as asked."""
    fell = [p for p in packed if p.fallback]
    if not fell:
        return ""
    kept = sum(p.linears for p in fell)
    total = sum(p.linears for p in packed)
    held = " or ".join(sorted({p.packing for p in fell}))
    reasons = "; ".join(dict.fromkeys(p.fallback for p in fell))   # each once, in order
    return f"{kept} of {total} layers kept in {held}: {reasons}"


def kernel_note(packed: list[PackedLinear]) -> str:
    """Which kernel the int4 layers run on, e.g. "the project's int4 kernel" or "torch's
    int4 kernel: the CPU has no AVX2"; '' where no layer is int4."""
    int4 = [p for p in packed if p.packing.startswith("int4")]
    if not int4:
        return ""
    if all(p.kernel == "own" for p in int4):
        return "the project's int4 kernel"
    reasons = "; ".join(dict.fromkeys(p.kernel_note for p in int4 if p.kernel_note))
    return f"torch's int4 kernel: {reasons}"
