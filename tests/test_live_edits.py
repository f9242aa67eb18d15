"""Broken edits saved into config.yaml while the piece runs in a window: each is ignored
with one line, and the piece goes on writing on the last good settings."""

from __future__ import annotations

import re
import time

import pytest

from permanent.care.config_watch import ConfigWatcher
from permanent.config import load_config
from permanent.errors import PermanentError

from config_mutations import mutations
from conftest import REPO
from test_piece import Running

pytestmark = pytest.mark.slow

LIVE_EDITS = 50
POLL_SECONDS = ConfigWatcher.POLL_SECONDS
IGNORED = r"config edit ignored, still running on the last good settings"


def refused_mutations(text: str, count: int, scratch) -> list[bytes]:
    """The first `count` mutations of the seeded stream that the loader refuses: the
    edits that once stopped the piece."""
    picked = []
    probe = scratch / "probe.yaml"
    for data in mutations(text, 20 * count, seed=23):
        probe.write_bytes(data)
        try:
            load_config(probe)
        except PermanentError:
            picked.append(data)
            if len(picked) == count:
                break
    return picked


def test_broken_edits_saved_live_never_stop_the_writing(xvfb_env, tiny_model, tmp_path):
    # The shipped file, on the small model and a quick pace, so each edit meets a pass.
    good = (REPO / "config.yaml").read_text(encoding="utf-8")
    good = good.replace("name: embedded ", f"name: {tiny_model} ", 1)
    good = re.sub(r"tokens_per_second: 4\.5 ", "tokens_per_second: 12 ", good, count=1)
    for key in ("hold_seconds", "fade_seconds", "gap_seconds"):
        good = re.sub(rf"({key}:) \d+ ", r"\1 0.5 ", good, count=1)
    assert f"name: {tiny_model}" in good and "tokens_per_second: 12" in good
    edits = refused_mutations(good, LIVE_EDITS, tmp_path)
    assert len(edits) == LIVE_EDITS
    config = tmp_path / "config.yaml"
    config.write_text(good, encoding="utf-8")
    env = dict(xvfb_env, PULSE_SERVER="unix:/nonexistent/socket")   # sight only
    piece = Running(env, "--windowed", "--config", str(config), on_screen=True)
    try:
        piece.wait_for(r"first token shown")
        for number, data in enumerate(edits, 1):
            config.write_bytes(data)
            # Each edit is read, and refused, before the next is saved.
            deadline = time.monotonic() + POLL_SECONDS + 5.0
            while piece.count(IGNORED) < number:
                assert piece.process.poll() is None, piece.log
                assert time.monotonic() < deadline, (number, data[:200], piece.log[-2000:])
                time.sleep(0.02)
        ignored = piece.count(IGNORED)
        shown_before = piece.count(r"shown '")
        time.sleep(3)
        assert piece.process.poll() is None, piece.log
        assert piece.count(r"shown '") > shown_before, "the piece stopped writing"
        assert piece.count("Traceback") == 0, piece.log
        written = piece.count(r"shown '")
        print(f"{LIVE_EDITS} broken edits saved live, {ignored} logged as ignored; the "
              f"piece wrote {written} tokens in all")
        assert piece.count("new settings in effect") == 0   # none silently accepted
        assert piece.terminate() < 2.0 and piece.process.returncode == 0, piece.log
    finally:
        piece.kill()
