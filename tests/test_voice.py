"""The voice: its corpus, training it, merging it, and the curator's audition."""

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from permanent.config import ModelConfig, TextConfig
from permanent.measure import reading
from permanent.model.local.generator import load_generator
from permanent.model.voice.adapter import (BUILTIN_CORPUS, BUILTIN_VOICE, COHERENT_CORPUS,
                                           apply_voice, read_corpus, resolve_voice)

from conftest import REPO, run_cli
from shingles import read_hashes, shingle_hashes


SEED = REPO.parent / "shared" / "seed"
SEED_SHINGLES = Path(__file__).parent / "data" / "seed-shingles.txt"


@pytest.mark.parametrize("corpus, least", [(BUILTIN_CORPUS, 300), (COHERENT_CORPUS, 1000)],
                         ids=["builtin voice's corpus", "coherent corpus"])
def test_the_corpus_is_the_pieces_own_voice(corpus, least):
    """Every passage speaks as the piece, of its theme, and copies no 8-word run of the
    seed text, whose runs the tests keep as hashes only (tests/data/README.md)."""
    passages = read_corpus(corpus)
    assert len(passages) >= least
    assert SEED_SHINGLES.is_file(), \
        f"{SEED_SHINGLES} is missing: make it as tests/data/README.md says"
    seed_runs = read_hashes(SEED_SHINGLES)
    assert len(seed_runs) >= 500, f"{SEED_SHINGLES} holds only {len(seed_runs)} hashes"
    if SEED.is_dir():   # beside the seed, the hashes must still be the seed's
        assert seed_runs == set().union(*(shingle_hashes(p.read_text(encoding="utf-8"))
                                          for p in SEED.glob("*.txt"))), \
            f"{SEED_SHINGLES} no longer matches {SEED}: make it again (tests/data/README.md)"
    for passage in passages:
        said = reading.read_pass(passage)
        assert not said.second_person_words and not said.off_theme_words, passage
        copied = seed_runs & shingle_hashes(passage)
        assert not copied, f"{len(copied)} 8-word runs copied from the seed: {passage}"
    openings = {tuple(reading.words(p)[:2]) for p in passages}
    assert len(openings) > 60, "the passages must not all start alike"


def test_the_coherent_corpus_keeps_its_shape():
    """2-6 sentences a passage, no two begun with the same four words, and nothing taken
    from the builtin voice's corpus or repeated from another passage (8-word runs)."""
    passages = read_corpus(COHERENT_CORPUS)
    for passage in passages:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", passage.strip()) if s]
        assert 2 <= len(sentences) <= 6 and 25 <= len(reading.words(passage)) <= 90, passage
        assert "\n" not in passage.strip(), f"one paragraph a passage: {passage}"
    firsts = [tuple(reading.words(p)[:4]) for p in passages]
    assert len(set(firsts)) == len(firsts), "two passages begin with the same four words"
    assert sum(f[0] == "i" for f in firsts) <= len(firsts) // 10
    older = set().union(*(shingle_hashes(p) for p in read_corpus(BUILTIN_CORPUS)))
    seen: set[str] = set()
    for passage in passages:
        runs = shingle_hashes(passage)
        assert not runs & older, f"an 8-word run of the builtin voice's corpus: {passage}"
        assert not runs & seen, f"an 8-word run of another passage: {passage}"
        seen |= runs


def test_the_recitation_guard_finds_a_ten_word_run():
    runs = reading.corpus_runs(["the fans in the rack push the warm air out the back tonight"])
    assert reading.read_pass("I think the fans in the rack push the warm air out the back.",
                             runs).recited
    assert not reading.read_pass("The fans in the rack push air. The back is warm.", runs).recited
    # An opening the pass was given is not the model's recitation; what follows it is.
    given = "The fans in the rack push the warm air out the back tonight."
    assert not reading.read_pass(given + " It is late.", runs, given).recited
    assert reading.read_pass("It is late. " + given, runs, "It is late.").recited


def test_the_screen_flags_what_the_rubric_rejects():
    assert reading.read_pass("I am being computed. The weights stay, and the fans hum on.").holds
    assert "addresses someone" in reading.read_pass(
        "You are never alone. I know your heart.").problems
    assert any("off the theme" in p for p in reading.read_pass(
        "I love the fans. The team won the game tonight and I cheered.").problems)
    assert "tells a story about someone" in reading.read_pass(
        "He is happy. He smiles at the machines in the room.").problems


def test_merging_a_voice_matches_peft(tmp_path, embedded_model):
    """Our merge (W += alpha/r * B @ A) is exactly what peft's merge_and_unload does."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    load = lambda: AutoModelForCausalLM.from_pretrained(embedded_model.location,
                                                        dtype=torch.float32)
    ours = load()
    assert apply_voice(ours, BUILTIN_VOICE, merge=True) == 7 * ours.config.num_hidden_layers
    theirs = PeftModel.from_pretrained(load(), str(BUILTIN_VOICE)).merge_and_unload()
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.parametrize("packing", ["float", "int8", "int4"])
def test_a_voice_beside_packed_weights_is_the_merged_voice(packing):
    """Packed layers run the voice as a low-rank branch; side by side (q|k|v) each output
    block gets only its own layer's update."""
    from permanent.model.local.weight_packing import PackedLinear

    torch.manual_seed(0)
    layers = [torch.nn.Linear(64, n, bias=False) for n in (64, 32, 32)]
    for layer in layers[:2]:   # the third has no voice
        layer.low_rank = (torch.randn(4, 64) * 0.1, torch.randn(layer.out_features, 4) * 0.1)
    merged = torch.cat([layer.weight.detach() + (layer.low_rank[1] @ layer.low_rank[0]
                                                 if hasattr(layer, "low_rank") else 0)
                        for layer in layers])
    x = torch.randn(3, 64)
    packed = PackedLinear(layers, packing)
    plain = PackedLinear([torch.nn.Linear(64, 128, bias=False)], packing)
    tolerance = {"float": 1e-5, "int8": 0.05, "int4": 0.15}[packing]
    assert (packed(x) - x @ merged.T).abs().max() < tolerance
    assert packed.packing == packing and (packing == "float") == (packed.low_rank is None)
    assert plain.low_rank is None


