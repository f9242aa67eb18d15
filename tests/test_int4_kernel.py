"""The project's 4-bit kernel: built here by the system's compiler, run on real matrices,
checked against float64 products of the same weights; and its cache, loaded only when this
user built it and it is as they built it."""

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from permanent.model.local import int4_kernel, kernels, store as model_store
from permanent.model.local.weight_packing import PackedLinear

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def one_thread(torch_threads):
    """The project's kernel on one thread."""
    torch_threads(1)


def grid_weights(out_features, in_features, seed=0):
    """Levels 0..15 with a scale and minimum per block, packed, and the weights they are."""
    generator = torch.Generator().manual_seed(seed)
    blocks = in_features // int4_kernel.BLOCK
    levels = torch.randint(0, 16, (out_features, in_features), generator=generator)
    scale = torch.rand(out_features, blocks, generator=generator) * 0.02 + 0.001
    minimum = -torch.rand(out_features, blocks, generator=generator) * 0.15
    weight, scales = int4_kernel.pack(levels, scale, minimum)
    held = scales.double()   # the scales as the kernel reads them (half floats)
    weights = (levels.double().reshape(out_features, blocks, -1) * held[..., :1]
               + held[..., 1:]).reshape(out_features, in_features)
    return (weight, scales), weights


@pytest.mark.parametrize("rows, in_features, out_features", [
    (1, 64, 7), (1, 576, 3072), (3, 1536, 576), (9, 576, 960)])
# How many times closer to float64 than bfloat16 inputs the products must be: measured
# 29-40 times on plain inputs and 2.6-20 times where one input in a block is 40 times the
# rest (docs/int4-kernel.md). The kernel is the same AVX2 code, built with the same flags,
# on every CPU that runs it, so the floors are the smallest measured ratio with a margin
# of 1.3-1.5 for another compiler's summation, not more.
@pytest.mark.parametrize("outlier, closer", [(1, 20), (40, 2)])
def test_products_match_float64_more_closely_than_bfloat16_inputs_would(
        one_thread, rows, in_features, out_features, outlier, closer):
    """Each input is held to about 15 bits of its block's largest value: at least 20 times
    closer to float64 than bfloat16 inputs, and still twice as close where one input in a
    block is 40 times the rest (real models have such activations)."""
    assert kernels.own_kernel_unavailable(in_features) is None
    (weight, scales), exact_weights = grid_weights(out_features, in_features)
    x = torch.randn(rows, in_features, generator=torch.Generator().manual_seed(1))
    x[:, 5] *= outlier
    exact = x.double() @ exact_weights.T
    ours = int4_kernel.linear(x, weight, scales).double()
    bf16 = x.bfloat16().double() @ exact_weights.T   # what torch's int4 kernel reads
    error = lambda y: float((y - exact).norm() / exact.norm())
    print(f"{rows}x{in_features}->{out_features}, outlier x{outlier}: "
          f"{error(bf16) / error(ours):.1f} times closer than bfloat16 inputs")
    assert error(ours) < error(bf16) / closer
    residual = torch.randn(rows, out_features)
    added = int4_kernel.linear(x, weight, scales, residual)
    assert torch.allclose(added, residual + ours.float(), atol=1e-5)


def test_inputs_on_the_8_bit_grid_give_the_exact_products(one_thread):
    """Inputs that are whole steps of their block's largest / 127 lose nothing to the
    rounding, so only float32 summation is left between the kernel and float64."""
    (weight, scales), exact_weights = grid_weights(48, 128, seed=2)
    generator = torch.Generator().manual_seed(3)
    x = torch.randint(-127, 128, (2, 128), generator=generator).float()
    x[:, ::32] = 127                       # every block spans its whole grid
    x *= torch.rand(2, 1, generator=generator) * 0.1
    exact = x.double() @ exact_weights.T
    assert torch.allclose(int4_kernel.linear(x, weight, scales).double(), exact,
                          rtol=1e-5, atol=1e-5)


def test_a_packed_layer_runs_on_it_on_any_thread_count(torch_threads):
    layer = torch.nn.Linear(576, 960, bias=True)
    x = torch.randn(2, 576)
    exact = layer(x).detach()
    for threads in (1, 2, 3):
        torch_threads(threads)
        packed = PackedLinear([layer], "int4")
        assert packed.kernel == "own" and packed.kernel_note is None
        assert float((packed(x) - exact).norm() / exact.norm()) < 0.1   # int4's own rounding


@pytest.mark.parametrize("rows, in_features, out_features", [
    (1, 576, 960), (1, 1536, 576), (1, 576, 49152), (5, 576, 3072), (1, 64, 40), (2, 64, 7)])
