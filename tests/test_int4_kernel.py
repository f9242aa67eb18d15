"""The project's 4-bit kernel: built here by the system's compiler, run on real matrices,
checked against float64 products of the same weights."""

import logging
import os

import pytest
import torch

from permanent.model.local import int4_kernel, kernels, store as model_store
from permanent.model.local.weight_packing import PackedLinear


@pytest.fixture
def one_thread(torch_threads, torch_on_avx2):
    """Where the project's kernel runs: one thread, torch on its AVX2 kernels."""
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


def test_a_packed_layer_runs_on_it_when_one_thread_multiplies(one_thread):
    layer = torch.nn.Linear(576, 960, bias=True)
    packed = PackedLinear([layer], "int4")
    assert packed.kernel == "own" and packed.kernel_note is None
    x = torch.randn(2, 576)
    exact = layer(x).detach()
    assert float((packed(x) - exact).norm() / exact.norm()) < 0.1   # int4's own rounding
    torch.set_num_threads(2)
    shared = PackedLinear([layer], "int4")
    assert shared.kernel == "torch"
    assert shared.kernel_note == "torch runs on 2 threads and this kernel on one"


def test_torch_s_avx_512_kernel_is_kept_where_it_runs(monkeypatch, one_thread):
    monkeypatch.setattr(kernels, "torch_has_avx512", lambda: True)
    packed = PackedLinear([torch.nn.Linear(576, 960)], "int4")
    assert packed.kernel == "torch"
    assert packed.kernel_note == "torch's AVX-512 build of it runs here"


def test_it_is_built_once_and_without_a_compiler_torch_s_kernel_runs(
        one_thread, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(model_store, "cache_root", lambda: tmp_path)
    int4_kernel._library.cache_clear()
    try:
        assert kernels.own_kernel_unavailable(576) is None
        built = list((tmp_path / "kernels").glob("int4_kernel-*.so"))
        assert len(built) == 1 and not list((tmp_path / "kernels").glob("*.part"))
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
