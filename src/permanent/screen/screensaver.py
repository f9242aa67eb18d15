"""The piece as a screensaver: where to draw, and when to stop.

Three hosts, one piece:
  XScreenSaver   runs a "hack" in its own window: `--window-id ID`, `--root`, or
                 $XSCREENSAVER_WINDOW; it ends the hack with SIGTERM.
  standalone     fullscreen, ended by a key, a click, or the mouse moving a little.
  Windows .scr   `/s` fullscreen, `/c` configure, `/p HWND` (or `/p:HWND`) the preview pane.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Optional, Sequence


@dataclass(frozen=True)
class SaverMode:
    kind: Literal["window", "root", "standalone", "configure"]
    window_id: Optional[int] = None


class SaverArgumentError(ValueError):
    pass


def parse_window_id(text: str) -> int:
    """XScreenSaver writes window ids in hex (0x2a00007); people may write decimal."""
    try:
        value = int(text, 0)
    except ValueError:
        raise SaverArgumentError(f"{text!r} is not a window id; give a number such as "
                                 "0x2a00007 or 44040199") from None
    if value <= 0:
        raise SaverArgumentError(f"{text!r} is not a window id")
    return value


def choose_mode(window_id: Optional[str], root: bool, windows_args: Sequence[str],
                env: Mapping[str, str], program: str) -> SaverMode:
    """Decide where the screensaver draws, from its flags, environment and own name."""
    if window_id is not None:
        return SaverMode("window", parse_window_id(window_id))
    if root:
        return SaverMode("root")
    if windows_args:
        flag, _, attached = windows_args[0].lower().partition(":")
        rest = [attached] if attached else list(windows_args[1:])
        if flag in ("/s", "-s"):
            return SaverMode("standalone")
        if flag in ("/c", "-c"):
            return SaverMode("configure")
        if flag in ("/p", "-p", "/l"):   # /l: the preview's older spelling
            if not rest:
                raise SaverArgumentError(f"{windows_args[0]} needs the preview window's handle")
            return SaverMode("window", parse_window_id(rest[0]))
        raise SaverArgumentError(f"unknown screensaver argument {windows_args[0]!r}; use "
                                 "--window-id ID, --root, /s, /c or /p HWND")
    if env.get("XSCREENSAVER_WINDOW"):
        return SaverMode("window", parse_window_id(env["XSCREENSAVER_WINDOW"]))
    if program.lower().endswith(".scr"):
        return SaverMode("configure")   # Windows runs a bare .scr to configure it
    return SaverMode("standalone")


def _libx11() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("X11")
    return ctypes.CDLL(name) if name else None


def root_window_id() -> int:
    """The X root window, asked of libX11 directly (no Xlib bindings needed)."""
    x11 = _libx11()
    if x11 is None:
        raise SaverArgumentError("--root needs libX11, which is not installed")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    display = x11.XOpenDisplay(None)
    if not display:
        raise SaverArgumentError("--root: cannot open the X display; is DISPLAY set?")
    try:
        return int(x11.XDefaultRootWindow(display))
    finally:
        x11.XCloseDisplay(display)


def prepare_environment(mode: SaverMode) -> None:
    """Before pygame opens its display: where to draw, and leave power management alone."""
    # A screensaver must not stop the desktop from blanking or powering the screen down.
    os.environ["SDL_VIDEO_ALLOW_SCREENSAVER"] = "1"
    if mode.kind == "root":
        os.environ["SDL_WINDOWID"] = str(root_window_id())
    elif mode.kind == "window":
        os.environ["SDL_WINDOWID"] = str(mode.window_id)


_handlers = []   # ctypes callbacks must outlive the C library's use of them


def survive_host_window_loss(on_loss) -> None:
    """A host (XScreenSaver) may destroy its window before it sends SIGTERM. Xlib's
    default handler would then exit() mid-frame: no fade, orphaned children. Instead,
    note the error and let the piece stop as it would on SIGTERM."""
    x11 = _libx11()
    if x11 is None:
        return
    handler_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

    def handler(display, event):
        on_loss()
        return 0

    callback = handler_type(handler)
    _handlers.append(callback)
    x11.XSetErrorHandler.restype = ctypes.c_void_p
    x11.XSetErrorHandler.argtypes = [handler_type]
    x11.XSetErrorHandler(callback)


class WakeOnInput:
    """Standalone mode: a key, a click or a real mouse movement ends it; the first
    moments after start, and small jitter, do not."""

    def __init__(self, distance: int, grace_seconds: float, started: float):
        self.distance, self.grace_until = distance, started + grace_seconds
        self._origin: Optional[tuple[int, int]] = None

    def reason(self, event, now: float) -> Optional[str]:
        import pygame

        if event.type == pygame.QUIT:
            return "window closed"
        if now < self.grace_until:
            if event.type == pygame.MOUSEMOTION:
                self._origin = event.pos   # wherever the mouse rests when we appear
            return None
        if event.type in (pygame.KEYDOWN, pygame.MOUSEBUTTONDOWN):
            return "input"
        if event.type == pygame.MOUSEMOTION:
            if self._origin is None:
                self._origin = (event.pos[0] - event.rel[0], event.pos[1] - event.rel[1])
            dx, dy = event.pos[0] - self._origin[0], event.pos[1] - self._origin[1]
            if dx * dx + dy * dy >= self.distance ** 2:
                return "mouse moved"
        return None


def describe_configuration(config_path: Optional[Path]) -> str:
    where = config_path.resolve() if config_path else Path("config.yaml").resolve()
    return (f"permanent is configured in {where}.\nThe screensaver: section sets its audio, "
            "volume, fades and first pass; the rest is shared with the gallery piece.")
