"""The project's own 4-bit kernel (int4_kernel.c): compiled once, called through ctypes.

torch's int4 kernel expands each weight to a float before multiplying. Its AVX-512 build
does that quickly; its AVX2 build, which is what runs on many gallery computers, took
longer for the piece's largest matrix than a float32 product reading eight times the
bytes, and held the loop well below llama.cpp's speed. This kernel multiplies as
llama.cpp does, in integers, 32 products an instruction, but holds each input to about
15 bits (a coarse 8-bit level and a fine one) where llama.cpp rounds it to 8: the model's
distribution moves less than on torch's bfloat16 inputs, not more. Which layers run on it
is decided in `kernels`.

It is C with AVX2 intrinsics, compiled by the system's C compiler (`$CC`, else `cc`) the
first time a model loads, into the cache beside the converted model; later starts load
that file. Without a compiler, or on a CPU without AVX2, FMA and F16C, the int4 layers run
on torch's kernel, and the runtime's description says why.

The weight layout (see `pack`): per output row, each pair of 32-input blocks is 32 bytes,
the first block's levels (0-15) in the low nibbles and the second's in the high ones,
with a float16 (scale, minimum) per block, as a GGUF's Q4_1 blocks hold them: weight =
scale * level + minimum.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from .cpu import cpuinfo

log = logging.getLogger("permanent.generator")

BLOCK = 32
PAIR = 2 * BLOCK   # the kernel reads two blocks a step: inputs must be whole pairs
SOURCE = Path(__file__).with_name("int4_kernel.c")
FLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-shared", "-fPIC")


def _cpu_lacks() -> str | None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the CPU is {platform.machine()}, not x86-64"
    if (flags := cpuinfo()[1]) is None:
        return "the CPU's features could not be read (/proc/cpuinfo)"
    missing = [flag for flag in ("avx2", "fma", "f16c") if flag not in flags]
    return f"the CPU has no {' or '.join(missing).upper()}" if missing else None


def _build(target: Path) -> str | None:
    """Compile the kernel to `target`; None, or why it could not be."""
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        return (f"no C compiler ({compiler!r} is not on PATH); install one "
                "(Debian: apt install gcc) and the next start builds the faster kernel")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Built beside its final name, moved there whole: another process may be loading it.
        fd, part = tempfile.mkstemp(suffix=".so.part", dir=target.parent)
        os.close(fd)
    except OSError as e:   # a cache that cannot be written (a read-only home)
        return f"no place to build it: {e}"
    try:
        done = subprocess.run([compiler, *FLAGS, "-o", part, str(SOURCE)],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return f"{compiler} failed on {SOURCE.name}: {done.stderr.strip()[:300]}"
        os.replace(part, target)
        return None
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{compiler} could not build {SOURCE.name}: {e}"
    finally:
        Path(part).unlink(missing_ok=True)


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str | None]:
    """(the loaded kernel, None), or (None, why it is not available here)."""
    if (lacks := _cpu_lacks()) is not None:
        return None, lacks
    from .store import cache_root
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = cache_root() / "kernels" / f"int4_kernel-{digest}.so"
    if not target.exists() and (failure := _build(target)) is not None:
        log.warning("torch's int4 kernel is used instead of the project's: %s", failure)
        return None, failure
    try:
        library = ctypes.CDLL(str(target))
    except OSError as e:
        return None, f"{target} could not be loaded: {e}"
    library.int4_linear.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                    ctypes.c_void_p, ctypes.c_void_p]
    library.int4_linear.restype = ctypes.c_int
    return library, None


def why_unavailable() -> str | None:
    """Why the kernel cannot run on this machine (its CPU, compiler or cache), or None
    once it is loaded."""
    return _library()[1]


def pack(levels: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor):
    """(weight bytes (out, in/2) uint8, scales (out, in/32, 2) float16) for levels (out,
    in) in 0..15 and a scale and minimum per block (out, in/32)."""
    out_features, in_features = levels.shape
    pairs = levels.reshape(out_features, in_features // PAIR, 2, BLOCK).to(torch.uint8)
    weight = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(out_features, in_features // 2)
    return weight.contiguous(), torch.stack([scale, minimum], dim=-1).half().contiguous()


def linear(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """x (rows, in) W^T (+ residual), float32 (rows, out)."""
    library = _library()[0]
    x = x.float().contiguous()
    rows, in_features = x.shape
    out_features = weight.shape[0]
    y = torch.empty(rows, out_features)
    if residual is not None:   # added as each output is written; kept alive for the call
        residual = residual.float().contiguous()
    if library.int4_linear(x.data_ptr(), rows, in_features, weight.data_ptr(),
                           scales.data_ptr(), out_features,
                           None if residual is None else residual.data_ptr(), y.data_ptr()) != 0:
        raise MemoryError(f"int4 kernel: no memory to round {rows} input rows")
    return y
