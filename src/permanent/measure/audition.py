"""`permanent audition`: the voice on trial, before an opening.

Writes consecutive passes, as the piece would from the same seed, as fast as the model can
(no pacing, no window, no hum), prints each whole, then what they add up to: whose voice,
which subjects, how many ways they begin, how repetitive, how close to the voice's training
texts, how far their entropy would move the lead fan, and with drafts on, the score of each
chosen draft and what the drafts cost. `--drafts` prints the drafts that were not chosen
beside the one that was. `--compare` runs two configs from the same seed, side by side.
The numbers screen; reading decides.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import Counter
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import Config
from . import reading


@dataclass
class AuditionedPass:
    number: int
    text: str
    entropy_bits: list[float]
    reading: reading.PassReading
    theme: str = ""
    # per draft of the pass: (text, score, chosen) of every try; empty with one draft
    drafts: list = field(default_factory=list)

    @property
    def opening(self) -> str:
        """Its first four words, as a visitor would recognise a pass begun before."""
        return " ".join(reading.words(self.text)[:4])

    @property
    def score(self) -> Optional[float]:
        """The mean score of its chosen drafts, None with one draft."""
        chosen = [score for tries in self.drafts for _, score, picked in tries if picked]
        return round(statistics.fmean(chosen), 2) if chosen else None


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def write_passes(config: Config, passes: int, seed: int) -> tuple[list[AuditionedPass], dict]:
    """`passes` consecutive passes from `seed`, as the piece writes them: the same seed
    gives the same passes."""
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
    shown_before = getattr(generator, "tokens_shown", 0)
    for i in range(passes):
        before, t0 = generator.tokens_sampled, time.monotonic()
        events = list(generator.write_pass(i))
        if getattr(generator, "fault", None) is not None:
            raise generator.fault
        seconds += time.monotonic() - t0
        tokens += generator.tokens_sampled - before
        text = "".join(e.text for e in events)
        written.append(AuditionedPass(i + 1, text, [e.entropy_bits for e in events],
                                      reading.read_pass(text, runs,
                                                        getattr(generator, "opening", "")),
                                      getattr(generator, "theme", ""),
                                      list(getattr(generator, "drafts_written", []))))
        print(f"  pass {i + 1}/{passes} written", file=sys.stderr, flush=True)
    shown = getattr(generator, "tokens_shown", shown_before + tokens) - shown_before
    return written, {"model": generator.label, "runtime": generator.runtime,
                     "load_seconds": round(loaded, 2),
                     "tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0,
                     "drafts": config.text.drafts, "draft_by": config.text.draft_by,
                     "sampled_per_shown": round(tokens / shown, 2) if shown else 0.0,
                     "shown_tokens_per_second": round(shown / seconds, 1) if seconds else 0.0}


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
        "distinct_openings": len({p.opening for p in written}),
        "themes": dict(sorted(Counter(p.theme for p in written if p.theme).items())),
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
    drafts = (f"; {speed['drafts']} drafts a {speed['draft_by']}: {speed['sampled_per_shown']} "
              f"tokens written per token shown, {speed['shown_tokens_per_second']} shown/s"
              if speed["drafts"] > 1 else "")
    themes = ", ".join(f"{theme} {n}" for theme, n in summary["themes"].items())
    return [
        f"model: {speed['model']} ({speed['runtime']}), {speed['tokens_per_second']} "
        f"tokens/s{drafts}",
        f"openings: {summary['distinct_openings']} different first four words in "
        f"{summary['passes']} passes" + (f"; themes: {themes}" if themes else ""),
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


def _pass_heading(p: AuditionedPass) -> str:
    verdict = "passes the screen" if p.reading.holds else "; ".join(p.reading.problems)
    about = f", {p.theme}" if p.theme else ""
    score = f", draft score {p.score}" if p.score is not None else ""
    return f"pass {p.number}{about}{score}: {verdict}"


def _drafts_block(p: AuditionedPass) -> str:
    """Each draft point: the chosen try marked *, the others beside it, with their scores."""
    lines = []
    for point, tries in enumerate(p.drafts, 1):
        lines.append(f"  draft {point}:")
        lines += [f"   {'*' if chosen else ' '} {score:7.1f}  {text.strip()}"
                  for text, score, chosen in tries]
    return "\n".join(lines) + "\n" if lines else ""


def _pass_block(p: AuditionedPass, drafts: bool) -> str:
    return f"--- {_pass_heading(p)}\n{p.text}\n" + (_drafts_block(p) if drafts else "")


def run_audition(configs: list[tuple[str, Config]], passes: int, seed: int, as_json: bool,
                 markdown: Optional[Path], drafts: bool = False) -> int:
    results = []
    for name, config in configs:
        print(f"auditioning {name}: {passes} passes from seed {seed}", file=sys.stderr)
        written, speed = write_passes(config, passes, seed)
        results.append((name, written, speed, summarize(written, config)))
    if as_json:
        print(json.dumps([{"config": name, **speed, "summary": summary,
                           "passes": [{"number": p.number, "text": p.text, "theme": p.theme,
                                       "opening": p.opening, "score": p.score,
                                       "drafts": p.drafts,
                                       "entropy_bits": [round(b, 3) for b in p.entropy_bits],
                                       "reading": asdict(p.reading) | {"holds": p.reading.holds}}
                                      for p in written]}
                          for name, written, speed, summary in results], indent=1))
        return 0
    out = []
    for name, written, speed, summary in results:
        out.append(f"=== {name}")
        out.extend(_pass_block(p, drafts) for p in written)
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
        for p in written:
            lines += [f"### {_pass_heading(p).capitalize()}", "", p.text, ""]
    lines += ["## What is counted", "", "```", _word_lists(), "```", ""]
    return "\n".join(lines)
