"""The speed anchor: llama.cpp (through llama-cpp-python) writing from the same GGUF file,
with the same voice, prompt, sampling and threads, on the same machine, in the same run.

llama.cpp computes no entropy of the full distribution; the piece's loop does, at every
token. The ratio says what that and the rest of the piece's loop cost against a
well-tuned C++ engine. The two take turns, a pass each, round after round: on a shared
virtual machine the speed of either drifts by a fifth within minutes, and a ratio of two
runs minutes apart measured that drift as much as the engines.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from ..config import Config

HOW_TO_GET_IT = ("llama-cpp-python is not installed here; get it with "
                 "CMAKE_ARGS=-DGGML_NATIVE=OFF pip install llama-cpp-python==0.3.36 "
                 "(it compiles llama.cpp: about 10 minutes on 2 cores), or `make test`, "
                 "which installs it")


def measure_anchor(config: Config, rounds: int = 8, tokens: int = 200,
                   threads: list[int] | None = None) -> dict:
    """{"rows": one per thread count, in turn} (None: the piece's own, as model.threads
    gives them), or {"error": why not}."""
    try:
        import llama_cpp   # noqa: F401 (only whether it is there)
    except ImportError:
        return {"error": HOW_TO_GET_IT}
    settings = [config] if not threads else \
        [dataclasses.replace(config, model=dataclasses.replace(config.model, threads=count))
         for count in threads]
    return {"rows": [_anchor_at(one, rounds, tokens) for one in settings]}


def _anchor_at(config: Config, rounds: int, tokens: int) -> dict:
    import llama_cpp

    from ..model.voice import prompt as voice
    from ..model.local.generator import load_generator
    from ..model.local.store import embedded_gguf, resolve
    from ..model.voice.adapter import resolve_voice
    from ..model.voice.export import export_gguf

    source = resolve(config.model, config.base_dir)
    if not source.embedded:
        return {"error": "the anchor runs the embedded model's GGUF; model.name is "
                         f"{config.model.name!r}"}
    text = config.text
    piece = load_generator(source, config.model, text, config.base_dir)
    threads = piece.threads   # the piece's, as model.threads chose them
    with tempfile.TemporaryDirectory() as scratch:
        lora = None
        if (folder := resolve_voice(text.voice, config.base_dir, True)) is not None:
            lora = str(Path(scratch) / "voice.gguf")
            export_gguf(folder, source.location, Path(lora))
        llm = llama_cpp.Llama(model_path=str(embedded_gguf()), lora_path=lora,
                              n_threads=threads, n_threads_batch=threads, n_ctx=2048, seed=0,
                              verbose=False)
        messages = voice.chat_messages(text)
        sampling = dict(temperature=text.temperature, top_p=text.top_p, top_k=text.top_k,
                        min_p=text.min_p, repeat_penalty=text.repetition_penalty)
        llm.create_chat_completion(messages, max_tokens=16, **sampling)   # warm-ups
        sum(1 for _ in piece.write_pass(0))
        piece.prefill_openings()   # the piece's steady state, as llama.cpp's prompt is cached
        ours, theirs = [], []   # (tokens, seconds) of each round
        for round_ in range(1, rounds + 1):
            piece.tokens_sampled = 0
            started = time.monotonic()
            sum(1 for _ in piece.write_pass(round_))
            ours.append((piece.tokens_sampled, time.monotonic() - started))
            started = time.monotonic()
            reply = llm.create_chat_completion(messages, max_tokens=tokens, **sampling)
            theirs.append((reply["usage"]["completion_tokens"], time.monotonic() - started))
        del llm
    rate = lambda turns: sum(n for n, _ in turns) / sum(s for _, s in turns)
    ratios = [rate([a]) / rate([b]) for a, b in zip(ours, theirs)]
    return {"engine": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
            "threads": threads, "voice": lora is not None, "rounds": rounds,
            "tokens": sum(n for n, _ in theirs),
            "tokens_per_second": round(rate(theirs), 1),
            "piece_tokens_per_second": round(rate(ours), 1),
            "ratio": round(statistics.median(ratios), 2),
            "ratio_range": [round(min(ratios), 2), round(max(ratios), 2)]}
