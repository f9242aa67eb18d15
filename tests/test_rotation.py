"""A screen on its side: `display.rotation`, read from the pixels the page draws, for
each of the four angles, offscreen (the same drawing as the live window's)."""

import dataclasses

import numpy as np
import pygame
import pytest

from permanent.config import DisplayConfig
from permanent.screen.display import PageView, page_size

PORTRAIT = (720, 1280)      # a window taller than it is wide
SETTINGS = DisplayConfig(background_colour=(0, 0, 0), text_colour=(220, 210, 200),
                         scroll_seconds=0.5)
WORDS = ("The fans push warm air across the boards and the weights stay where they are "
         "while this pass runs on and on. ").split(" ") * 4
ANGLES = (0, 90, 180, 270)


@pytest.fixture(autouse=True)
def offscreen():
    pygame.display.init()
    pygame.font.init()
    yield
    pygame.quit()


def lit(surface) -> np.ndarray:
    """Which pixels differ from the background, indexed [y, x]."""
    pixels = pygame.surfarray.array3d(surface).transpose(1, 0, 2)
    return np.any(pixels != np.array(SETTINGS.background_colour), axis=2)


def turned(rotation: int) -> DisplayConfig:
    return dataclasses.replace(SETTINGS, rotation=rotation)


def written(view: PageView, words) -> PageView:
    for word in words:
        view.append(word + " ", now=0.0)
    return view


def runs_along(mask: np.ndarray, wide: int) -> str:
    """Which way the lines of text run. Across them, ink comes in bands parted by the
    line spacing, dark gaps `wide` pixels or more; along them the gaps between letters
    of a monospaced face line up too, but are narrower."""
    def wide_gaps(profile):
        dark = np.concatenate([[False], profile == 0, [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(dark))
        return int(np.count_nonzero(edges[1::2] - edges[::2] >= wide))
    rows, columns = wide_gaps(mask.sum(axis=1)), wide_gaps(mask.sum(axis=0))
    assert max(rows, columns) >= 3, (rows, columns)
    return "x" if rows > columns else "y"


@pytest.mark.parametrize("rotation", ANGLES)
def test_the_text_runs_along_the_long_side_when_the_screen_is_on_its_side(rotation):
    view = written(PageView(turned(rotation), PORTRAIT), WORDS[:60])
    surface = pygame.Surface(PORTRAIT)
    view.draw(surface, now=10.0)
    mask = lit(surface)
    assert mask.sum() > 5000
    # The portrait window's long side is y. On its side (90, 270), the page is set for a
    # landscape screen and its lines run along y; upright or upside down, along x.
    expected = "y" if rotation in (90, 270) else "x"
    assert runs_along(mask, wide=view.line_height // 4) == expected, rotation
    assert page_size(PORTRAIT, rotation) == ((1280, 720) if expected == "y" else PORTRAIT)
    ys, xs = np.nonzero(mask)
    extent = {"x": xs.max() - xs.min(), "y": ys.max() - ys.min()}
    # The lines fill the page's width: on its side, longer than the window's short side.
    assert extent[expected] > 0.8 * view.area.width
    if rotation in (90, 270):
        assert extent["y"] > PORTRAIT[0]


@pytest.mark.parametrize("rotation, corner", [(0, "top left"), (90, "bottom left"),
                                              (180, "bottom right"), (270, "top right")])
def test_the_first_word_lands_where_the_turned_page_begins(rotation, corner):
    # A screen turned clockwise by `rotation`: its page's top-left corner, where reading
    # begins, lies at this corner of the window as the graphics card draws it.
    view = written(PageView(turned(rotation), PORTRAIT), ["Warm"])
    surface = pygame.Surface(PORTRAIT)
    view.draw(surface, now=10.0)
    ys, xs = np.nonzero(lit(surface))
    vertical = "top" if ys.mean() < PORTRAIT[1] / 2 else "bottom"
    horizontal = "left" if xs.mean() < PORTRAIT[0] / 2 else "right"
    assert f"{vertical} {horizontal}" == corner


@pytest.mark.parametrize("rotation", ANGLES[1:])
@pytest.mark.parametrize("moment", ["caret", "scrolling", "fading"])
def test_caret_scroll_and_fade_are_the_upright_page_turned(rotation, moment):
    """Pixel for pixel, the turned window is the page drawn upright for the turned size,
    then turned: the caret, a scroll half way and a fade half way included."""
    words = WORDS if moment == "scrolling" else WORDS[:30]
    kwargs = {"caret": dict(now=10.3, writing=True),
              "scrolling": dict(now=0.25, writing=True),
              "fading": dict(now=10.0, opacity=0.45)}[moment]
    window = pygame.Surface(PORTRAIT)
    written(PageView(turned(rotation), PORTRAIT), words).draw(window, **kwargs)
    upright_size = page_size(PORTRAIT, rotation)
    upright = pygame.Surface(upright_size)
    view = written(PageView(SETTINGS, upright_size), words)
    view.draw(upright, **kwargs)
    if moment == "scrolling":
        assert 0 < view.scroll_offset(0.25) < view._scroll_to   # caught mid-glide
    window_pixels = pygame.surfarray.array3d(window).transpose(1, 0, 2)
    upright_pixels = pygame.surfarray.array3d(upright).transpose(1, 0, 2)
    # pygame turns counterclockwise, as np.rot90 does for arrays indexed [y, x].
    assert np.array_equal(window_pixels, np.rot90(upright_pixels, k=rotation // 90))
    assert lit(window).sum() > 500


def test_a_resized_window_keeps_the_rotation():
    view = written(PageView(turned(90), (1280, 720)), WORDS[:10])
    again = view.resized(PORTRAIT, now=1.0)
    assert again.settings.rotation == 90 and again.page.text == view.page.text
    assert again.area.width == page_size(PORTRAIT, 90)[0] - 2 * again.margin
