"""Which kernel each packed layer runs on, and why: decided here and nowhere else.

A layer is held in the packing asked where a kernel can take its shape on its device, else
in the next best that fits (`choose`). Its int4 weights run on the project's kernel
(`int4_kernel`) where that one is the better choice here, else on torch's own
(`own_kernel_unavailable`), and each kernel lays the weights out its own way. A kernel
that raises or computes something else on this CPU leaves the layer in float (`probed`).
The runtime's description says what was chosen (`weight_packing.kernel_note`,
`fallback_note`).

A warm start keeps the weights as they were laid out, so its name covers what of the
choice decides that layout (`layout_key`) and the code that makes it (`CODE`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal

import torch

from . import int4_kernel

Packing = Literal["float", "int8", "int4", "int4+int8"]
INT4_GROUP = 32   # inputs per scale and minimum in torch's int4 kernel: a GGUF's Q4_1 block
# The code of the choice and of the project's kernel: a warm start laid out by other code
# must not be read.
CODE = (Path(__file__), Path(int4_kernel.__file__), *int4_kernel.SOURCES)
# Whether the kernel for (packing, kernel, in_features, out_features) works on this CPU:
# None, or why not. Its result depends on the shape and the CPU, not on the weights.
_KERNEL_CHECKED: dict[tuple[str, str, int, int], str | None] = {}


@dataclass(frozen=True)
class KernelChoice:
    """How one packed layer is held, and which kernel multiplies it."""

    packing: Packing                 # as asked, or the next best its shape and device allow
    kernel: str = "torch"            # int4 only: "own" (int4_kernel) or "torch"
    kernel_note: str | None = None   # int4 only: why not the project's kernel (None: it runs)
    fallback: str | None = None      # why it is held wider than asked (None: as asked)


def choose(packing: Packing, in_features: int, out_features: int,
           device: torch.device) -> KernelChoice:
    """The packing and kernel for a layer of this shape on this device."""
    fallback = None
    if packing != "float" and device.type != "cpu":
        packing, fallback = "float", "the integer kernels are CPU ones"
    while (misfit := shape_misfit(packing, in_features, out_features)):
        packing = "int8" if packing.startswith("int4") else "float"   # the next best that fits
        fallback = fallback or misfit
    if not packing.startswith("int4"):
        return KernelChoice(packing, fallback=fallback)
    why_not_own = own_kernel_unavailable(in_features)
    return KernelChoice(packing, "torch" if why_not_own else "own", why_not_own, fallback)


def shape_misfit(packing: Packing, in_features: int, out_features: int) -> str | None:
    """Why the kernel for `packing` cannot take this shape, or None if it can (checked by
    hand on torch 2.13: the int8 kernel segfaults, rather than raising, when the inputs
    are not whole multiples of 16)."""
    if packing.startswith("int4") and in_features % INT4_GROUP:
        return f"{in_features} inputs are not whole groups of {INT4_GROUP}"
    if packing.startswith("int4") and out_features % 16:
        return f"{out_features} outputs are not whole tiles of 16"
    if packing == "int8" and in_features % 16:
        return f"{in_features} inputs are not whole multiples of 16"
    return None


def own_kernel_unavailable(in_features: int) -> str | None:
    """Why a layer with this many inputs does not run on the project's int4 kernel here,
    or None.

    It runs wherever it can: where torch runs its AVX2 kernels, the piece's loop and
    larger models were faster on it than on torch's int4 kernel; where torch runs its
    AVX-512 ones, its layers in one C call (decode_step) wrote the embedded model's
    passes 1.34 times as fast as torch's AVX-512 int4 kernel on an AMD EPYC without AMX
    (docs/performance.md). It shares its rows among the model's threads, on any count."""
    if in_features % int4_kernel.PAIR:
        return f"{in_features} inputs are not whole pairs of {int4_kernel.BLOCK}-input blocks"
    return int4_kernel.why_unavailable()


def probed(choice: KernelChoice, in_features: int, out_features: int,
           probe: Callable[[], str | None]) -> KernelChoice:
    """`choice`, or float where its kernel fails on this CPU. `probe` runs one row through
    the packed layer and says why it failed (None: it did not); it runs once per shape,
    since a model repeats a few shapes in every layer."""
    shape = (choice.packing, choice.kernel, in_features, out_features)
    if shape not in _KERNEL_CHECKED:
        _KERNEL_CHECKED[shape] = probe()
    if (failure := _KERNEL_CHECKED[shape]) is not None:
        return replace(choice, packing="float", fallback=failure)
    return choice


def layout_key(packing: Packing) -> str | bool | None:
    """What of the choice decides how a model's weights lie, for a warm start's name: for
    int4, None where the project's kernel runs (in its own layout) or why it does not
    (torch's layout), so a file written for one kernel is not read for the other; False
    for the other packings, whose layout follows torch and the CPU alone."""
    return packing == "int4" and own_kernel_unavailable(int4_kernel.PAIR)