def test_rows_shared_among_threads_give_one_thread_s_result_to_the_bit(
        rows, in_features, out_features):
    """Each output is computed by the same code whichever thread claims it, so any thread
    count, and a pool grown by an earlier call, gives exactly the one-thread result; and
    that result is as close to float64 as the products test asks of one thread."""
    (weight, scales), exact_weights = grid_weights(out_features, in_features, seed=4)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(rows, in_features, generator=generator)
    residual = torch.randn(rows, out_features, generator=generator)
    alone = int4_kernel.linear(x, weight, scales, residual, threads=1)
    exact = residual.double() + x.double() @ exact_weights.T
    bf16 = residual.double() + x.bfloat16().double() @ exact_weights.T
    error = lambda y: float((y.double() - exact).norm() / (exact - residual.double()).norm())
    assert error(alone) < error(bf16) / 20
    for threads in (2, 4, 3, 2, 8):   # growing the pool, then asking fewer of it
        for _ in range(20):           # calls in a row, as a token's are
            shared = int4_kernel.linear(x, weight, scales, residual, threads=threads)
            assert torch.equal(shared, alone), threads


def test_the_threads_follow_torch_s_thread_count(torch_threads):
    (weight, scales), _ = grid_weights(3072, 576, seed=6)
    x = torch.randn(1, 576)
    alone = int4_kernel.linear(x, weight, scales, threads=1)
    torch_threads(2)
    assert torch.equal(int4_kernel.linear(x, weight, scales), alone)
    # Calls from two threads at once take turns on the pool, each with its own result.
    from concurrent.futures import ThreadPoolExecutor
    inputs = [torch.randn(1, 576) for _ in range(8)]
    expected = [int4_kernel.linear(one, weight, scales, threads=1) for one in inputs]
    with ThreadPoolExecutor(4) as callers:
        got = list(callers.map(lambda one: int4_kernel.linear(one, weight, scales), inputs * 25))
    assert all(torch.equal(a, b) for a, b in zip(got, expected * 25))


def test_it_runs_whichever_build_of_torch_s_kernels_runs(one_thread):
    """AVX2 code, chosen on AVX-512 CPUs too: there its layers in one C call beat torch's
    AVX-512 int4 kernel (docs/performance.md)."""
    assert torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    packed = PackedLinear([torch.nn.Linear(576, 960)], "int4")
    assert packed.kernel == "own" and packed.kernel_note is None


