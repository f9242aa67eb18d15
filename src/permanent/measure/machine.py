"""Which machine a figure came from: the CPU, the vector units torch's kernels can use, and
the kernel path torch chose.

The same code measured twice the tokens per second on one 2-core machine as on another:
the model's speed follows how fast weights stream through the cores, and torch's packed
int4/int8 kernels have separate AVX2 and AVX-512 builds (AMX is what its bf16 matrix
kernels use where present). A figure without its machine cannot be compared.
"""

from __future__ import annotations

import os
import platform

from ..model.local.cpu import cpuinfo


def describe_machine() -> dict:
    import torch

    model, flags = cpuinfo()
    has = lambda flag: None if flags is None else flag in flags   # None: not known here
    return {"cpu_model": model or platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "avx2": has("avx2"), "avx512": has("avx512f"), "amx": has("amx_tile"),
            "torch": torch.__version__,
            # The build of torch's kernels in use (e.g. AVX2, AVX512; ATEN_CPU_CAPABILITY
            # can lower it): the int4/int8 weight kernels differ between them.
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def machine_line(machine: dict) -> str:
    """'Intel(R) Xeon(R) Processor, 2 cores, AVX2 yes, AVX-512 yes, AMX yes; torch 2.13.0+cpu
    with its AVX512 kernels'"""
    word = lambda v: "?" if v is None else ("yes" if v else "no")
    return (f"{machine['cpu_model']}, {machine['cores']} cores, AVX2 {word(machine['avx2'])}, "
            f"AVX-512 {word(machine['avx512'])}, AMX {word(machine['amx'])}; "
            f"torch {machine['torch']} with its {machine['torch_cpu_capability']} kernels")
