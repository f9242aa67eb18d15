"""`permanent bench shapes`: could this computer carry a larger voice?

The piece's own loop (compact decoder, 4-bit weights on a CPU) on random weights of the
published SmolLM2 shapes. Speed does not depend on the values but for one thing: the
output matrix's 8-bit correction covers the logits near the largest (see
`weight_packing`), and raw random weights give flat logits, all of them near. So the
norms are ones, as before training, and the output matrix is drawn so the logits spread
with a standard deviation of LOGIT_SPREAD: the largest of 49,152 normal draws lies about
4 deviations up, so about 1,000 lie within 10 of it, as in the embedded model's writing
near its 90th percentile (median 333 a token, 90th percentile 1,074). Each shape runs in
a process of its own, so its peak memory is its own (taken before llama.cpp loads).

Beside the loop, where llama-cpp-python is installed, llama.cpp runs the same random
weights written as a GGUF file (`shape_gguf`), on the same threads, a pass each in turn,
so a larger shape has an anchor too.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import resource
import statistics
import tempfile
import time
from pathlib import Path

from ..config import Config

LOGIT_SPREAD = 5.0   # standard deviation of the random shapes' logits
SHAPES = {   # SmolLM2's published configurations
    "135M": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3),
    "360M": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                 num_attention_heads=15, num_key_value_heads=5),
    "1.7B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                 num_attention_heads=32, num_key_value_heads=32),
}


def write_random_shape(name: str, tokenizer_dir: str, folder: str) -> None:
    """A Llama model of SHAPES[name] with random bf16 weights, saved to `folder` with the
    embedded model's tokenizer, ready for `load_generator`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    shape = LlamaConfig(vocab_size=49152, max_position_embeddings=8192,
                        rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1,
                        eos_token_id=2, **SHAPES[name])
    with torch.device("meta"):
        model = LlamaForCausalLM(shape)
    # Random bf16 weights without first making float32 ones: half the peak memory.
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    for key, tensor in model.state_dict().items():
        if key.endswith("norm.weight"):
            tensor.fill_(1.0)
        else:
            tensor.normal_(0, 0.02)
    # The output matrix is the embeddings, as in SmolLM2. A normed hidden state has
    # length sqrt(hidden): this spread makes the logits' standard deviation LOGIT_SPREAD.
    model.model.embed_tokens.weight.data.normal_(0, LOGIT_SPREAD / shape.hidden_size ** 0.5)
    model.tie_weights()
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)


def _one_shape(name: str, tokenizer_dir: str, config: Config, tokens: int, rounds: int,
               out: mp.Queue):
    from ..model.local.generator import load_generator
    from ..model.local.store import resolve

    with tempfile.TemporaryDirectory(prefix=f"permanent-{name}-") as folder:
        write_random_shape(name, tokenizer_dir, folder)
        settings = dataclasses.replace(config.model, name=folder, weights="int4", dtype="auto")
        text = dataclasses.replace(config.text, voice="none", seed=1, min_tokens=tokens,
                                   max_tokens=tokens)
        started = time.monotonic()
        generator = load_generator(resolve(settings), settings, text)
        loaded = time.monotonic() - started
        sum(1 for _ in generator.write_pass(0))   # warm-up
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # KiB -> MiB
        llm, beside = _llama_cpp_beside(Path(folder), generator.threads)
        sampling = dict(temperature=text.temperature, top_p=text.top_p, top_k=text.top_k,
                        min_p=text.min_p, repeat_penalty=text.repetition_penalty)
        prompt = generator.prompt_text()
        if llm is not None:
            llm.create_completion(prompt, max_tokens=8, **sampling)   # warm-up
        ours, theirs = [], []   # (tokens, seconds) of each round: a pass each in turn
        for round_ in range(1, rounds + 1):
            generator.tokens_sampled, started = 0, time.monotonic()
            sum(1 for _ in generator.write_pass(round_))
            ours.append((generator.tokens_sampled, time.monotonic() - started))
            if llm is not None:
                started = time.monotonic()
                reply = llm.create_completion(prompt, max_tokens=tokens, **sampling)
                theirs.append((reply["usage"]["completion_tokens"], time.monotonic() - started))
    row = {"shape": name, "runtime": generator.runtime, "threads": generator.threads,
           "load_seconds": round(loaded, 1), "tokens_per_second": round(_rate(ours), 1),
           "peak_rss_mib": round(peak)}
    if theirs:
        ratios = [_rate([a]) / _rate([b]) for a, b in zip(ours, theirs)]
        row.update(llama_cpp_tokens_per_second=round(_rate(theirs), 1), rounds=rounds,
                   ratio=round(statistics.median(ratios), 2),
                   ratio_range=[round(min(ratios), 2), round(max(ratios), 2)])
    else:
        row["llama_cpp"] = beside
    out.put(row)


def _rate(turns: list[tuple[int, float]]) -> float:
    return sum(n for n, _ in turns) / sum(s for _, s in turns)


def _llama_cpp_beside(folder: Path, threads: int):
    """(llama.cpp on the same random weights, written as GGUF, or None; why not, or '')."""
    try:
        import llama_cpp
    except ImportError:
        from .anchor import HOW_TO_GET_IT
        return None, HOW_TO_GET_IT
    from .shape_gguf import write_shape_gguf

    write_shape_gguf(folder, folder / "shape.gguf")
    return llama_cpp.Llama(model_path=str(folder / "shape.gguf"), n_threads=threads,
                           n_threads_batch=threads, n_ctx=1024, seed=0, verbose=False), ""


def measure_shapes(config: Config, tokens: int = 64, rounds: int = 3) -> dict:
    from ..model.local.store import ensure_converted, resolve

    embedded = resolve(dataclasses.replace(config.model, name="embedded"))
    ensure_converted(embedded)   # for its tokenizer
    context = mp.get_context("spawn")
    rows = []
    for name in SHAPES:
        out = context.Queue()
        process = context.Process(target=_one_shape,
                                  args=(name, embedded.location, config, tokens, rounds, out))
        process.start()
        process.join()
        if process.exitcode != 0:
            rows.append({"shape": name, "error": f"exit code {process.exitcode}"})
            continue
        rows.append(out.get())
    pace = config.pacing.tokens_per_second
    sustained = [r["shape"] for r in rows if r.get("tokens_per_second", 0) >= pace]
    return {"rows": rows, "pacing_tokens_per_second": pace,
            "largest_sustaining_pacing": sustained[-1] if sustained else None}
