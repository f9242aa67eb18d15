"""`permanent bench`'s model measurements run end to end (on the tiny model: the figures
themselves are for the machine, not for a test)."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from permanent.cli import build_parser, main
from permanent.measure.anchor import measure_anchor
from permanent.measure.bench import VARIANTS, measure_generator, measure_variants
from permanent.config import Config, ModelConfig, TextConfig

pytestmark = pytest.mark.slow


@pytest.fixture
def tiny_config(tiny_model):
    return dataclasses.replace(Config(), model=ModelConfig(name=str(tiny_model)),
                               text=TextConfig(seed=2, min_tokens=30, max_tokens=40, drafts=1))


def test_generator_is_measured_against_plain_generate(tiny_config):
    row = measure_generator(tiny_config, passes=2)
    assert row["runtime"].removesuffix(" (warm start)") == "compact decoder, float weights, float32"
    assert row["tokens"] >= 2 and row["tokens_per_second"] > 0
    assert row["generate_tokens_per_second"] > 0
    assert row["ratio_to_generate"] == pytest.approx(
        row["tokens_per_second"] / row["generate_tokens_per_second"], rel=0.05)
    assert row["drafts"] == 1 and row["tokens_written_per_token_shown"] <= 1.05


def test_the_bench_shows_what_drafts_cost(tiny_config):
    drafted = dataclasses.replace(tiny_config, text=dataclasses.replace(
        tiny_config.text, drafts=3))
    row = measure_generator(drafted, passes=2)
    assert row["drafts"] == 3 and row["tokens_written_per_token_shown"] > 1.5
    assert row["shown_tokens_per_second"] == pytest.approx(
        row["tokens_per_second"] / row["tokens_written_per_token_shown"], rel=0.05)


def test_the_anchor_runs_llama_cpp_and_the_loop_in_turns():
    """The embedded model's GGUF and voice through llama.cpp, a pass each in turn with the
    piece's loop; the ratio is the median of the rounds'."""
    config = dataclasses.replace(Config(), text=TextConfig(seed=3, min_tokens=20, max_tokens=30))
    anchor = measure_anchor(config, rounds=2, tokens=30, threads=[1, 2])
    assert "error" not in anchor, anchor
    assert [row["threads"] for row in anchor["rows"]] == [1, 2]
    for row in anchor["rows"]:
        assert row["voice"] and row["rounds"] == 2 and 0 < row["tokens"] <= 60
        assert row["tokens_per_second"] > 0 and row["piece_tokens_per_second"] > 0
        low, high = row["ratio_range"]
        assert 0 < low <= row["ratio"] <= high


def test_variants_report_speed_and_how_far_each_moves_the_entropy(tiny_config):
    rows = measure_variants(tiny_config, tokens=24)
    assert len(rows) == len(VARIANTS)
    reference, *others = rows
    assert reference["kl_bits"] == 0 and reference["entropy_shift_bits"] == 0
    compact_float = next(r for r in others if r["note"] == "compact decoder")
    assert compact_float["kl_bits"] < 1e-4          # the same arithmetic, reordered
    packed = [r for r in others if "4-bit" in r["note"] or "8-bit" in r["note"]]
    # Rounding the weights shows in the KL, so a packed variant measured as exact is either
    # a measurement too coarse to see it (float32 KL: 0 or below on AVX2 kernels) or layers
    # that quietly ran in float: the latter must be said in the row.
    assert all(r["kl_bits"] > 0 or r["fell_back"] for r in packed), packed
    assert all(r["tokens_per_second"] > 0 for r in rows)


# Everything but the hum's measurement is stubbed: the real ones take minutes. The stubs
# write to standard output as libraries do, from Python and from C below it.
BENCH_JSON = """
import os, sys
import permanent.measure.bench as bench

def chatty(*args, **kwargs):
    print("a library's words")
    os.write(1, b"a C library's words\\n")
    return {"tokens_per_second": 10.0, "shown_tokens_per_second": 10.0}

for name in ("measure_generator", "measure_display", "measure_render", "measure_startup"):
    setattr(bench, name, chatty)
