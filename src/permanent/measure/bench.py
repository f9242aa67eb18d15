"""`permanent bench`: what this machine does with the piece, measured.

Each figure comes from the real code path: the generator's own streaming loop on the
configured model, the hum graph rendered offline and measured, and the whole program
launched as a child process (with a cold and a warm model cache).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from ..config import Config
from ..timings import ENVIRONMENT as TIMINGS_VARIABLE, first_event, read_timings
from .machine import describe_machine, machine_line


def measure_generator(config: Config, passes: int = 3) -> dict:
    """The piece's streaming loop (with entropy) against plain `model.generate()` on the
    same weights, threads, prompt and sampling settings, in one run. Both after one
    warm-up: the piece runs for months, so the steady state is what counts."""
    import dataclasses

    import torch

    from ..model.local.generator import load_generator
    from ..model.local.store import ensure_converted, resolve

    source = resolve(config.model, config.base_dir)
    ensure_converted(source)
    started = time.monotonic()
    generator = load_generator(source, config.model, config.text, config.base_dir)
    loaded = time.monotonic() - started
    sum(1 for _ in generator.write_pass(0))   # warm-up
    generator.prefill_openings()
    generator.keep_warm()   # so the warm launch below starts as a gallery's second start does
    generator.tokens_sampled = generator.tokens_shown = 0
    seconds = cpu = 0.0
    for pass_id in range(1, passes + 1):
        wall, process = time.monotonic(), time.process_time()
        sum(1 for _ in generator.write_pass(pass_id))
        seconds += time.monotonic() - wall
        cpu += time.process_time() - process
    tokens = generator.tokens_sampled
    streaming = tokens / seconds

    text = config.text
    # The same weights as the piece packs them, run by transformers' own forward.
    plain = load_generator(source, dataclasses.replace(config.model, runtime="transformers"),
                           text).forward.model
    prompt, opening = generator.prompt_ids("I am being computed.")
    ids = torch.tensor([prompt + opening], device=generator.device)
    n = max(32, tokens // passes)
    sampling = dict(do_sample=True, temperature=text.temperature, top_p=text.top_p,
                    top_k=text.top_k or None, repetition_penalty=text.repetition_penalty,
                    pad_token_id=generator.tokenizer.eos_token_id)
    with torch.inference_mode():
        plain.generate(ids, max_new_tokens=8, **sampling)   # warm-up
        wall = time.monotonic()
        out = plain.generate(ids, max_new_tokens=n, min_new_tokens=n, **sampling)
    generate = (out.shape[1] - ids.shape[1]) / (time.monotonic() - wall)
    return {"model": generator.label, "device": str(generator.device),
            "runtime": generator.runtime,
            "threads": generator.threads, "load_seconds": round(loaded, 2),
            "tokens": tokens, "tokens_per_second": round(streaming, 1),
            "generate_tokens_per_second": round(generate, 1),
            "ratio_to_generate": round(streaming / generate, 2),
            "cpu_seconds_per_token": round(cpu / tokens, 4),
            # What drafts cost: the pacing needs shown tokens, the model writes them all.
            "drafts": text.drafts, "draft_by": text.draft_by,
            "shown_tokens_per_second": round(generator.tokens_shown / seconds, 1),
            "tokens_written_per_token_shown": round(tokens / max(1, generator.tokens_shown), 2),
            "pacing_tokens_per_second": config.pacing.tokens_per_second}


@dataclass(frozen=True)
class Variant:
    """One way of running the model, as model settings and what is done to it after loading."""
    runtime: str
    weights: str
    dtype: str
    threads: int
    note: str
    int8_dynamic: bool = False   # torch.ao's dynamic int8 quantization of every Linear


VARIANTS = [  # the first is the reference
    Variant("transformers", "float", "float32", 2, "transformers as loaded: the reference"),
    Variant("transformers", "float", "bfloat16", 2, "transformers, bf16"),
    Variant("transformers", "float", "float32", 2,
            "transformers, torch.ao int8 dynamic quantization", int8_dynamic=True),
    Variant("transformers", "int4", "bfloat16", 2, "transformers, 4-bit weights"),
    Variant("auto", "float", "float32", 2, "compact decoder"),
    Variant("auto", "int8", "bfloat16", 2, "compact decoder, 8-bit weights"),
    Variant("auto", "int4", "float32", 2, "compact decoder, 4-bit weights, fp32 activations"),
    Variant("auto", "int4", "bfloat16", 2, "compact decoder, 4-bit weights (the embedded default)"),
    Variant("auto", "int4", "bfloat16", 1, "compact decoder, 4-bit weights"),
]


def measure_variants(config: Config, tokens: int = 160) -> list[dict]:
    """What each way of running the model does on this machine: speed of the streaming
    loop, and how far it moves the next-token distributions from the reference (mean KL
    divergence and mean absolute entropy change in bits, teacher-forced over one written
    pass) -- the piece's sound is made of entropy, so a fast variant that shifts it is
    not a free win."""
    import dataclasses
    import math

    import torch

    from ..model.entropy import entropy_bits
    from ..model.local.generator import load_generator, pick_threads
    from ..model.local.store import resolve
    from ..model.local.weight_packing import fallback_note

    source = resolve(config.model, config.base_dir)
    text = dataclasses.replace(config.text, seed=1, min_tokens=tokens, max_tokens=tokens)
    reference = written = None
    rows = []
    for variant in VARIANTS:
        settings = dataclasses.replace(config.model, runtime=variant.runtime,
                                       weights=variant.weights, dtype=variant.dtype,
                                       threads=variant.threads)
        generator = load_generator(source, settings, text)
        if variant.int8_dynamic:
            generator.forward.model = torch.ao.quantization.quantize_dynamic(
                generator.forward.model, {torch.nn.Linear}, dtype=torch.qint8)
        pieces = list(generator.write_pass(0))   # also the warm-up
        generator.tokens_sampled = 0
        started = time.monotonic()
        list(generator.write_pass(1))
        speed = generator.tokens_sampled / (time.monotonic() - started)
        if written is None:   # the reference's own pass is the text every variant reads
            prompt, _ = generator.prompt_ids("")
            body = generator.tokenizer("".join(p.text for p in pieces),
                                       add_special_tokens=False).input_ids
            written = (torch.tensor([prompt + body]), len(body))
        ids, count = written
        with torch.inference_mode():
            logits = generator.forward.prefill(ids, ids.shape[1] + 1, keep=count + 1)[:-1]
            # In float64: log-probabilities near -16 hold only ~1e-6 in float32, and a
            # near-uniform distribution's KL summed at that precision came out 0 or
            # negative for a variant that did move it (the tiny test model, AVX2 kernels).
            logp = torch.log_softmax(logits.double(), dim=-1)
        if reference is None:
            reference = logp
        kl = (reference.exp() * (reference - logp)).sum(-1) / math.log(2)
        shift = (entropy_bits(logp) - entropy_bits(reference)).abs().mean()
        rows.append({"runtime": generator.runtime, "threads": variant.threads,
                     "note": variant.note, "tokens_per_second": round(speed, 1),
                     # '' when every layer runs as asked; else which ones did not, and why
                     "fell_back": fallback_note(generator.forward.packed),
                     "kl_bits": float(f"{kl.mean():.2g}"),   # two significant digits
                     "entropy_shift_bits": float(f"{shift:.2g}")})
    torch.set_num_threads(pick_threads(config.model.threads))
    return rows


def measure_display(config: Config, seconds: float = 6.0, size=(1920, 1080)) -> dict:
    """Frame times of a full page at 1920x1080, drawn offscreen while the model generates."""
    import multiprocessing as mp
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    from ..screen.display import PageView, pygame
    from ..model.process import ModelProcess

    status = mp.get_context("spawn").Queue()
    model = ModelProcess(config, status).start()
    status.get(timeout=120)   # loaded: from here on it competes for the CPU
    pygame.display.init()
    pygame.font.init()
    surface = pygame.Surface(size)
    view = PageView(config.display, size, config.base_dir)
    frames: list[float] = []
    words = 0
    try:
        while len(view.page.lines) <= view.visible_lines:   # a full page to begin with
            view.append(" the weights stay where they are", 0.0)
        start = time.monotonic()
        next_word = start
        while (now := time.monotonic()) - start < seconds:
            if (token := model.take()) is not None and now >= next_word:
                view.append(token.text, now)
                words += 1
                next_word = now + 1 / config.pacing.tokens_per_second
            began = time.perf_counter()
            view.draw(surface, now, 1.0)
            frames.append((time.perf_counter() - began) * 1000)
            time.sleep(max(0.0, 1 / config.display.fps - frames[-1] / 1000))
    finally:
        model.stop()
        pygame.quit()
    frames.sort()
    pick = lambda q: round(frames[min(len(frames) - 1, int(q * len(frames)))], 2)
    return {"size": f"{size[0]}x{size[1]}", "frames": len(frames), "tokens_shown": words,
            "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(frames[-1], 2)}


HUM_CHANNELS = (2, 4, 8)   # a pair, a ring of four, the largest ring


def measure_hum(config: Config) -> dict:
    """The fan tone at 1 and 7 bits, from an offline render on the configured speakers,
    and the hum's CPU (process time per second of sound) on 2, 4 and 8 of them."""
    from .audio_analysis import mono, peak_hz, read_wav, window
    from ..room.fans import semitones
    from ..room.hum_render import HumCommand, render_hum
    from ..room.preset import load_preset

    preset = load_preset(config.hum.preset, config.base_dir)
    settle = 6 * max(config.hum.spin_up_seconds, config.hum.spin_down_seconds) + 1.0
    length = 2 * settle
    cues = [HumCommand(0, "token", 1.0), HumCommand(settle, "token", 7.0)]
    cpu_by_channels, signal, rate = {}, None, config.audio.sample_rate
    with tempfile.TemporaryDirectory() as folder:
        for channels in sorted({*HUM_CHANNELS, config.audio.channels}):
            path = Path(folder) / f"bench-{channels}.wav"
            cpu = time.process_time()
            render_hum(preset, config.hum, cues, length, path, sample_rate=rate,
                       channels=channels, lead_speaker=config.audio.lead_speaker
                       if channels == config.audio.channels else None)
            cpu_by_channels[channels] = round((time.process_time() - cpu) / length, 4)
            if channels == config.audio.channels:
                samples, rate = read_wav(path)
                signal = mono(samples)
    targets = {bits: preset.lead_blade_pass_hz(preset.rpm_for_entropy(bits, config.hum))
               for bits in (1.0, 7.0)}
    found = {bits: peak_hz(window(signal, rate, end - 1.0, end), rate, f * 0.85, f * 1.15)
             for bits, f, end in ((1.0, targets[1.0], settle), (7.0, targets[7.0], length))}
    return {"preset": config.hum.preset, "channels": config.audio.channels,
            "blade_pass_hz_at_1_bit": round(found[1.0], 1),
            "blade_pass_hz_at_7_bits": round(found[7.0], 1),
            "semitones_1_to_7_bits": round(semitones(found[1.0], found[7.0]), 2),
            "cpu_share_of_one_core": cpu_by_channels[config.audio.channels],
            "cpu_share_by_channels": cpu_by_channels}


