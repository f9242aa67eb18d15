"""A voice: a small LoRA adapter that moves the model toward the piece's way of writing.

The builtin voice ships in the package (about 5 MB), trained by `permanent voice train`
from the corpus beside it. At load time each adapted layer gets its low-rank pair: merged
into float weights (W += (alpha / r) * B @ A), or run beside packed 4-bit ones, which keeps
them on their exact grid (see `apply_voice`). The adapter is peft's format
(adapter_config.json + adapter_model.safetensors), read here so peft is needed only to
train; `voice.export` writes it for llama.cpp.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ...errors import ModelError

PACKAGE_DIR = Path(__file__).resolve().parent
BUILTIN_VOICE = PACKAGE_DIR / "builtin_voice"
BUILTIN_CORPUS = PACKAGE_DIR / "corpus"
# Written for coherence, each sentence following from the last; no shipped voice uses it yet.
COHERENT_CORPUS = PACKAGE_DIR / "coherent_corpus"
CORPUS_SEPARATOR = "%"   # fortune's format: passages between lines holding only %


def read_corpus(path: Path) -> list[str]:
    """Passages from one file, or from every .txt file in a folder (sorted, so the
    order, and with it the training run, is the same everywhere)."""
    path = Path(path)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    passages = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as e:
            raise ModelError(f"cannot read the corpus {file}: {e.strerror}.") from None
        block: list[str] = []
        for line in text.splitlines() + [CORPUS_SEPARATOR]:
            if line.strip() == CORPUS_SEPARATOR:
                if passage := "\n".join(block).strip():
                    passages.append(passage)
                block = []
            else:
                block.append(line.rstrip())
    return passages


def resolve_voice(voice: str, base_dir: Path = Path("."), embedded: bool = True) -> Optional[Path]:
    """text.voice -> the adapter folder to merge, or None for the model's own voice.
    The builtin voice was trained for the embedded model; another model has none of its own."""
    if voice == "none" or (voice == "builtin" and not embedded):
        return None
    folder = BUILTIN_VOICE if voice == "builtin" else Path(voice).expanduser()
    if not folder.is_absolute():
        folder = base_dir / folder
    if not (folder / "adapter_config.json").is_file():
        raise ModelError(f"{folder} holds no adapter_config.json. Train one with "
                         "`permanent voice train CORPUS --out FOLDER`, or use 'builtin' or "
                         "'none'.")
    return folder


def voice_corpus(text, base_dir: Path = Path("."), embedded: bool = True) -> list[str]:
    """The passages a voice was trained on (for the recitation guard); none if unknown."""
    folder = resolve_voice(text.voice, base_dir, embedded)
    if folder is None or not (folder / "corpus.txt").is_file():
        return []
    return read_corpus(folder / "corpus.txt")   # `voice train` keeps a copy beside the voice


def apply_voice(model, folder: Path, merge: bool) -> int:
    """Give `model`'s layers the adapter's low-rank updates; returns how many layers.

    merge=True adds (alpha / r) * B @ A to float weights, exactly. merge=False hangs the
    pair on each layer as `low_rank` for `PackedLinear` to run beside packed weights:
    re-quantizing merged weights to 4 bits moved the distribution as much as the voice
    itself does, while the base weights alone pack losslessly."""
    import torch
    from safetensors.torch import load_file

    settings = json.loads((folder / "adapter_config.json").read_text())
    scale = settings["lora_alpha"] / settings["r"]
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    modules = dict(model.named_modules())
    changed = 0
    for key, a in tensors.items():
        if not key.endswith("lora_A.weight"):
            continue
        b = tensors[key.replace("lora_A", "lora_B")]
        # peft names: base_model.model.<module path>.lora_A.weight
        name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        layer = modules.get(name)
        if layer is None or layer.weight.shape != (b.shape[0], a.shape[1]):
            raise ModelError(f"the voice in {folder} was trained for another model: it has "
                             f"no place for {name}. Set text.voice to 'none' or train a voice "
                             "for this model.")
        a, b = a.float() * scale, b.float()
        if merge:
            with torch.no_grad():
                layer.weight += (b @ a).to(layer.weight.dtype)
        else:
            layer.low_rank = (a, b)
        changed += 1
    if changed == 0:
        raise ModelError(f"the voice in {folder} holds no LoRA weights.")
    return changed
