"""A loaded model kept on disk as it is held in memory, so the next start skips the work.

Loading the usual way imports transformers, reads the float weights, packs them to 4
bits, hangs the voice beside them and reads the system prompt, each of which takes a
while on a small CPU. After its first pass the model process writes what it then holds,
the packed weights, the voice, the rotary tables and the system prompt's keys and
values, to one safetensors file; a later start with the same model, voice,
settings, torch, CPU and code reads that file and starts writing at once. The tokenizer
is the model's own `tokenizer.json`, read by `tokenizers` (the library under
transformers' fast tokenizers).

Anything that would make the file wrong changes its name (see `warm_key`); the two most
recent files are kept, older ones deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import torch

from . import compact_llama, kernels, weight_packing
from .cpu import cpuinfo

log = logging.getLogger("permanent.generator")

FORMAT = 1
KEPT = 2
INTERRUPTED_AFTER = 600   # seconds: far longer than a write takes
# What the file's layout follows, a change to any of it a new name: how it is written,
# how the compact decoder holds its weights, how they are packed, and the kernels' code.
_CODE = (Path(__file__), *(Path(module.__file__) for module in (compact_llama, weight_packing)),
         *kernels.CODE)


def _cpu_flags() -> str:
    flags = cpuinfo()[1]
    return platform.processor() if flags is None else " ".join(sorted(flags))


def warm_key(location: Path, voice_folder: Optional[Path], settings: str,
             device: torch.device) -> Optional[str]:
    """A name for this exact model as it would be held: its files, its voice, how it is
    packed, torch, the CPU (the packed layout is the CPU kernels' own) and this code.
    None where no warm start is kept (a GPU, a model that is not a folder)."""
    if device.type != "cpu" or not Path(location).is_dir():
        return None
    digest = hashlib.sha256()
    # The kernels torch runs (ATEN_CPU_CAPABILITY can choose AVX2 on an AVX-512 CPU) pack
    # weights their own way: the capability is part of the name.
    for part in (FORMAT, torch.__version__, platform.machine(), _cpu_flags(),
                 torch.backends.cpu.get_cpu_capability(), settings,
                 *(code.read_bytes() for code in _CODE)):
        digest.update(part if isinstance(part, bytes) else str(part).encode())
    for folder in (Path(location), voice_folder):
        if folder is None:
            continue
        for file in sorted(folder.iterdir()):
            if file.is_file():
                stat = file.stat()
                digest.update(f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


class CompactTokenizer:
    """The few calls the generator makes of a tokenizer, from `tokenizer.json` alone.

    Chat prompts rendered when the snapshot was written are kept with it; a prompt not seen
    then (the config's system prompt was edited) loads transformers' tokenizer once."""

    def __init__(self, location: Path, meta: dict):
        from tokenizers import Tokenizer

        self.location = location
        self.backend = Tokenizer.from_file(str(Path(location) / "tokenizer.json"))
        self.chat_template = meta["chat_template"]
        self.eos_token_id = meta["eos_token_id"]
        self.prompts: dict = dict(meta["prompts"])
        self._full = None

    def __call__(self, text: str, add_special_tokens: bool = False):
        return SimpleNamespace(
            input_ids=self.backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False) -> str:
        key = prompt_key(messages, add_generation_prompt)
        if key not in self.prompts:
            if self._full is None:
                from transformers import AutoTokenizer
                self._full = AutoTokenizer.from_pretrained(self.location, local_files_only=True)
            self.prompts[key] = self._full.apply_chat_template(
                messages, add_generation_prompt=add_generation_prompt, tokenize=False)
        return self.prompts[key]


def prompt_key(messages, add_generation_prompt: bool) -> str:
    return json.dumps([messages, add_generation_prompt], sort_keys=True)


def _folder() -> Path:
    from .store import cache_root
    return cache_root() / "warm"


def load(key: Optional[str], location: Path):
    """(forward, tokenizer, meta) kept under `key`, or None if there is none (or it is
    unreadable: then the model loads the usual way and the file is written again)."""
    if key is None:
        return None
    folder = _folder()
    tensors_file, meta_file = folder / f"{key}.safetensors", folder / f"{key}.json"
    if not (tensors_file.is_file() and meta_file.is_file()):
        return None
    try:
        from safetensors.torch import load_file

        meta = json.loads(meta_file.read_text())
        if tensors_file.stat().st_size != meta["tensors_bytes"]:
            raise ValueError(f"{tensors_file.stat().st_size} bytes where its meta wrote "
                             f"{meta['tensors_bytes']}: not the file written with it")
        # Each tensor copied out of the file's buffer: the packed kernels read their
        # weights with aligned vector loads and crashed on the file's 8-byte offsets.
        tensors = {k: v.clone() for k, v in load_file(str(tensors_file)).items()}
        forward = compact_llama.CompactLlama.from_tensors(tensors, meta["forward"])
        if (kept := meta["kept_prompt"]):
            forward._reserve(kept + 1)
            forward.cache[:, :, :, :, :kept] = tensors["kept_cache"]
            forward.tokens = tensors["kept_tokens"]
        return forward, CompactTokenizer(location, meta), meta
    except Exception as e:   # a torn or foreign file: load the usual way, write it again
        log.warning("warm start %s unreadable (%s); loading the model the usual way",
                    tensors_file, e)
        return None


def save(key: str, forward, tokenizer, meta: dict, prompt_ids: list[int]) -> Optional[Path]:
    """Write what `forward` holds under `key`, with the keys and values of `prompt_ids` it
    has already computed. Returns the file, or None where the tokenizer from
    `tokenizer.json` alone would not give the same text (then nothing is kept)."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer

    alone = Tokenizer.from_file(str(Path(meta["location"]) / "tokenizer.json"))
    sample = "The fans turn — 4,096 tokens; “a run” ends.\nI am being computed.<|im_end|>"
    ids = tokenizer(sample, add_special_tokens=False).input_ids
    if alone.encode(sample, add_special_tokens=False).ids != ids or alone.decode(
            ids, skip_special_tokens=True) != tokenizer.decode(ids, skip_special_tokens=True):
        log.info("no warm start kept: tokenizer.json alone tokenizes differently")
        return None
    tensors, forward_meta = forward.to_tensors()
    held = forward.tokens[:len(prompt_ids)].tolist()
    kept = next((i for i, (a, b) in enumerate(zip(held, prompt_ids)) if a != b), len(held))
    if kept:
        tensors["kept_cache"] = forward.cache[:, :, :, :, :kept]
        tensors["kept_tokens"] = forward.tokens[:kept]
    tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    # Both written whole under temporary names, then renamed: a start never reads half a
    # file, and the size recorded in the meta tells a pair from two different writes.
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".part", delete=False) as part:
        tensors_part = Path(part.name)
    meta_part = folder / f"{key}.json.part"
    try:
        try:
            save_file(tensors, str(tensors_part))
        except Exception as e:   # safetensors' own error, for a full disk too
            raise OSError(f"writing {tensors_part.name}: {e}") from e
        meta = dict(meta, forward=forward_meta, kept_prompt=kept,
                    tensors_bytes=tensors_part.stat().st_size)
        meta_part.write_text(json.dumps(meta))
        os.replace(tensors_part, folder / f"{key}.safetensors")
        os.replace(meta_part, folder / f"{key}.json")
    finally:   # a write cut short (a full disk) leaves nothing behind to fill it further
        tensors_part.unlink(missing_ok=True)
        meta_part.unlink(missing_ok=True)
    _prune(folder, key)
    return folder / f"{key}.safetensors"


def _prune(folder: Path, current: str) -> None:
    """The latest KEPT files stay; older ones go, and so do writes a stop cut short: the
    model process is killed the moment the piece ends, and a warm start being written
    then leaves its temporaries (as large as the packed model) behind. Another piece may
    be writing its own just now, so only those older than any write are taken."""
    older = sorted((f for f in folder.glob("*.safetensors") if f.stem != current),
                   key=lambda f: f.stat().st_mtime, reverse=True)
    for stale in older[KEPT - 1:]:
        for file in (stale, stale.with_suffix(".json")):
            file.unlink(missing_ok=True)
    cut_short = [*folder.glob("*.part"), *folder.glob(".tmp*")]   # ours; safetensors' own
    for file in cut_short:
        try:
            if time.time() - file.stat().st_mtime > INTERRUPTED_AFTER:
                file.unlink()
        except FileNotFoundError:   # finished or swept by another piece meanwhile
            pass