def measure_render(config: Config, seconds: float = 30.0) -> dict:
    """`permanent render` at 1280x720, 30 fps: seconds of piece per wall-clock second."""
    from ..render import render

    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        render(config, seconds, Path(folder), seed=0, progress=False)
        wall = time.monotonic() - started
    return {"seconds": seconds, "wall_seconds": round(wall, 1),
            "speed": round(seconds / wall, 2)}


def _family(pid: int) -> list[psutil.Process]:
    """A process and its descendants, the ones that have not exited."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    return [p for p in family if _running(p)]


def _running(process: psutil.Process) -> bool:
    try:   # a zombie has exited and only waits for its parent to read its status
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _peak_rss_mib(process: psutil.Process) -> float:
    """The most memory the process ever held resident. psutil reports only the current
    RSS, so on Linux this reads the kernel's high-water mark, VmHWM; elsewhere the
    current RSS is the best there is (a lower bound of the peak)."""
    try:
        with open(f"/proc/{process.pid}/status") as status:
            kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        return round(kib / 1024, 1)
    except (OSError, StopIteration):
        return round(process.memory_info().rss / 2**20, 1)


def _family_peak_rss(family: list[psutil.Process]) -> dict:
    """Peak resident memory of the piece's processes by role, in MiB."""
    peaks = {}
    for process in family:
        try:
            command = " ".join(process.cmdline())
            peak = _peak_rss_mib(process)
        except psutil.Error:   # it exited meanwhile
            continue
        role = "main" if process is family[0] else (
            "resource tracker" if "resource_tracker" in command else f"child {process.pid}")
        peaks[role] = peak
    return peaks