sys.modules["tkinter"] = None   # as in Debian's Python, where pyo has one more banner
from permanent.cli import main
sys.exit(main(["bench", "--json", "--warm-only"]))
"""


# A mode's measurement alone, stubbed: the anchor and the shapes keep nothing of the
# standard set, and their JSON is all that reaches standard output too.
MODE_JSON = """
import sys
import permanent.measure.{module} as measured
measured.measure_{mode} = lambda config, **options: print("a library's words") or {{"stubbed": True}}
from permanent.cli import main
sys.exit(main(["bench", "{mode}", "--json"]))
"""


@pytest.mark.parametrize("mode", ["anchor", "shapes"])
def test_a_bench_mode_measures_only_itself(mode):
    code = MODE_JSON.format(module=mode, mode=mode)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=without_pyo_setting(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results.keys() == {"machine", "date", mode} and results[mode] == {"stubbed": True}


# Each mode's own options, then one that belongs to another mode or to the standard set.
OWN_AND_FOREIGN = [
    (["bench", "--warm-only", "--variants"], ["--no-hog"]),
    (["bench", "anchor", "--rounds", "2", "--threads", "1,2"], ["--warm-only"]),
    (["bench", "shapes"], ["--variants"]),
    (["bench", "soak", "--seconds", "5", "--no-hog"], ["--tokens", "5"]),
    (["bench", "entropy", "--tokens", "5", "--top-k", "3", "--seed", "1"], ["--clients", "1"]),
    (["bench", "server", "--clients", "1,2", "--seconds", "5"], ["--no-hog"]),
    (["bench", "remote", "--seconds", "5", "--rounds", "1"], ["--clients", "1"]),
]


@pytest.mark.parametrize("own, foreign", OWN_AND_FOREIGN)
def test_each_bench_mode_takes_only_its_own_options(own, foreign, capsys):
    assert build_parser().parse_args([*own, "--json"]).json
    with pytest.raises(SystemExit) as refused:   # argparse's refusal, before any measuring
        main([*own, *foreign])
    assert refused.value.code == 2
    assert "unrecognized arguments: " + foreign[0] in capsys.readouterr().err


def test_the_standard_sets_options_before_a_mode_are_refused_too(capsys):
    with pytest.raises(SystemExit) as refused:
        main(["bench", "--variants", "soak", "--seconds", "5"])
    assert refused.value.code == 2
    assert "--variants: only plain `permanent bench` takes it" in capsys.readouterr().err


def without_pyo_setting():
    return {k: v for k, v in os.environ.items() if k != "PYO_GUI_WX"}


def test_bench_json_is_all_that_reaches_stdout():
    done = subprocess.run([sys.executable, "-c", BENCH_JSON], cwd=REPO, env=without_pyo_setting(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)   # the whole of it
    assert results["hum"]["blade_pass_hz_at_1_bit"] > 0   # pyo loaded and played offline
    assert set(results["hum"]["cpu_share_by_channels"]) == {"2", "4", "8"}   # speakers
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"] and machine["torch"]
    assert {"avx2", "avx512", "amx", "torch_cpu_capability"} <= machine.keys()
    assert "a library's words" in done.stderr and "a C library's words" in done.stderr


@pytest.mark.parametrize("code", [
    "import permanent, pyo",   # PYO_GUI_WX=0 from the package: no wxPython banner
    # Without Tkinter too (Debian's Python), the way the piece imports it stays quiet.
    "import sys; sys.modules['tkinter'] = None; from permanent.room import hum",
])
def test_pyo_imported_through_the_package_prints_nothing(code):
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=without_pyo_setting(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


MACHINE_JSON = ("import json; from permanent.measure.machine import describe_machine, "
                "machine_line; m = describe_machine(); print(json.dumps([m, machine_line(m)]))")


def machine_under(capability: str | None) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    done = subprocess.run([sys.executable, "-c", MACHINE_JSON], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return tuple(json.loads(done.stdout))


def test_the_bench_names_the_cpu_and_whether_torch_kernels_are_native_or_forced():
    flags = set(open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0].split())
    machine, line = machine_under(None)
    assert machine["cpu_family"] and f"family {machine['cpu_family']}" in machine["cpu_model"]
    assert machine["avx2"] == ("avx2" in flags) and machine["avx512"] == ("avx512f" in flags)
    assert machine["torch_kernels"] == "native" and not machine["simulated"]
    assert machine["torch_cpu_capability"] == machine["native_cpu_capability"]
    assert line.startswith(machine["cpu_model"]) and line.endswith("kernels (native)")
    # The lowest build is below every x86-64 CPU's own: forced, and said to be a simulation.
    forced, line = machine_under("default")
    assert forced["torch_cpu_capability"] == "DEFAULT" and forced["simulated"]
    assert forced["torch_kernels"] == ("forced by ATEN_CPU_CAPABILITY=default: a simulation "
                                       f"on a CPU with {machine['native_cpu_capability']}")
    assert line.endswith(f"({forced['torch_kernels']})")


def test_a_random_shape_written_as_gguf_gives_llama_cpp_the_same_model(tmp_path, embedded_model):
    """The shapes' anchor runs llama.cpp on the very weights the loop runs: read back by
    llama.cpp, the GGUF gives the logits the piece's own 4-bit decoder gives (correlation
    0.987-0.996 measured over 12 positions). With q and k left in transformers' order it
    measured 0.54-0.96, falling with each position: a misnamed tensor or a wrong order
    gives logits that drift away from the piece's."""
    import llama_cpp
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from permanent.measure.shape_gguf import write_shape_gguf
    from permanent.measure.shapes import write_random_shape
    from permanent.model.local.compact_llama import CompactLlama

    write_random_shape("135M", embedded_model.location, str(tmp_path))
    # Raw random q and k make attention all but uniform, whatever their order: larger
    # ones make it depend on every position's rotary turn.
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    for layer in model.model.layers:
        for matrix in (layer.self_attn.q_proj, layer.self_attn.k_proj):
            matrix.weight.data *= 4
    model.save_pretrained(tmp_path)
    write_shape_gguf(tmp_path, tmp_path / "shape.gguf")
    ids = [1, 504, 2365, 314, 260, 1234, 40, 7, 889, 3000, 12, 99]
    llm = llama_cpp.Llama(model_path=str(tmp_path / "shape.gguf"), n_threads=1, n_ctx=64,
                          logits_all=True, verbose=False)
    llm.eval(ids)
    theirs = np.array(llm.scores[:len(ids)])
    with torch.inference_mode():
        ours = CompactLlama(model, "int4").prefill(torch.tensor([ids]), 64,
                                                    keep=len(ids)).numpy()
    agreement = [np.corrcoef(a, b)[0, 1] for a, b in zip(ours, theirs)]
    print("correlation of llama.cpp's logits with the piece's:", np.round(agreement, 3))
    assert min(agreement) > 0.97
