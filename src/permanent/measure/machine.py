"""Which machine a figure came from: the CPU, the vector units it has, and whether torch's
kernels are the ones it would choose for that CPU or lowered by ATEN_CPU_CAPABILITY.

The same code measured twice the tokens per second on one 2-core machine as on another:
the model's speed follows how fast weights stream through the cores, and torch's packed
int4/int8 kernels have separate AVX2 and AVX-512 builds (AMX is what its bf16 matrix
kernels use where present). Forcing the AVX2 build on an AVX-512 CPU lowers the kernels
but not the memory system, caches or clock, so such a figure is a simulation and must
say so. A figure without its machine cannot be compared.
"""

from __future__ import annotations

import os
import platform

from ..model.local.cpu import cpu_fields

# torch's kernel builds, lowest first, and the flags each needs (as ATen's dispatch asks).
CAPABILITIES = (("DEFAULT", ()), ("AVX2", ("avx2", "fma")),
                ("AVX512", ("avx512f", "avx512bw", "avx512vl", "avx512dq", "fma")))


def cpu_name(fields: dict[str, str] | None) -> str:
    """'AMD EPYC (family 26, model 2)': the model name and, since a VM's may be as short
    as that, the family and model numbers that tell one generation from another."""
    fields = fields or {}
    name = fields.get("model name") or platform.processor() or platform.machine()
    numbers = [f"{word} {fields[key]}" for word, key in (("family", "cpu family"),
                                                          ("model", "model")) if key in fields]
    return f"{name} ({', '.join(numbers)})" if numbers else name


def native_capability(flags: set[str] | None) -> str | None:
    """The kernel build torch would choose for a CPU with these flags; None if unknown."""
    if flags is None:
        return None
    return [name for name, needs in CAPABILITIES if all(f in flags for f in needs)][-1]


def kernels_origin(in_use: str, native: str | None, forced: str | None) -> str:
    """'native', 'forced by ATEN_CPU_CAPABILITY=avx2: a simulation on a CPU with AVX512' (its
    memory, caches and clock stay its own), or why else the kernels are not native."""
    if native is None:
        return "unknown (the CPU's flags could not be read)"
    if in_use == native:
        return "native"
    if forced:
        return f"forced by ATEN_CPU_CAPABILITY={forced}: a simulation on a CPU with {native}"
    return f"below the CPU's {native}, though ATEN_CPU_CAPABILITY is not set"


def describe_machine() -> dict:
    import torch

    fields = cpu_fields()
    flags = set(fields.get("flags", "").split()) or None if fields else None
    has = lambda flag: None if flags is None else flag in flags   # None: not known here
    in_use = torch.backends.cpu.get_cpu_capability()
    native = native_capability(flags)
    return {"cpu_model": cpu_name(fields),
            "cpu_family": (fields or {}).get("cpu family"),
            "cores": os.cpu_count(),
            "avx2": has("avx2"), "avx512": has("avx512f"), "amx": has("amx_tile"),
            "torch": torch.__version__,
            # The build of torch's kernels in use (e.g. AVX2, AVX512): the int4/int8 weight
            # kernels differ between them.
            "torch_cpu_capability": in_use,
            "native_cpu_capability": native,
            "torch_kernels": kernels_origin(in_use, native,
                                            os.environ.get("ATEN_CPU_CAPABILITY")),
            "simulated": native is not None and in_use != native}


def machine_line(machine: dict) -> str:
    """'AMD EPYC (family 26, model 2), 2 cores, AVX2 yes, AVX-512 no, AMX no; torch
    2.13.0+cpu with its AVX2 kernels (native)'"""
    word = lambda v: "?" if v is None else ("yes" if v else "no")
    return (f"{machine['cpu_model']}, {machine['cores']} cores, AVX2 {word(machine['avx2'])}, "
            f"AVX-512 {word(machine['avx512'])}, AMX {word(machine['amx'])}; "
            f"torch {machine['torch']} with its {machine['torch_cpu_capability']} kernels "
            f"({machine['torch_kernels']})")