def _seconds_until_gone(family: list[psutil.Process], limit: float = 15.0) -> float:
    """From now until none of `family` runs any more (measured from outside, by PID)."""
    started = time.monotonic()
    while any(_running(p) for p in family) and time.monotonic() - started < limit:
        time.sleep(0.005)
    return round(time.monotonic() - started, 2)


def measure_startup(config: Config, config_path: Path | None, cold: bool,
                    seconds: float = 30.0, restart: bool = False) -> dict:
    """Launch the whole piece headless, read the timing events it writes (see `timings`),
    its processes' peak memory, then end it with SIGTERM, as XScreenSaver or systemd do,
    and time until every one of its processes is gone."""
    env = dict(os.environ, SDL_VIDEODRIVER=os.environ.get("SDL_VIDEODRIVER", "dummy"))
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as scratch:
        if cold:
            env["XDG_CACHE_HOME"] = cache   # an empty cache: the model is converted first
        timings = Path(scratch) / "timings.jsonl"
        env[TIMINGS_VARIABLE] = str(timings)
        # --duration only as a safety: the signal ends it.
        args = [sys.executable, "-m", "permanent", "--windowed", "--duration", str(seconds + 60)]
        if config_path is not None:
            args += ["--config", str(config_path)]
        piece = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        time.sleep(seconds)
        family = _family(piece.pid)
        peaks = _family_peak_rss(family)
        restarted = _kill_model_and_wait(timings) if restart else None
        piece.send_signal(signal.SIGTERM)
        gone = _seconds_until_gone(family)
        piece.wait(timeout=60)
        events = read_timings(timings)

    def seconds_of(name):   # the first such event, in seconds after launch
        found = first_event(events, name)
        return found["after_launch_s"] if found else None

    children = {k: v for k, v in peaks.items() if k.startswith("child")}
    roles = dict(zip(sorted(children, key=lambda k: -children[k]), ("model", "hum")))
    memory = {roles.get(k, k): v for k, v in peaks.items()}
    return {"cache": "cold" if cold else "warm", "exit_code": piece.returncode,
            "first_frame_seconds": seconds_of("first_frame"),
            "hum_seconds": seconds_of("hum_playing"),
            "first_token_seconds": seconds_of("first_token"),
            "silent": seconds_of("silent") is not None, "peak_rss_mib": memory,
            "total_peak_rss_mib": round(sum(peaks.values()), 1),
            "processes": len(family), "sigterm_to_gone_seconds": gone,
            "restart_seconds": restarted,
            "hum_fade_out_seconds": config.hum.fade_out_seconds}