def test_it_is_built_once_and_without_a_compiler_torch_s_kernel_runs(
        one_thread, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(model_store, "cache_root", lambda: tmp_path)
    int4_kernel._library.cache_clear()
    try:
        assert kernels.own_kernel_unavailable(576) is None
        built = list((tmp_path / "kernels").glob("int4_kernel-*.so"))
        assert len(built) == 1   # and its hash beside it, nothing half-built
        assert {p.name for p in (tmp_path / "kernels").iterdir()} == {
            built[0].name, built[0].name + ".sha256"}
        stamp = built[0].stat().st_mtime_ns
        int4_kernel._library.cache_clear()   # as the next start: loaded, not built again
        monkeypatch.setenv("CC", "/nonexistent/cc")
        assert kernels.own_kernel_unavailable(576) is None
        assert built[0].stat().st_mtime_ns == stamp

        built[0].unlink()
        int4_kernel._library.cache_clear()
        with caplog.at_level(logging.WARNING, logger="permanent.generator"):
            why = kernels.own_kernel_unavailable(576)
        assert why.startswith("no C compiler ('/nonexistent/cc' is not on PATH)")
        assert "apt install gcc" in why and why in caplog.text
        packed = PackedLinear([torch.nn.Linear(576, 64)], "int4")
        assert packed.kernel == "torch" and packed.kernel_note == why
    finally:
        int4_kernel._library.cache_clear()   # the real cache again for the other tests


def test_a_compiler_that_fails_or_a_cache_that_cannot_be_written_is_reported(one_thread, tmp_path, monkeypatch):
    monkeypatch.setattr(model_store, "cache_root", lambda: tmp_path)
    failing = tmp_path / "cc"
    failing.write_text("#!/bin/sh\necho 'cc: cannot write output' >&2\nexit 1\n")
    os.chmod(failing, 0o755)
    monkeypatch.setenv("CC", str(failing))
    int4_kernel._library.cache_clear()
    try:
        why = kernels.own_kernel_unavailable(576)
        assert why == f"{failing} failed on int4_kernel.c: cc: cannot write output"
        assert not list((tmp_path / "kernels").iterdir())   # nothing half-built left
        # A cache that cannot be written: torch's kernel, and the reason, not a crash.
        blocked = tmp_path / "a-file"
        blocked.write_text("")
        monkeypatch.setattr(model_store, "cache_root", lambda: blocked)
        monkeypatch.delenv("CC")
        int4_kernel._library.cache_clear()
        assert kernels.own_kernel_unavailable(576).startswith("no place to build it: [Errno 20]")
    finally:
        int4_kernel._library.cache_clear()


# The kernel cache: a library is code, so a cached one is loaded only where nobody but
# this user could have put it there, and only as it was built.

OTHER_UID = 4321   # no user of this machine: a file of someone else's
BUILD_IN_A_CHILD = ("import os, sys; os.umask(int(sys.argv[1], 8)); "
                    "from permanent.model.local import int4_kernel; "
                    "sys.exit(int4_kernel.why_unavailable())")


def build_as_a_previous_start(cache_home, umask=0o022):
    """The kernel built by another process, as by the piece's last start: this process
    has loaded nothing from that path (the dynamic loader would hand back what it holds)."""
    env = dict(os.environ, XDG_CACHE_HOME=str(cache_home),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", BUILD_IN_A_CHILD, f"{umask:o}"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return cache_home / "permanent/models/kernels"


@pytest.fixture(scope="module")
def built_once(tmp_path_factory):
    """A kernel cache as a previous start left it, built once for the tests below."""
    return build_as_a_previous_start(tmp_path_factory.mktemp("built"))


@pytest.fixture
def cache(one_thread, tmp_path, monkeypatch, built_once):
    """This test's own kernel cache, holding copies of the kernel built above."""
    folder = tmp_path / "permanent/models/kernels"
    shutil.copytree(built_once, folder)
    monkeypatch.setattr(model_store, "cache_root", lambda: folder.parent)
    int4_kernel._library.cache_clear()
    yield folder
    int4_kernel._library.cache_clear()


def the_library(folder):
    [library] = folder.glob("int4_kernel-*.so")
    return library


def start(caplog):
    """What a start of the piece makes of the cache: None where the project's kernel runs."""
    int4_kernel._library.cache_clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="permanent.generator"):
        return kernels.own_kernel_unavailable(576)


def runs_and_is_trusted(folder):
    """The kernel computes, and the file is this user's, writable by no one else, with
    the hash `sha256sum -c` checks."""
    (weight, scales), exact_weights = grid_weights(16, 64, seed=4)
    x = torch.randn(1, 64)
    assert torch.allclose(int4_kernel.linear(x, weight, scales).double(),
                          x.double() @ exact_weights.T, rtol=1e-2, atol=1e-3)
    library = the_library(folder)
    held = library.stat()
    assert held.st_uid == os.geteuid() and not held.st_mode & 0o022
    checked = subprocess.run(["sha256sum", "--check", library.name + ".sha256"], cwd=folder,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_kernel_built_under_a_loose_umask_is_trusted_and_loaded_next_start(
        one_thread, tmp_path, monkeypatch, caplog):
    """A umask of 002 (a user private group's) would leave the linker's output writable
    by the group, and so refused at every start: it is built writable by its owner alone."""
    folder = build_as_a_previous_start(tmp_path, umask=0o002)
    monkeypatch.setattr(model_store, "cache_root", lambda: folder.parent)
    built = the_library(folder).stat().st_ino
    try:
        assert start(caplog) is None and caplog.text == ""
        assert the_library(folder).stat().st_ino == built   # loaded, not built again
        runs_and_is_trusted(folder)
    finally:
        int4_kernel._library.cache_clear()


def flip_a_byte(library):
    data = bytearray(library.read_bytes())
    data[len(data) // 2] ^= 0x40
    library.write_bytes(bytes(data))


def cut_short(library):
    with open(library, "r+b") as file:
        file.truncate(library.stat().st_size // 2)


def replace_with_a_link(library):
    copy = library.with_name("elsewhere.so")
    shutil.copy2(library, copy)
    library.unlink()
    library.symlink_to(copy)


@pytest.mark.parametrize("spoil, reason", [
    (lambda so: os.chown(so, OTHER_UID, OTHER_UID),
     f"it belongs to uid {OTHER_UID}, not to this user"),
    (lambda so: os.chmod(so, 0o775), "others can write to it (mode 775)"),
    (lambda so: os.chmod(so, 0o757), "others can write to it (mode 757)"),
    (flip_a_byte, "its bytes are not those recorded when it was built"),
    (cut_short, "its bytes are not those recorded when it was built (cut short or damaged)"),
    (lambda so: so.with_name(so.name + ".sha256").unlink(), "no hash was recorded"),
    (replace_with_a_link, "it is not a plain file"),
], ids=["another-owner", "group-writable", "world-writable", "a-byte-flipped", "cut-short",
        "no-hash", "a-link"])
def test_a_cached_kernel_not_as_this_user_built_it_is_built_afresh(cache, caplog, spoil,
                                                                  reason):
    library = the_library(cache)
    spoil(library)
    spoiled = library.lstat().st_ino
    assert start(caplog) is None                        # the project's kernel runs ...
    assert the_library(cache).lstat().st_ino != spoiled  # ... from a fresh build
    assert f"the kernel at {library} is built afresh: {reason}" in caplog.text
    runs_and_is_trusted(cache)
    assert start(caplog) is None and caplog.text == ""   # and the next start trusts it


def test_a_cache_folder_others_can_write_to_is_made_private_and_built_afresh(cache, caplog):
    os.chmod(cache, 0o777)
    before = the_library(cache).stat().st_ino
    assert start(caplog) is None
    assert stat.S_IMODE(cache.stat().st_mode) == 0o755
    assert the_library(cache).stat().st_ino != before
    assert ("built afresh: its folder could be written by others (mode 777); now only this "
            "user can") in caplog.text
    runs_and_is_trusted(cache)


def test_a_cache_folder_of_another_user_s_is_not_used(cache, caplog):
    os.chown(cache, OTHER_UID, OTHER_UID)
    before = the_library(cache).stat().st_ino
    why = start(caplog)
    assert why == (f"the kernel cache {cache} belongs to uid {OTHER_UID}, not to this user "
                   f"(uid {os.geteuid()}), so nothing in it is loaded; remove it and the "
                   "next start builds the kernel there again")
    assert why in caplog.text and "torch's int4 kernel is used instead" in caplog.text
    assert the_library(cache).stat().st_ino == before   # nothing written there either
    packed = PackedLinear([torch.nn.Linear(576, 64)], "int4")
    assert packed.kernel == "torch" and packed.kernel_note == why


def test_garbage_under_a_matching_hash_is_built_afresh(cache, caplog):
    """A file that is not a library at all, though its record matches (the record was
    written over it): the loader refuses it, and it is built again, once."""
    library = the_library(cache)
    library.write_bytes(b"\x7fELF but not a library" * 100)
    record = library.with_name(library.name + ".sha256")
    record.write_text(f"{hashlib.sha256(library.read_bytes()).hexdigest()}  {library.name}\n")
    assert start(caplog) is None
    assert f"the kernel at {library} is built afresh: {library} could not be loaded" in caplog.text
    runs_and_is_trusted(cache)


def test_a_build_that_does_not_load_is_tried_once_and_torch_s_kernel_runs(
        cache, caplog, monkeypatch, tmp_path):
    """A compiler that writes something that is not a library: one build a start, never
    a loop, and nothing left behind for the next start to load."""
    builds = tmp_path / "builds"
    junk = tmp_path / "cc"
    junk.write_text("#!/bin/sh\necho built >> " + str(builds) + "\n"
                    "while [ \"$1\" != -o ]; do shift; done\necho 'not a library' > \"$2\"\n")
    os.chmod(junk, 0o755)
    monkeypatch.setenv("CC", str(junk))
    library = the_library(cache)
    flip_a_byte(library)
    why = start(caplog)
    assert why.startswith(f"the kernel built here does not load: {library} could not be loaded")
    assert builds.read_text() == "built\n"
    assert f"torch's int4 kernel is used instead of the project's: {why}" in caplog.text
    assert not list(cache.iterdir())
    packed = PackedLinear([torch.nn.Linear(576, 64)], "int4")
    assert packed.kernel == "torch" and packed.kernel_note == why


NICENESS_SCRIPT = """
import os, torch
from permanent.model.local import int4_kernel
from test_int4_kernel import grid_weights
(weight, scales), _ = grid_weights(3072, 576)
x = torch.randn(1, 576)
int4_kernel.linear(x, weight, scales, threads=3)   # the pool starts at this priority
os.nice(7)                                         # as the model's process does once loaded
for _ in range(300):                               # calls the workers take part in
    int4_kernel.linear(x, weight, scales, threads=3)
tasks = f"/proc/{os.getpid()}/task"
for task in os.listdir(tasks):
    name = open(f"{tasks}/{task}/comm").read().strip()
    niceness = open(f"{tasks}/{task}/stat").read().rsplit(")", 1)[1].split()[16]
    print(name, niceness, int(task) == os.getpid())
"""


def test_the_workers_take_the_caller_s_lower_priority():
    """The model's process lowers its own priority after loading, so that frames and the
    hum go first; Linux gives each thread its own, and workers started while it loaded
    would otherwise keep the higher one and take the cores from the screen."""
    done = subprocess.run([sys.executable, "-c", NICENESS_SCRIPT], cwd=REPO / "tests",
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    assert done.returncode == 0, done.stderr
    threads = [line.rsplit(" ", 2) for line in done.stdout.splitlines()]   # name, nice, main
    workers = [int(nice) for name, nice, _ in threads if name == "int4 worker"]
    caller = [int(nice) for _, nice, main in threads if main == "True"]
    assert caller == [7] and workers == [7, 7], done.stdout
