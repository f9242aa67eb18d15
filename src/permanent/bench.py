"""`permanent bench`: what this machine does with the piece, measured.

Each figure comes from the real code path: the generator's own streaming loop on the
configured model, the hum graph rendered offline and measured, and the whole program
launched as a child process (with a cold and a warm model cache).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .config import Config


def measure_generator(config: Config, passes: int = 2) -> dict:
    from .generator import load_generator
    from .model_store import ensure_converted, resolve

    source = resolve(config.model, config.base_dir)
    ensure_converted(source)
    started = time.monotonic()
    generator = load_generator(source, config.model, config.text)
    loaded = time.monotonic() - started
    tokens, seconds, cpu = 0, 0.0, 0.0
    for pass_id in range(passes):
        wall, process = time.monotonic(), time.process_time()
        tokens += sum(1 for _ in generator.write_pass(pass_id))
        seconds += time.monotonic() - wall
        cpu += time.process_time() - process
    return {"model": generator.label, "device": str(generator.device),
            "load_seconds": round(loaded, 2), "tokens": tokens,
            "tokens_per_second": round(tokens / seconds, 1),
            "cpu_seconds_per_token": round(cpu / tokens, 4)}


def measure_hum(config: Config) -> dict:
    from .audio_analysis import mono, peak_hz, read_wav, window
    from .fans import semitones
    from .hum_render import Cue, render_hum
    from .preset import load_preset

    preset = load_preset(config.hum.preset, config.base_dir)
    settle = 6 * max(config.hum.spin_up_seconds, config.hum.spin_down_seconds) + 1.0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.wav"
        length = 2 * settle
        cpu = time.process_time()
        render_hum(preset, config.hum, [Cue(0, "token", 1.0), Cue(settle, "token", 7.0)],
                   length, path, sample_rate=config.audio.sample_rate)
        cpu = time.process_time() - cpu
        samples, rate = read_wav(path)
    signal = mono(samples)
    targets = {bits: preset.lead_blade_pass_hz(preset.rpm_for_entropy(bits, config.hum))
               for bits in (1.0, 7.0)}
    found = {bits: peak_hz(window(signal, rate, end - 1.0, end), rate, f * 0.85, f * 1.15)
             for bits, f, end in ((1.0, targets[1.0], settle), (7.0, targets[7.0], length))}
    return {"preset": config.hum.preset,
            "blade_pass_hz_at_1_bit": round(found[1.0], 1),
            "blade_pass_hz_at_7_bits": round(found[7.0], 1),
            "semitones_1_to_7_bits": round(semitones(found[1.0], found[7.0]), 2),
            "cpu_share_of_one_core": round(cpu / length, 4)}


def measure_render(config: Config, seconds: float = 30.0) -> dict:
    """`permanent render` at 1280x720, 30 fps: seconds of piece per wall-clock second."""
    from .render import render

    with tempfile.TemporaryDirectory() as folder:
        started = time.monotonic()
        render(config, seconds, Path(folder), seed=0, progress=False)
        wall = time.monotonic() - started
    return {"seconds": seconds, "wall_seconds": round(wall, 1),
            "speed": round(seconds / wall, 2)}


def measure_startup(config_path: Path | None, cold: bool, seconds: float = 40.0) -> dict:
    """Launch the whole piece headless and read its own timings from its log."""
    env = dict(os.environ, SDL_VIDEODRIVER=os.environ.get("SDL_VIDEODRIVER", "dummy"))
    with tempfile.TemporaryDirectory() as cache:
        if cold:
            env["XDG_CACHE_HOME"] = cache   # an empty cache: the model is converted first
        args = [sys.executable, "-m", "permanent", "--windowed", "--duration", str(seconds)]
        if config_path is not None:
            args += ["--config", str(config_path)]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=seconds + 60)
    log = done.stderr

    def seconds_of(pattern):
        found = re.search(pattern + r".*?([\d.]+) s after launch", log)
        return float(found[1]) if found else None

    return {"cache": "cold" if cold else "warm", "exit_code": done.returncode,
            "hum_seconds": seconds_of(r"hum playing"),
            "first_token_seconds": seconds_of(r"first token shown"),
            "silent": "runs silently" in log}


def run_bench(config: Config, config_path: Path | None = None, as_json: bool = False,
              cold: bool = True) -> int:
    results = {"machine": f"{os.cpu_count()} cores, {sys.platform}",
               "date": time.strftime("%Y-%m-%d"),
               "generator": measure_generator(config),
               "hum": measure_hum(config),
               "render": measure_render(config),
               "startup": [measure_startup(config_path, cold=False)]}
    if cold:
        results["startup"].insert(0, measure_startup(config_path, cold=True))
    if as_json:
        print(json.dumps(results, indent=2))
        return 0
    g, h = results["generator"], results["hum"]
    print(f"permanent bench, {results['date']}, {results['machine']}")
    print(f"  model             {g['model']} on {g['device']}, loaded from cache in "
          f"{g['load_seconds']} s")
    print(f"  generation        {g['tokens_per_second']} tokens/s "
          f"({g['cpu_seconds_per_token']} CPU s per token, {g['tokens']} tokens)")
    print(f"  fan tone          {h['blade_pass_hz_at_1_bit']} Hz at 1 bit -> "
          f"{h['blade_pass_hz_at_7_bits']} Hz at 7 bits = {h['semitones_1_to_7_bits']} "
          f"semitones ({h['preset']})")
    print(f"  hum CPU           {100 * h['cpu_share_of_one_core']:.1f} % of one core")
    r = results["render"]
    print(f"  render            {r['speed']}x real time ({r['seconds']:.0f} s of piece in "
          f"{r['wall_seconds']} s, 1280x720 at 30 fps)")
    for s in results["startup"]:
        hum = "silent (no audio device)" if s["silent"] else f"{s['hum_seconds']} s"
        print(f"  launch, {s['cache']} cache  hum {hum}, first token {s['first_token_seconds']} s")
    return 0