def _kill_model_and_wait(timings: Path, limit: float = 60.0) -> dict | None:
    """Kill the model's process as a crash would; time until the restarted model is ready
    (the supervisor's backoff, 1 s after a first crash, included) and until its first
    token is shown (the cut page's fade and gap included: they are the pacing's)."""
    opened = first_event(read_timings(timings), "window_open")
    if opened is None:
        return None
    killed = time.monotonic()   # the events' clock: the system's monotonic one
    os.kill(opened["model_pid"], signal.SIGKILL)

    def seconds_to(name: str, events: list[dict]):
        found = first_event(events, name)
        return None if found is None else round(found["monotonic_s"] - killed, 2)

    while time.monotonic() - killed < limit:
        time.sleep(0.1)
        events = read_timings(timings)
        after = next((events[i + 1:] for i, e in enumerate(events)
                      if e["event"] == "model_restarted"), [])
        if (shown := seconds_to("first_token", after)) is not None:
            return {"ready": seconds_to("model_ready", after), "first_token": shown}
    return None


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send whatever is written to file descriptor 1 meanwhile to 2, by any library and
    from C as well (pyo prints its banners and messages there), and yield a stream on the
    real standard output for the one thing that belongs there."""
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)
    try:
        with open(os.dup(real), "w", closefd=True) as out:
            yield out
    finally:
        sys.stdout.flush()
        os.dup2(real, 1)
        os.close(real)


def report(measure: Callable[[dict], dict], show: Callable[[dict], None], as_json: bool,
           title: str = "permanent bench") -> int:
    """Describe the machine, `measure(machine)`, and print the results: as JSON alone on
    standard output, or with `show` under a heading that names the machine."""
    if as_json:   # standard output carries the JSON and nothing else
        with _stdout_to_stderr() as out:
            results = measure(describe_machine())
            out.write(json.dumps(results, indent=2) + "\n")
        return 0
    machine = describe_machine()
    print(f"{title}, {time.strftime('%Y-%m-%d')}, {machine_line(machine)}", flush=True)
    show(measure(machine))
    # Said again at the end, where a reader of the figures looks: which CPU, and whether
    # torch's kernels were its own or a simulation.
    print(f"  measured on       {machine_line(machine)}", flush=True)
    return 0


def run_bench(config: Config, config_path: Path | None = None, as_json: bool = False,
              cold: bool = True, variants: bool = False) -> int:
    """`permanent bench`: the standard set, and every way of running the model if asked."""
    return report(lambda machine: measure_all(config, config_path, cold, variants, machine),
                  lambda results: _print_results(results, config), as_json)


def run_alone(mode: str, config: Config, as_json: bool = False, **options) -> int:
    """`permanent bench anchor` or `bench shapes`: that measurement and nothing of the
    standard set. The anchor times the piece's loop itself, a pass each in turn with
    llama.cpp; the shapes time the loop on random weights of larger models."""
    from .anchor import measure_anchor
    from .shapes import measure_shapes

    measure, show = {"anchor": (measure_anchor, _print_anchor),
                     "shapes": (measure_shapes, _print_shapes)}[mode]
    return report(lambda machine: {"machine": machine, "date": time.strftime("%Y-%m-%d"),
                                   mode: measure(config, **options)},
                  lambda results: show(results[mode]), as_json, f"permanent bench {mode}")


def measure_all(config: Config, config_path: Path | None, cold: bool, variants: bool,
                machine: dict | None = None) -> dict:
    results = {"machine": machine or describe_machine(),   # first: which machine this is
               "date": time.strftime("%Y-%m-%d"),
               "generator": measure_generator(config),
               "display": measure_display(config),
               "hum": measure_hum(config),
               "render": measure_render(config),
               "startup": [measure_startup(config, config_path, cold=False, restart=True)]}
    if cold:
        # (the first launch converts the model, about half a minute on 2 cores)
        results["startup"].insert(0, measure_startup(config, config_path, cold=True,
                                                     seconds=60))
    if variants:
        results["variants"] = measure_variants(config)
    g = results["generator"]
    # The pace asks for at most tokens_per_second (pauses only lower it).
    # The screen needs shown tokens: drafts not chosen are part of the cost, not the speed.
    headroom = g["shown_tokens_per_second"] / config.pacing.tokens_per_second
    results["verdict"] = {"sustains_pacing": headroom >= 1.0, "headroom": round(headroom, 1)}
    return results


def _print_results(results: dict, config: Config) -> None:
    g = results["generator"]
    h, d, r = results["hum"], results["display"], results["render"]
    print(f"  model             {g['model']} on {g['device']}, {g['threads']} threads, "
          f"{g['runtime']}, loaded from cache in {g['load_seconds']} s")
    print(f"  generation        {g['tokens_per_second']} tokens/s streaming with entropy; "
          f"model.generate() on the same weights {g['generate_tokens_per_second']} "
          f"tokens/s; ratio "
          f"{g['ratio_to_generate']}; {g['cpu_seconds_per_token']} CPU s per token")
    if g["drafts"] > 1:
        print(f"  drafts            {g['drafts']} a {g['draft_by']}: "
              f"{g['tokens_written_per_token_shown']} tokens written per token shown, so "
              f"{g['shown_tokens_per_second']} shown tokens/s against the pacing's "
              f"{g['pacing_tokens_per_second']}")
    print(f"  display           {d['size']} full page, model generating: frame p50 "
          f"{d['p50_ms']} ms, p99 {d['p99_ms']} ms, max {d['max_ms']} ms ({d['frames']} frames)")
    print(f"  fan tone          {h['blade_pass_hz_at_1_bit']} Hz at 1 bit -> "
          f"{h['blade_pass_hz_at_7_bits']} Hz at 7 bits = {h['semitones_1_to_7_bits']} "
          f"semitones ({h['preset']})")
    by_channels = ", ".join(f"{n} channels {100 * share:.1f} %"
                            for n, share in h["cpu_share_by_channels"].items())
    print(f"  hum CPU           {100 * h['cpu_share_of_one_core']:.1f} % of one core on "
          f"{h['channels']} channels ({by_channels}; rendered offline)")
    print(f"  render            {r['speed']}x real time ({r['seconds']:.0f} s of piece in "
          f"{r['wall_seconds']} s, 1280x720 at 30 fps)")
    for s in results["startup"]:
        hum = "silent (no audio device)" if s["silent"] else f"{s['hum_seconds']} s"
        restart = s.get("restart_seconds")
        print(f"  launch, {s['cache']} cache  first frame {s['first_frame_seconds']} s, hum {hum}, "
              f"first token {s['first_token_seconds']} s")
        if restart:
            print(f"  model killed      ready again {restart['ready']} s later (1 s of it the "
                  f"backoff); its first token shown {restart['first_token']} s later (after "
                  f"the cut page's fade and gap)")
    memory = results["startup"][-1]
    print(f"  peak memory       {memory['total_peak_rss_mib']} MiB in all: " +
          ", ".join(f"{k} {v}" for k, v in memory["peak_rss_mib"].items()))
    worst = max(results["startup"], key=lambda s: s["sigterm_to_gone_seconds"])
    fade = "no hum to fade" if worst["silent"] else \
        f"the hum's fade-out is {worst['hum_fade_out_seconds']} s of it"
    print(f"  SIGTERM           all {worst['processes']} processes gone in "
          f"{worst['sigterm_to_gone_seconds']} s (worst of {len(results['startup'])}; {fade})")
    for row in results.get("variants", []):
        threads = f"{row['threads']} thread" + ("s" if row["threads"] != 1 else "")
        fell = f" [{row['fell_back']}]" if row["fell_back"] else ""
        print(f"  variant           {row['note']}, {threads}{fell}: "
              f"{row['tokens_per_second']} tokens/s, KL {row['kl_bits']} bits, "
              f"entropy moved {row['entropy_shift_bits']} bits")
    v = results["verdict"]
    print(f"  verdict           {'sustains' if v['sustains_pacing'] else 'does NOT sustain'} "
          f"{config.pacing.tokens_per_second} tokens/s, headroom x{v['headroom']}")


def _print_shapes(s: dict) -> None:
    for row in s["rows"]:
        print(f"  shape {row['shape']:<11} " + (row["error"] if "error" in row else
              f"{row['tokens_per_second']} tokens/s on {row['threads']} thread(s), peak "
              f"{row['peak_rss_mib']} MiB, loaded in {row['load_seconds']} s "
              f"({row['runtime']}, random weights)"))
        if "ratio" in row:
            print(f"    llama.cpp beside  {row['llama_cpp_tokens_per_second']} tokens/s on the "
                  f"same weights as GGUF, a pass each in turn, {row['rounds']} rounds; the "
                  f"loop / llama.cpp = {row['ratio']} (median; rounds "
                  f"{row['ratio_range'][0]}-{row['ratio_range'][1]})")
        elif row.get("llama_cpp"):
            print(f"    llama.cpp beside  {row['llama_cpp']}")
    print(f"  largest shape     sustaining {s['pacing_tokens_per_second']} tokens/s here: "
          f"{s['largest_sustaining_pacing'] or 'none'}")


def _print_anchor(anchor: dict) -> None:
    if "error" in anchor:
        print("  llama.cpp anchor  " + anchor["error"])
    for a in anchor.get("rows", []):
        _print_anchor_row(a)


def _print_anchor_row(a: dict) -> None:
    print("  llama.cpp anchor  " + (a["error"] if "error" in a else
          f"{a['tokens_per_second']} tokens/s against the loop's "
          f"{a['piece_tokens_per_second']}, a pass each in turn, {a['rounds']} rounds "
          f"({a['engine']}, the same GGUF{' and voice' if a['voice'] else ''}, "
          f"{a['threads']} thread{'s' if a['threads'] != 1 else ''}); the piece's loop / "
          f"llama.cpp = {a['ratio']} (median; rounds {a['ratio_range'][0]}-"
          f"{a['ratio_range'][1]})"))
