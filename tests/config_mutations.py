"""Seeded mutations of a config file: the edits a person at a gallery machine, a full disk
or a bad copy can make. Each is bytes, since not every edit leaves valid UTF-8."""

from __future__ import annotations

import random
import re

_VALUES = ["[1, 2]", "{a: 1}", '"text"', "42", "-1", "3.5", "true", "null", "~", "", "''",
           "[]", "{}", "- x", "yes", "0", "abc", "[[[]]]", '"\\u0000"', "'unterminated"]
_TAGS = ["!!int", "!!float", "!!str", "!!bool", "!!binary", "!!timestamp", "!!set", "!!omap",
         "!!pairs", "!!null", "!!map", "!!seq", "!foo", "!<tag:x,2000:y>",
         "!!python/object/apply:os.system", "!!python/name:os.system",
         "!!python/module:os", "!!merge"]
_NUMBERS = ["1e308", "-1e308", "1e400", "-1e400", ".inf", "-.inf", ".nan", "9" * 5000,
            "-" + "9" * 5000, "-999999999999", "0x7fffffffffffffff", "0o777", "1_000",
            "0b101", "1:30", "2001-12-14", "-0", "+5", "1e-400", "99999999999999999999.5"]
_UNICODE = ["é", "ü", "🌀", "\u200b", "\u202e", "\ufeff", "ﬁ", "\u0301", "日本", "\u2028",
            "\x85", "\u00a0", "Ω"]
_JUNK = [b"\x00", b"\xff", b"\xfe\xff", b"\x80", b"\x1b[31m", b"\x07", b"\r", b"\x0c",
         b"\xc3", b"\xed\xa0\x80", b"\t"]
_SNIPPETS = ["a: &a [x]\nb: [*a, *a]\n", "x: *undefined\n", "<<: {a: 1}\n",
             "lol: &l [z, z, z, z, z, z, z, z, z]\nlol2: &l2 [*l, *l, *l, *l, *l, *l, *l]\n"
             "lol3: &l3 [*l2, *l2, *l2, *l2, *l2, *l2, *l2]\n"
             "lol4: &l4 [*l3, *l3, *l3, *l3, *l3, *l3, *l3]\n"
             "lol5: [*l4, *l4, *l4, *l4, *l4, *l4, *l4]\n",
             "--- \n", "...\n", "%YAML 1.1\n---\n", "? [a, b]\n: c\n", "&r [*r]\n"]
_SETTING = re.compile(r"^(\s*[A-Za-z_]+:)(\s+)([^#\n]*?)(\s*(#.*)?)$")


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _setting_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if _SETTING.match(line) and
            _SETTING.match(line)[3].strip()]


def _replace_value(lines, rng, make) -> None:
    settings = _setting_lines(lines)
    if settings:
        i = rng.choice(settings)
        m = _SETTING.match(lines[i])
        lines[i] = f"{m[1]}{m[2]}{make(m[3])}{m[4]}"


def _text_mutation(text: str, rng: random.Random) -> str:
    lines = _lines(text)
    kind = rng.randrange(12)
    i = rng.randrange(len(lines))
    if kind == 0:
        del lines[i]
    elif kind == 1:
        lines.insert(i, lines[i])
    elif kind == 2:
        _replace_value(lines, rng, lambda old: rng.choice(_VALUES))
    elif kind == 3:
        _replace_value(lines, rng, lambda old: f"{rng.choice(_TAGS)} {old}")
    elif kind == 4:
        _replace_value(lines, rng, lambda old: rng.choice(_NUMBERS))
    elif kind == 5:
        line = lines[i]
        at = rng.randrange(len(line) + 1)
        lines[i] = line[:at] + rng.choice(_UNICODE) + line[at:]
    elif kind == 6:
        lines[i] = "\t" + lines[i].lstrip(" ") if rng.random() < 0.5 else \
            lines[i].replace(" ", "\t", 1)
    elif kind == 7:
        lines[i] = " " * rng.choice([1, 2, 3, 4]) + lines[i] if rng.random() < 0.5 else \
            lines[i][rng.choice([1, 2]):]
    elif kind == 8:
        lines.insert(i, rng.choice(_SNIPPETS).rstrip("\n"))
    elif kind == 9:
        _replace_value(lines, rng, lambda old: f"&anchor{i} {old}")
        _replace_value(lines, rng, lambda old: f"*anchor{i}")
    elif kind == 10:
        lines[i] = lines[i].replace(":", "", 1) if rng.random() < 0.5 else lines[i] + ":"
    else:
        _replace_value(lines, rng, lambda old: old * rng.choice([2, 50]))
    return "\n".join(lines)


def mutations(text: str, count: int, seed: int):
    """`count` mutated copies of `text` as bytes, the same ones for the same seed: one to
    three text edits each, and sometimes a cut or bytes that are not text at all."""
    rng = random.Random(seed)
    for _ in range(count):
        mutated = text
        for _ in range(rng.choice([1, 1, 2, 3])):
            mutated = _text_mutation(mutated, rng)
        data = mutated.encode("utf-8", "surrogatepass")
        if rng.random() < 0.1:
            data = data[:rng.randrange(len(data) + 1)]        # a save cut short
        if rng.random() < 0.1:
            at = rng.randrange(len(data) + 1)
            data = data[:at] + rng.choice(_JUNK) + data[at:]  # bytes that are not text
        yield data
