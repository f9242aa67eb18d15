"""A screen turned, on a real X server: the piece fullscreen on Xvfb on its side both
ways, and the screensaver on the root window upside down, read from screenshots. (Every
angle, pixel for pixel and offscreen, is in test_rotation.py.)"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pygame
import pytest

from permanent.config import DisplayConfig
from permanent.screen.display import PageView

from test_live_paths import screenshot
from test_piece import Running
from test_rotation import runs_along

pytestmark = pytest.mark.slow

# Tokens quickly, no pauses, and a page that stays: a full screen within seconds.
QUICK_PAGE = """\
text:
  min_tokens: 80
  max_tokens: 120
  seed: 7
pacing:
  tokens_per_second: 30
  jitter: 0
  comma_pause_seconds: 0
  sentence_pause_seconds: 0
  line_break_pause_seconds: 0
  uncertainty_pause_seconds_per_bit: 0
  hold_seconds: 30
display:
  rotation: {rotation}
"""
SCREEN = (1280, 720)   # the Xvfb screen, as the graphics card drives a landscape panel


def layout(rotation: int):
    """The page the piece sets on this screen at this rotation (offscreen, same code)."""
    pygame.font.init()
    return PageView(dataclasses.replace(DisplayConfig(), rotation=rotation), SCREEN)


def shoot(env, tmp_path, rotation: int, *args) -> np.ndarray:
    config = tmp_path / f"rotation-{rotation}.yaml"
    config.write_text(QUICK_PAGE.format(rotation=rotation))
    piece = Running(env, *args, "--config", str(config), on_screen=True)
    try:
        piece.wait_for(r"first token shown")
        # 40 tokens, or the whole first pass where the model ends it sooner: it then holds.
        deadline = time.monotonic() + 30
        while (piece.count(r"shown '") < 40 and not piece.count(r"pass \d+ ended")
               and time.monotonic() < deadline):
            time.sleep(0.1)
        time.sleep(0.3)
        pixels = screenshot(env, tmp_path / f"rot-{rotation}{'-saver' if args else ''}.png")
        assert piece.terminate() < 2.0 and piece.process.returncode == 0, piece.log
        return pixels
    finally:
        piece.kill()


@pytest.fixture()
def sight_only(xvfb_env):
    return dict(xvfb_env, PULSE_SERVER="unix:/nonexistent/socket")


def assert_turned(pixels: np.ndarray, rotation: int) -> None:
    assert pixels.shape[:2] == (SCREEN[1], SCREEN[0])
    mask = np.any(pixels > 0, axis=2)
    assert mask.sum() > 3000, "no text on the screen"
    view = layout(rotation)
    # The lines run along the visitor's horizontal: the screen's y on its side.
    expected = "y" if rotation in (90, 270) else "x"
    assert runs_along(mask, wide=view.line_height // 4) == expected
    ys, xs = np.nonzero(mask)
    # Reading begins at the turned page's top-left corner, wherever the window has it:
    # the ink starts a margin in from the two screen edges that corner touches.
    first = {0: (ys.min(), xs.min()), 90: (SCREEN[1] - 1 - ys.max(), xs.min()),
             180: (SCREEN[1] - 1 - ys.max(), SCREEN[0] - 1 - xs.max()),
             270: (ys.min(), SCREEN[0] - 1 - xs.max())}[rotation]
    assert all(abs(edge - view.margin) < view.margin for edge in first), \
        (rotation, first, view.margin)


@pytest.mark.parametrize("rotation", [90, 270])
def test_the_window_on_x_draws_the_page_on_its_side(sight_only, embedded_model, tmp_path,
                                                    rotation):
    assert_turned(shoot(sight_only, tmp_path, rotation), rotation)


def test_the_screensaver_on_the_root_window_is_turned_too(sight_only, embedded_model, tmp_path):
    assert_turned(shoot(sight_only, tmp_path, 180, "screensaver", "--root"), 180)
