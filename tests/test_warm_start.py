"""The warm start: a model kept on disk as it was held, read back by the next start."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from permanent.config import Config, ModelConfig
from permanent.model.local import warm_start
from permanent.model.local.generator import load_generator

from conftest import REPO


@pytest.fixture
def warm_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(warm_start, "_folder", lambda: tmp_path / "warm")
    return tmp_path / "warm"


def passes(generator, seed: int, count: int = 2) -> list[str]:
    text = dataclasses.replace(Config().text, seed=seed)
    generator.update_text(text)
    return ["".join(e.text for e in generator.write_pass(i)) for i in range(count)]


@pytest.mark.parametrize("lacks, kernel", [(None, "the project's int4 kernel"),
                                           ("no C compiler", "torch's int4 kernel")])
def test_a_warm_start_writes_exactly_what_the_usual_load_writes(embedded_model, warm_folder,
                                                                monkeypatch, lacks, kernel):
    """On either int4 kernel, each with its own layout (see int4_kernel)."""
    from permanent.model.local import int4_kernel

    monkeypatch.setattr(int4_kernel, "why_unavailable", lambda: lacks)
    config = dataclasses.replace(Config(), model=dataclasses.replace(Config().model, threads=1))
    usual = load_generator(embedded_model, config.model, config.text)
    assert "warm start" not in usual.runtime and f"({kernel}" in usual.runtime
    first = passes(usual, seed=11)
    usual.keep_warm()
    assert len(list(warm_folder.glob("*.safetensors"))) == 1
    warm = load_generator(embedded_model, config.model, config.text)
    assert warm.runtime.endswith("(warm start)")
    # The same seed, the same passes, token for token: the same weights, voice and sampler.
    assert passes(warm, seed=11) == first
    sample = "The fans turn — 4,096 tokens; “a run” ends."
    assert warm.tokenizer(sample).input_ids == usual.tokenizer(
        sample, add_special_tokens=False).input_ids
    assert warm.prompt_ids("I am being computed.") == usual.prompt_ids("I am being computed.")


def test_a_warm_start_leaves_transformers_unimported(embedded_model, tmp_path):
    """In its own interpreter, as the model process is: the second start imports no
    transformers (about 2 s on a 2-core machine)."""
    script = f"""
import sys
from permanent.config import Config
from permanent.model.local import warm_start
from permanent.model.local.generator import load_generator
from permanent.model.local.store import resolve
warm_start._folder = lambda: __import__("pathlib").Path({str(tmp_path)!r})
config = Config()
generator = load_generator(resolve(config.model), config.model, config.text)
next(generator.write_pass(0))
generator.keep_warm()
print(generator.runtime, "transformers" in sys.modules)
"""
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           cwd=REPO, timeout=300) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    assert runs[0].stdout.split()[-1] == "True"
    assert "(warm start) False" in runs[1].stdout, runs[1].stdout


def test_what_would_change_the_weights_changes_the_name(embedded_model, tmp_path, monkeypatch):
    import torch

    cpu = torch.device("cpu")
    base = warm_start.warm_key(embedded_model.location, None, "int4", cpu)
    voice = tmp_path / "voice"
    voice.mkdir()
    (voice / "adapter_model.safetensors").write_bytes(b"x")
    assert warm_start.warm_key(embedded_model.location, None, "int4", cpu) == base
    assert warm_start.warm_key(embedded_model.location, voice, "int4", cpu) != base
    assert warm_start.warm_key(embedded_model.location, None, "int8", cpu) != base
    # Other kernels (ATEN_CPU_CAPABILITY=avx2 on this CPU) pack weights their own way.
    other = "AVX2" if torch.backends.cpu.get_cpu_capability() != "AVX2" else "DEFAULT"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: other)
    assert warm_start.warm_key(embedded_model.location, None, "int4", cpu) != base
    monkeypatch.undo()
    # The code that lays the weights out: the project's int4 kernel reads them as packed.
    for code in ("int4_kernel.c", "int4_kernel.py", "weight_packing.py"):
        read = Path.read_bytes
        monkeypatch.setattr(Path, "read_bytes",
                            lambda path: read(path) + (b"\n" if path.name == code else b""))
        assert warm_start.warm_key(embedded_model.location, None, "int4", cpu) != base, code
        monkeypatch.undo()
    assert warm_start.warm_key(embedded_model.location, None, "int4",
                               torch.device("cuda")) is None


def test_a_torn_file_means_the_usual_load_and_a_new_file(embedded_model, warm_folder, caplog):
    config = Config()
    usual = load_generator(embedded_model, config.model, config.text)
    passes(usual, seed=3, count=1)
    usual.keep_warm()
    kept = next(warm_folder.glob("*.safetensors"))
    kept.write_bytes(kept.read_bytes()[:1000])   # a disk that filled up mid-write
    again = load_generator(embedded_model, config.model, config.text)
    assert "warm start" not in again.runtime
    assert "unreadable" in caplog.text
    passes(again, seed=3, count=1)
    again.keep_warm()
    assert load_generator(embedded_model, config.model, config.text).runtime.endswith(
        "(warm start)")


def test_only_the_latest_two_are_kept(embedded_model, warm_folder):
    """... and writes a stop cut short are swept once they are old, not while another
    piece may still be writing them."""
    warm_folder.mkdir(parents=True)
    cut_short = [warm_folder / "tmpa7oes384.part", warm_folder / ".tmpoYFx3u"]
    writing = warm_folder / ".tmpWr1t1n"
    for file in (*cut_short, writing):
        file.write_bytes(b"\0" * 1024)
    an_hour_ago = time.time() - 3600
    for file in cut_short:
        os.utime(file, (an_hour_ago, an_hour_ago))
    config = Config()
    for dtype in ("auto", "bfloat16", "float32"):   # three names for three starts
        settings = dataclasses.replace(config.model, dtype=dtype)
        generator = load_generator(embedded_model, settings, config.text)
        passes(generator, seed=1, count=1)
        generator.keep_warm()
    assert len(list(warm_folder.glob("*.safetensors"))) == 2
    assert len(list(warm_folder.glob("*.json"))) == 2
    assert not any(file.exists() for file in cut_short) and writing.exists()


def test_no_warm_start_for_a_model_on_transformers_own_forward(embedded_model, warm_folder):
    settings = ModelConfig(runtime="transformers")
    generator = load_generator(embedded_model, settings, Config().text)
    passes(generator, seed=1, count=1)
    generator.keep_warm()
    assert not warm_folder.exists() or not list(warm_folder.iterdir())
