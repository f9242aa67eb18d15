"""The screen: a dark page, text set a token at a time, smooth scrolling, fades.

`open_screen` owns pygame's window; `PageView` draws onto any Surface, so the same
drawing runs in the live window, under SDL's dummy driver in tests, and into offscreen
frames for a render.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402  (the line above must come first)

from ..config import DisplayConfig
from ..errors import DisplayError
from .pacing import ease_in_out
from .typesetting import Page

log = logging.getLogger("permanent")

# A gallery computer's X server may come up a moment after the piece (both started at
# boot): a display that is named but does not answer yet is waited for this long.
DISPLAY_WAIT_SECONDS = 30.0
DISPLAY_RETRY_SECONDS = 0.5
NO_DISPLAY = ("no display to draw on ({}). Set DISPLAY to the screen that should show the "
              "piece (for example DISPLAY=:0), or start it from the desktop session; "
              "--windowed opens a window instead of going fullscreen.")


def open_screen(settings: DisplayConfig, windowed: bool, embedded: bool = False,
                wait_seconds: float | None = None,
                stop_requested: Callable[[], bool] = lambda: False) -> pygame.Surface:
    """Open the window (fullscreen unless `windowed`) or say clearly why there is none.

    `embedded`: draw into the window named by SDL_WINDOWID (a screensaver host's), at
    its size. A display that DISPLAY (or WAYLAND_DISPLAY) names but that does not answer
    is waited for up to `wait_seconds` (None: DISPLAY_WAIT_SECONDS, which tests lower),
    or until `stop_requested()`; with none named there is nothing to wait for. A host's
    window is never waited for: its display was there when the host made it."""
    fullscreen = settings.fullscreen and not windowed and not embedded
    if embedded:
        wait_seconds = 0.0
    _start_video(DISPLAY_WAIT_SECONDS if wait_seconds is None else wait_seconds,
                 stop_requested)
    pygame.display.set_caption("permanent")
    try:
        if embedded:
            surface = pygame.display.set_mode((0, 0))   # the host window's own size
        elif fullscreen:
            count = pygame.display.get_num_displays()
            if settings.monitor >= count:
                raise DisplayError(f"display.monitor is {settings.monitor} but this machine has "
                                   f"{count} screen(s), numbered from 0. Fix config.yaml.")
            surface = pygame.display.set_mode((0, 0), pygame.FULLSCREEN, display=settings.monitor)
            pygame.mouse.set_visible(False)
        else:
            surface = pygame.display.set_mode(settings.window_size, pygame.RESIZABLE)
    except pygame.error as e:
        raise DisplayError(f"cannot open the {'fullscreen ' if fullscreen else ''}window ({e}). "
                           "Check DISPLAY, or try --windowed.") from None
    return surface


def named_display() -> str | None:
    """The display the environment names: X's DISPLAY, else Wayland's, else None."""
    return os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or None


def _start_video(wait_seconds: float, stop_requested: Callable[[], bool]) -> None:
    """SDL's video on a real screen, waiting for a named one that does not answer yet;
    raises DisplayError where there is none."""
    started = time.monotonic()
    why = _video_on_a_screen()
    display = named_display()
    if why is None or display is None or wait_seconds <= 0:
        if why is not None:
            raise DisplayError(NO_DISPLAY.format(why))
        return
    log.warning("waiting for the display %s (up to %.0f s): it does not answer yet (%s)",
                display, wait_seconds, why)
    while (left := started + wait_seconds - time.monotonic()) > 0 and not stop_requested():
        time.sleep(min(DISPLAY_RETRY_SECONDS, left))
        if (why := _video_on_a_screen()) is None:
            log.info("the display %s answered %.1f s after the first try", display,
                     time.monotonic() - started)
            return
    raise DisplayError(NO_DISPLAY.format(
        f"{why}; waited {time.monotonic() - started:.0f} s for the display {display}"))


def _video_on_a_screen() -> str | None:
    """Start SDL's video: None where it reaches a screen, else why it did not."""
    try:
        pygame.display.init()
    except pygame.error as e:   # a driver asked for by SDL_VIDEODRIVER that cannot start
        return str(e)
    driver = pygame.display.get_driver()
    if driver in ("offscreen", "dummy") and os.environ.get("SDL_VIDEODRIVER") != driver:
        # SDL falls back to drawing into memory when its X11 and Wayland drivers reach no
        # server (DISPLAY unset, or naming one that does not answer): nobody would see it.
        pygame.display.quit()
        return f"SDL found only its {driver} driver"
    return None


# The piece's typeface: JetBrains Mono Light (SIL OFL 1.1, see fonts/OFL.txt). A machine's
# even hand, light enough to stay quiet on black, open enough to read from 3 m.
TYPEFACE = Path(__file__).resolve().parent / "fonts" / "JetBrainsMono-Light.ttf"


def load_font(settings: DisplayConfig, pixel_size: int, base_dir: Path = Path(".")):
    if not pygame.font.get_init():
        pygame.font.init()
    if settings.font is None:
        return pygame.font.Font(str(TYPEFACE), pixel_size)
    path = Path(os.path.expanduser(settings.font))
    path = path if path.is_absolute() else base_dir / path
    if path.is_file():
        return pygame.font.Font(str(path), pixel_size)
    found = pygame.font.match_font(settings.font)  # an installed family name
    if found:
        return pygame.font.Font(found, pixel_size)
    raise DisplayError(f"display.font: no font file {path} and no installed font named "
                       f"{settings.font!r}. Give a .ttf/.otf path, or remove the key to use "
                       "the piece's own typeface.")


def page_size(size: tuple[int, int], rotation: int) -> tuple[int, int]:
    """The page as the visitor sees it on a screen turned by `rotation` degrees: on its
    side (90, 270), the window's width is the page's height."""
    width, height = size
    return (height, width) if rotation in (90, 270) else (width, height)


class PageView:
    """Lays out and draws one page of text on a surface of a given size.

    On a screen turned by `display.rotation`, the page is set for the size the visitor
    sees. Each line is turned once, when it is rendered, and every rectangle of the page
    (a line, the caret, the clip) is placed where it falls on the turned window: the
    frame costs what an upright one does, and is the upright page turned, pixel for pixel."""

    def __init__(self, settings: DisplayConfig, size: tuple[int, int], base_dir: Path = Path(".")):
        self.settings, self.base_dir = settings, base_dir
        self.size = size
        self.page_size = width, height = page_size(size, settings.rotation)
        # Type and margins follow the page's shorter side: its height on a landscape
        # screen, its width on a portrait one, where the height would make lines of a word.
        short_side = min(width, height)
        self.margin = round(settings.margin * short_side)
        self.font = load_font(settings, max(8, round(settings.font_size * short_side)), base_dir)
        self.line_height = round(self.font.get_linesize() * settings.line_spacing)
        self.area = pygame.Rect(self.margin, self.margin,
                                width - 2 * self.margin, height - 2 * self.margin)
        self.visible_lines = max(1, self.area.height // self.line_height)
        self.page = Page(self.area.width, lambda text: self.font.size(text)[0])
        self._rendered: dict[int, tuple[str, pygame.Surface, tuple[int, int]]] = {}
        self._scroll_from = self._scroll_to = 0.0    # pixels scrolled, eased between
        self._scroll_started = 0.0

    def _turned(self, upright: pygame.Surface) -> pygame.Surface:
        # pygame turns counterclockwise: on a screen turned clockwise as far, it reads upright.
        rotation = self.settings.rotation
        return pygame.transform.rotate(upright, rotation) if rotation else upright

    def _on_window(self, x: int, y: int, w: int, h: int) -> pygame.Rect:
        """Where a rectangle of the upright page falls on the turned window."""
        width, height = self.page_size
        return {0: pygame.Rect(x, y, w, h), 90: pygame.Rect(y, width - x - w, h, w),
                180: pygame.Rect(width - x - w, height - y - h, w, h),
                270: pygame.Rect(height - y - h, x, h, w)}[self.settings.rotation]

    def append(self, text: str, now: float) -> None:
        self.page.append(text)
        target = max(0, len(self.page.lines) - self.visible_lines) * self.line_height
        if target != self._scroll_to:
            self._scroll_from, self._scroll_to = self.scroll_offset(now), float(target)
            self._scroll_started = now

    def resized(self, size: tuple[int, int], now: float) -> "PageView":
        """The same text laid out again for a window of a new size."""
        view = PageView(self.settings, size, self.base_dir)
        view.append(self.page.text, now)
        return view

    def clear(self) -> None:
        self.page.clear()
        self._rendered.clear()
        self._scroll_from = self._scroll_to = 0.0

    def scroll_offset(self, now: float) -> float:
        duration = self.settings.scroll_seconds
        progress = (now - self._scroll_started) / duration if duration > 0 else 1.0
        return self._scroll_from + (self._scroll_to - self._scroll_from) * ease_in_out(progress)

    def _line_surface(self, index: int) -> tuple[pygame.Surface, tuple[int, int]]:
        """Line `index` rendered and turned, and its size on the upright page."""
        text = self.page.lines[index]
        cached = self._rendered.get(index)
        if cached is None or cached[0] != text:   # only the last line ever changes
            upright = self.font.render(text, True, self.settings.text_colour)
            cached = (text, self._turned(upright), upright.get_size())
            self._rendered[index] = cached
        return cached[1], cached[2]

    def draw(self, surface: pygame.Surface, now: float, opacity: float = 1.0,
             writing: bool = False) -> None:
        """The page at `now`; `writing`: a token is on its way, so the caret shows."""
        surface.fill(self.settings.background_colour)
        alpha = round(255 * min(1.0, max(0.0, opacity)))
        if alpha == 0:
            return
        offset = self.scroll_offset(now)
        first = max(0, int(offset // self.line_height))
        last = min(len(self.page.lines), first + self.visible_lines + 2)
        surface.set_clip(self._on_window(*self.area))
        for index in range(first, last):
            y = self.area.top + index * self.line_height - offset
            line, (width, height) = self._line_surface(index)
            line.set_alpha(alpha)
            surface.blit(line, self._on_window(self.area.left, round(y), width, height))
        if writing:
            self._draw_caret(surface, now, offset, alpha)
        surface.set_clip(None)

    CARET_BREATH_SECONDS = 2.4   # one slow rise and fall; never a blink

    def _draw_caret(self, surface: pygame.Surface, now: float, offset: float, alpha: int) -> None:
        """A thin bar where the next token will land, breathing between a third and two
        thirds of the text's brightness."""
        last = len(self.page.lines) - 1
        x = self.area.left + self.font.size(self.page.lines[last])[0] + self.font.size(" ")[0] // 3
        y = self.area.top + last * self.line_height - offset
        breath = 0.5 + 0.5 * math.sin(2 * math.pi * now / self.CARET_BREATH_SECONDS)
        width = max(2, round(self.font.get_height() * 0.06))
        height = self.font.get_ascent()   # top to baseline
        caret = pygame.Surface(self._on_window(0, 0, width, height).size)
        caret.fill(self.settings.text_colour)
        caret.set_alpha(round(alpha * (0.33 + 0.33 * breath)))
        surface.blit(caret, self._on_window(min(x, self.area.right - width), round(y),
                                            width, height))


THUMBNAIL_WIDTH = 320   # pixels: a phone's status page, not a copy of the screen


def thumbnail(surface, width: int = THUMBNAIL_WIDTH) -> tuple[bytes, tuple[int, int]]:
    """A small picture of the frame just drawn, as RGB bytes and its size. Scaled in two
    steps (a cheap halving, then a smooth one) to keep the frame's time low; encoding it
    is left to whoever shows it."""
    w, h = surface.get_size()
    size = (width, max(1, round(h * width / w)))
    if w > 2 * width:
        surface = pygame.transform.scale(surface, (2 * width, 2 * size[1]))
    small = pygame.transform.smoothscale(surface, size)
    return pygame.image.tobytes(small, "RGB"), size
