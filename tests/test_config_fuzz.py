"""Thousands of broken edits of the shipped config.yaml: each loads, or is refused with the
line to fix. Nothing else: no traceback, no hang."""

from __future__ import annotations

import re
import time

from permanent.config import load_config
from permanent.errors import PermanentError

from config_mutations import mutations
from conftest import REPO

MUTATIONS = 2400
SEED = 22


def test_every_mutation_of_the_shipped_config_loads_or_names_its_line(tmp_path):
    path = tmp_path / "config.yaml"
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    loaded = refused = 0
    for number, data in enumerate(mutations(text, MUTATIONS, SEED)):
        path.write_bytes(data)
        started = time.monotonic()
        try:
            load_config(path)
            loaded += 1
        except PermanentError as e:
            assert re.search(rf"{re.escape(str(path))}, line \d+: ", str(e)), \
                f"mutation {number} was refused without a line: {e}"
            refused += 1
        seconds = time.monotonic() - started
        assert seconds < 1.0, f"mutation {number} took {seconds:.2f} s to load"
    print(f"{MUTATIONS} mutations (seed {SEED}): {loaded} loaded, {refused} refused with a "
          "line, 0 otherwise")
    assert loaded + refused == MUTATIONS
    # The mutations are not all harmless, nor all fatal: both paths are exercised.
    assert loaded > MUTATIONS // 20 and refused > MUTATIONS // 2
