"""`permanent audition`: the voice on trial, before an opening.

Writes passes as fast as the model can (no pacing, no window, no hum), prints each whole,
then what they add up to: whose voice, which subjects, how repetitive, how close to the
voice's training texts, and how far their entropy would move the lead fan. `--compare`
runs two configs on the same seeds, side by side. The numbers screen; reading decides.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import Config
from . import reading


@dataclass
class AuditionedPass:
    seed: int
    text: str
    entropy_bits: list[float]
    reading: reading.PassReading


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def write_passes(config: Config, passes: int, seed: int) -> tuple[list[AuditionedPass], dict]:
    """`passes` passes with seeds seed, seed+1, ...: each pass is reproducible alone."""
    import dataclasses

    from ..model.local.generator import load_generator
    from ..model.local.store import ensure_converted, progress_log, resolve
    from ..model.voice.adapter import voice_corpus

    source = resolve(config.model, config.base_dir)
    ensure_converted(source, log=progress_log)
    started = time.monotonic()
    first = dataclasses.replace(config.text, seed=seed)
    if config.model.server_url:   # the server's passes, read the same way
        from ..model.server.generator import ServerGenerator
        generator = ServerGenerator(config.model, first)
        generator.probe()
    else:
        generator = load_generator(source, config.model, first, config.base_dir)
    loaded = time.monotonic() - started
    runs = reading.corpus_runs(voice_corpus(config.text, config.base_dir, source.embedded))
    written, tokens, seconds = [], 0, 0.0
    for i in range(passes):
        generator.update_text(dataclasses.replace(config.text, seed=seed + i))
        before, t0 = generator.tokens_sampled, time.monotonic()
        events = list(generator.write_pass(i))
        if getattr(generator, "fault", None) is not None:
            raise generator.fault
        seconds += time.monotonic() - t0
        tokens += generator.tokens_sampled - before
        text = "".join(e.text for e in events)
        written.append(AuditionedPass(seed + i, text, [e.entropy_bits for e in events],
                                      reading.read_pass(text, runs)))
        print(f"  pass {i + 1}/{passes} written", file=sys.stderr, flush=True)
    return written, {"model": generator.label, "runtime": generator.runtime,
                     "load_seconds": round(loaded, 2),
                     "tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0}


def summarize(written: list[AuditionedPass], config: Config) -> dict:
    from ..room.fans import semitones
    from ..room.preset import load_preset

    preset = load_preset(config.hum.preset, config.base_dir)
    lead_hz = lambda bits: preset.lead_blade_pass_hz(preset.rpm_for_entropy(bits, config.hum))
    per_pass = []
    for p in written:
        p10, p50, p90 = (_percentile(p.entropy_bits, q) for q in (10, 50, 90))
        per_pass.append({"p10": p10, "p50": p50, "p90": p90,
                         "fan_semitones": semitones(lead_hz(p10), lead_hz(p90))})
    r = [p.reading for p in written]
    total_words = sum(x.words for x in r) or 1
    total_sentences = sum(x.sentences for x in r) or 1
    all_bits = [b for p in written for b in p.entropy_bits]
    median = lambda key: statistics.median(x[key] for x in per_pass) if per_pass else 0.0
    return {
        "passes": len(written),
        "passes_passing_the_screen": sum(x.holds for x in r),
        "first_person_sentence_share": round(sum(x.first_person_sentences for x in r)
                                             / total_sentences, 3),
        "passes_addressing_someone": sum(bool(x.second_person_words) for x in r),
        "passes_telling_a_story": sum(bool(x.third_person_words) for x in r),
        "theme_word_rate": round(sum(x.theme_words for x in r) / total_words, 3),
        "off_theme_word_rate": round(sum(len(x.off_theme_words) for x in r) / total_words, 4),
        "repeated_4grams_per_pass": round(sum(x.repeated_4grams for x in r) / max(1, len(r)), 2),
        "recited_share": round(sum(x.recited for x in r) / max(1, len(r)), 3),
        "entropy_bits": {q: round(_percentile(all_bits, int(q[1:])), 2)
                         for q in ("p10", "p50", "p90")},
        "median_pass_entropy_bits": {q: round(median(q), 2) for q in ("p10", "p50", "p90")},
        "median_pass_fan_semitones": round(median("fan_semitones"), 2),
    }


def _word_lists() -> str:
    show = lambda words: ", ".join(sorted(words))
    return (f"theme words: {show(reading.THEME_WORDS)}\n"
            f"off-theme words: {show(reading.OFF_THEME_WORDS)}\n"
            f"second person: {show(reading.SECOND_PERSON)}\n"
            f"third-person story: {show(reading.THIRD_PERSON)}\n"
            f"recited: a run of {reading.RECITATION_WORDS} words found verbatim in the "
            "voice's corpus")


def _summary_lines(summary: dict, speed: dict) -> list[str]:
    e, m = summary["entropy_bits"], summary["median_pass_entropy_bits"]
    return [
        f"model: {speed['model']} ({speed['runtime']}), {speed['tokens_per_second']} tokens/s",
        f"passes passing the automatic screen: {summary['passes_passing_the_screen']} of "
        f"{summary['passes']} (then read them: the screen cannot tell sense from nonsense)",
        f"first-person sentences: {summary['first_person_sentence_share']:.0%}",
        f"passes addressing someone: {summary['passes_addressing_someone']}; telling a story "
        f"about someone: {summary['passes_telling_a_story']}",
        f"theme words: {summary['theme_word_rate']:.1%} of words; off-theme: "
        f"{summary['off_theme_word_rate']:.2%}",
        f"repeated 4-word runs per pass: {summary['repeated_4grams_per_pass']}",
        f"passes reciting the corpus: {summary['recited_share']:.0%}",
        f"entropy, all tokens: p10 {e['p10']} / p50 {e['p50']} / p90 {e['p90']} bits; per pass "
        f"(median): {m['p10']} / {m['p50']} / {m['p90']}",
        f"lead fan moves {summary['median_pass_fan_semitones']} semitones between a typical "
        "pass's p10 and p90 tokens",
    ]


def _pass_block(i: int, p: AuditionedPass) -> str:
    verdict = "passes the screen" if p.reading.holds else "; ".join(p.reading.problems)
    return f"--- pass {i + 1} (seed {p.seed}): {verdict}\n{p.text}\n"


def run_audition(configs: list[tuple[str, Config]], passes: int, seed: int, as_json: bool,
                 markdown: Optional[Path]) -> int:
    results = []
    for name, config in configs:
        print(f"auditioning {name}: {passes} passes from seed {seed}", file=sys.stderr)
        written, speed = write_passes(config, passes, seed)
        results.append((name, written, speed, summarize(written, config)))
    if as_json:
        print(json.dumps([{"config": name, **speed, "summary": summary,
                           "passes": [{"seed": p.seed, "text": p.text,
                                       "entropy_bits": [round(b, 3) for b in p.entropy_bits],
                                       "reading": asdict(p.reading) | {"holds": p.reading.holds}}
                                      for p in written]}
                          for name, written, speed, summary in results], indent=1))
        return 0
    out = []
    for name, written, speed, summary in results:
        out.append(f"=== {name}")
        out.extend(_pass_block(i, p) for i, p in enumerate(written))
    for name, written, speed, summary in results:
        out.append(f"=== summary: {name}")
        out.extend(_summary_lines(summary, speed))
        out.append("")
    out.append("What is counted:\n" + _word_lists())
    text = "\n".join(out)
    print(text)
    if markdown is not None:
        markdown.write_text(_markdown(results))
        print(f"\nwritten to {markdown}", file=sys.stderr)
    return 0


def _markdown(results) -> str:
    lines = ["# Audition", ""]
    for name, written, speed, summary in results:
        lines += [f"## {name}", ""]
        lines += [f"- {line}" for line in _summary_lines(summary, speed)] + [""]
        for i, p in enumerate(written):
            verdict = "passes the screen" if p.reading.holds else "; ".join(p.reading.problems)
            lines += [f"### Pass {i + 1} (seed {p.seed}): {verdict}", "", p.text, ""]
    lines += ["## What is counted", "", "```", _word_lists(), "```", ""]
    return "\n".join(lines)
