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

Loading a library runs its code, so a cached one is loaded only where nobody but this
user could have put it there or changed it (`_distrust`): its folder and the file are
this user's and writable by no one else, and the file's bytes match the SHA-256 recorded
beside it when it was built (`<name>.so.sha256`, in `sha256sum`'s format). The hash is a
sidecar, not part of the name, so the name still says only which source and flags it was
built from; it catches a file that was cut short or damaged, not an attacker, whom the
ownership checks keep out. A cache folder of this user's that others could write to is
made private again and what is in it rebuilt; one that belongs to someone else is not
used. Anything else found wrong is built again once, to a temporary name and renamed into
place whole; a build that still does not load leaves torch's kernel running, with the
reason.

The weight layout (see `pack`): per output row, each pair of 32-input blocks is 32 bytes,
the first block's levels (0-15) in the low nibbles and the second's in the high ones,
with a float16 (scale, minimum) per block, as a GGUF's Q4_1 blocks hold them: weight =
scale * level + minimum.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import torch

from .cpu import cpuinfo

log = logging.getLogger("permanent.generator")

BLOCK = 32
PAIR = 2 * BLOCK   # the kernel reads two blocks a step: inputs must be whole pairs
SOURCE = Path(__file__).with_name("int4_kernel.c")
# Built into the same library: one token through every layer on this kernel (decode_step).
SOURCES = (SOURCE, Path(__file__).with_name("decode_step.c"))
FLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-pthread", "-shared", "-fPIC")
LIBRARIES = ("-lm",)


def _cpu_lacks() -> str | None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the CPU is {platform.machine()}, not x86-64"
    if (flags := cpuinfo()[1]) is None:
        return "the CPU's features could not be read (/proc/cpuinfo)"
    missing = [flag for flag in ("avx2", "fma", "f16c") if flag not in flags]
    return f"the CPU has no {' or '.join(missing).upper()}" if missing else None


def _build(target: Path) -> str | None:
    """Compile the kernel to `target` and record its hash beside it; None, or why it could
    not be."""
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        return (f"no C compiler ({compiler!r} is not on PATH); install one "
                "(Debian: apt install gcc) and the next start builds the faster kernel")
    record = _record_of(target)
    try:
        # Built beside its final name, moved there whole: another process may be loading it.
        fd, part = tempfile.mkstemp(suffix=".so.part", dir=target.parent)
        os.close(fd)
    except OSError as e:   # a cache that cannot be written (a full disk)
        return f"no place to build it: {e}"
    record_part = part + ".sha256"
    try:
        done = subprocess.run([compiler, *FLAGS, "-o", part, *map(str, SOURCES), *LIBRARIES],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            return f"{compiler} failed on {SOURCE.name}: {done.stderr.strip()[:300]}"
        # The linker gives its output the umask's mode, which may let the group write.
        os.chmod(part, 0o755)
        Path(record_part).write_text(f"{_sha256(Path(part))}  {target.name}\n")
        os.replace(part, target)
        os.replace(record_part, record)
        return None
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{compiler} could not build {SOURCE.name}: {e}"
    finally:
        Path(part).unlink(missing_ok=True)
        Path(record_part).unlink(missing_ok=True)


def _record_of(library: Path) -> Path:
    """Where the SHA-256 of `library`'s bytes is kept."""
    return library.with_name(library.name + ".sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 16):
            digest.update(chunk)
    return digest.hexdigest()


def _claim_folder(folder: Path) -> tuple[str | None, str | None]:
    """Make `folder` one that only this user can change: (why what is in it must be
    rebuilt, or None; why it cannot be used at all, or None)."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        held = folder.stat()
    except OSError as e:   # a cache that cannot be written (a read-only home)
        return None, f"no place to build it: {e}"
    if held.st_uid != os.geteuid():
        return None, (f"the kernel cache {folder} belongs to uid {held.st_uid}, not to this "
                      f"user (uid {os.geteuid()}), so nothing in it is loaded; remove it and "
                      "the next start builds the kernel there again")
    if not held.st_mode & _OTHERS_WRITE:
        return None, None
    try:
        os.chmod(folder, stat.S_IMODE(held.st_mode) & ~_OTHERS_WRITE)
    except OSError as e:
        return None, f"the kernel cache {folder} can be written by others and stays so: {e}"
    return (f"its folder could be written by others (mode {stat.S_IMODE(held.st_mode):o}); "
            "now only this user can"), None


_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def _distrust(library: Path) -> str | None:
    """Why the cached `library` must not be loaded, or None where it may be."""
    try:
        held = library.lstat()
    except OSError as e:
        return f"it cannot be read: {e}"
    if not stat.S_ISREG(held.st_mode):
        return "it is not a plain file"
    if held.st_uid != os.geteuid():
        return f"it belongs to uid {held.st_uid}, not to this user (uid {os.geteuid()})"
    if held.st_mode & _OTHERS_WRITE:
        return f"others can write to it (mode {stat.S_IMODE(held.st_mode):o})"
    try:
        recorded = _record_of(library).read_text(errors="replace").split()[:1]
    except OSError:
        return "no hash was recorded when it was built"
    try:
        found = _sha256(library)
    except OSError as e:
        return f"it cannot be read: {e}"
    if recorded != [found]:
        return "its bytes are not those recorded when it was built (cut short or damaged)"
    return None


def _load(library: Path) -> tuple[ctypes.CDLL | None, str | None]:
    """(the kernel in `library`, None), or (None, why it would not load)."""
    try:
        loaded = ctypes.CDLL(str(library))
        function = loaded.int4_linear
    except (OSError, AttributeError) as e:   # not a library, or not this one
        return None, f"{library} could not be loaded: {e}"
    function.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                         ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_int]
    function.restype = ctypes.c_int
    return loaded, None


def cached_path() -> Path:
    """Where the kernel built from this source with these flags is kept."""
    from .store import cache_root
    digest = hashlib.sha256(b"".join(source.read_bytes() for source in SOURCES) +
                            " ".join(FLAGS + LIBRARIES).encode()).hexdigest()[:16]
    return cache_root() / "kernels" / f"int4_kernel-{digest}.so"


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str | None]:
    """(the loaded kernel, None), or (None, why it is not available here)."""
    if (lacks := _cpu_lacks()) is not None:
        return None, lacks
    target = cached_path()
    rebuild, failure = _claim_folder(target.parent)
    if failure is None:
        if rebuild is None and target.exists():
            rebuild = _distrust(target)
            if rebuild is None:
                library, rebuild = _load(target)
                if library is not None:
                    return library, None
        if rebuild is not None:
            log.warning("the kernel at %s is built afresh: %s", target, rebuild)
        failure = _build(target)
    if failure is None:
        library, failure = _load(target)
        if library is not None:
            return library, None
        failure = f"the kernel built here does not load: {failure}"
        with contextlib.suppress(OSError):   # the next start builds afresh, never loads this
            target.unlink(missing_ok=True)
            _record_of(target).unlink(missing_ok=True)
    log.warning("torch's int4 kernel is used instead of the project's: %s", failure)
    return None, failure


def loaded() -> ctypes.CDLL | None:
    """The loaded library, or None where it is not available here (see why_unavailable)."""
    return _library()[0]


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


_threads: int | None = None   # see set_threads


def set_threads(count: int | None) -> None:
    """The threads the kernel shares its rows among from now on; None: torch's count.
    Where every layer runs here, the model's threads are the kernel's and torch keeps
    one (see generator): two pools of threads spinning on the same cores slow each other."""
    global _threads
    _threads = count


def threads() -> int:
    return _threads or torch.get_num_threads()


def linear(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor,
           residual: torch.Tensor | None = None, threads: int | None = None) -> torch.Tensor:
    """x (rows, in) W^T (+ residual), float32 (rows, out), the outputs shared among
    `threads` threads (default: `set_threads`'s, else torch's). Any thread count gives
    the same result, to the bit."""
    library = _library()[0]
    x = x.float().contiguous()
    rows, in_features = x.shape
    out_features = weight.shape[0]
    y = torch.empty(rows, out_features)
    if residual is not None:   # added as each output is written; kept alive for the call
        residual = residual.float().contiguous()
    if library.int4_linear(x.data_ptr(), rows, in_features, weight.data_ptr(),
                           scales.data_ptr(), out_features,
                           None if residual is None else residual.data_ptr(), y.data_ptr(),
                           threads or _threads or torch.get_num_threads()) != 0:
        raise MemoryError(f"int4 kernel: no memory to round {rows} input rows")
    return y