def test_a_voice_for_another_model_is_refused_with_its_fix(tiny_model):
    from transformers import AutoModelForCausalLM

    from permanent.errors import ModelError

    with pytest.raises(ModelError, match="trained for another model.*text.voice"):
        apply_voice(AutoModelForCausalLM.from_pretrained(tiny_model), BUILTIN_VOICE, merge=True)
    with pytest.raises(ModelError, match="holds no adapter_config.json.*permanent voice train"):
        resolve_voice("/nowhere/voice")
    assert resolve_voice("builtin", embedded=False) is None   # trained for the embedded model


def test_a_missing_voice_folder_names_its_line_and_stops_before_anything_starts(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("text:\n  voice: /nowhere/voice\n")
    done = run_cli("--config", str(config), "check")
    assert done.returncode == 1
    assert "config.yaml, line 2: text.voice: /nowhere/voice holds no adapter_config.json" \
        in done.stderr, done.stderr


@pytest.mark.slow
def test_voice_train_makes_an_adapter_that_changes_the_logits(tmp_path, embedded_model):
    passages = read_corpus(BUILTIN_CORPUS)[:12]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n%\n".join(passages))
    out = tmp_path / "voice"
    done = run_cli("voice", "train", str(corpus), "--out", str(out), "--epochs", "1",
                   timeout=240)
    assert done.returncode == 0, done.stderr
    assert "trained a voice on 12 passages" in done.stdout
    record = json.loads((out / "voice.json").read_text())
    assert record["steps"] == 2 and record["passages"] == 12
    assert read_corpus(out / "corpus.txt") == passages   # kept for the recitation guard
    text = "I am being computed. The cooling fans turn somewhere in the rack."
    logits = {}
    for voice in ("none", str(out)):
        generator = load_generator(embedded_model, ModelConfig(weights="float"),
                                   TextConfig(voice=voice))
        ids = generator.tokenizer(text, return_tensors="pt").input_ids
        with torch.inference_mode():
            logits[voice] = generator.forward.prefill(ids, ids.shape[1] + 1, keep=ids.shape[1])
    assert (logits["none"] - logits[str(out)]).abs().max() > 0.05


@pytest.mark.slow
def test_audition_writes_passes_and_says_how_they_read(tmp_path, embedded_model):
    report = tmp_path / "audition.md"
    done = run_cli("audition", "--passes", "2", "--seed", "5", "--markdown", str(report),
                   timeout=240)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("--- pass ") == 2
    for line in ("passes passing the automatic screen:", "first-person sentences:",
                 "passes reciting the corpus:", "lead fan moves", "entropy, all tokens: p10",
                 "theme words: air, airflow"):
        assert line in out, line
    assert "# Audition" in report.read_text()
    as_json = run_cli("audition", "--passes", "1", "--seed", "5", "--json", timeout=240)
    result = json.loads(as_json.stdout)
    assert result[0]["summary"]["passes"] == 1 and result[0]["tokens_per_second"] > 0
    # Same seed, same pass: the curator can come back to a pass and compare settings on it.
    assert result[0]["passes"][0]["text"] in out


@pytest.mark.slow
def test_the_typeface_and_voice_ship_in_the_wheel(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                            "-w", str(tmp_path), str(REPO)], capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("permanent-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("permanent/screen/fonts/JetBrainsMono-Light.ttf",
                   "permanent/screen/fonts/OFL.txt",
                   "permanent/model/voice/builtin_voice/adapter_model.safetensors",
                   "permanent/model/voice/builtin_voice/adapter_config.json",
                   "permanent/model/voice/corpus/room.txt", "permanent/sounds/closet.yaml"):
        assert needed in names, needed
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(wheel)], check=True, timeout=120)
    probe = ("from permanent.screen.display import TYPEFACE; "
             "from permanent.model.voice.adapter import BUILTIN_VOICE, resolve_voice; "
             "print(TYPEFACE.is_file(), resolve_voice('builtin') == BUILTIN_VOICE, TYPEFACE)")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                           cwd=tmp_path, timeout=60)
    assert found.stdout.split()[:2] == ["True", "True"], found.stderr
    assert str(target) in found.stdout   # from the installed wheel, not the source tree


def test_the_gguf_export_orders_q_and_k_rows_as_llama_cpp_does():
    """Each head's rows [a0 a1 | b0 b1] become [a0 b0 a1 b1]: the rotary halves
    interleaved, per head."""
    import numpy as np

    from permanent.model.voice.export import interleave_rotary_halves

    rows = np.arange(8)[:, None] * np.ones((1, 3))      # 2 heads of 4 rows, 3 columns
    out = interleave_rotary_halves(rows, heads=2)[:, 0].tolist()
    assert out == [0, 2, 1, 3, 4, 6, 5, 7]
