"""Hashed 8-word shingles: what the corpus check compares, so that the seed text it guards
against never has to be in the repository.

A shingle is a run of 8 words as the piece reads words (`reading.words`: lower-cased, the
punctuation dropped, curly apostrophes made straight), joined by single spaces; its hash is
the first 16 hex digits of the shingle's SHA-256.

Regenerate the tests' copy from the seed (next to this checkout, in ../shared/seed):

    python tests/shingles.py ../shared/seed/*.txt > tests/data/seed-shingles.txt
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from permanent.measure import reading

SHINGLE_WORDS = 8
HASH_HEX_DIGITS = 16   # 64 bits: no chance collision among a few thousand shingles


def shingle_hashes(text: str) -> set[str]:
    """The hashes of every 8-word run of `text`."""
    return {hashlib.sha256(" ".join(run).encode()).hexdigest()[:HASH_HEX_DIGITS]
            for run in reading.ngrams(reading.words(text), SHINGLE_WORDS)}


def read_hashes(path: Path) -> set[str]:
    """A file of hashes, one a line, as `main` writes it."""
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def main(paths: list[str]) -> None:
    hashes = set()
    for path in paths:
        hashes |= shingle_hashes(Path(path).read_text(encoding="utf-8"))
    sys.stdout.write("".join(f"{h}\n" for h in sorted(hashes)))


if __name__ == "__main__":
    main(sys.argv[1:])
