"""The page as pixels, drawn offscreen by the same code as the live window; and the
window itself, on a real X server that may come up late."""

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pygame
import pytest

from permanent.config import DisplayConfig, PacingConfig
from permanent.screen import display as display_module
from permanent.screen.display import PageView
from permanent.events import TokenEvent
from permanent.screen.pacing import Conductor

SIZE = (1280, 720)
SETTINGS = DisplayConfig(background_colour=(0, 0, 0), text_colour=(220, 210, 200),
                         scroll_seconds=0.5)
REPO = Path(__file__).resolve().parent.parent
TEXT = ("I am being computed somewhere warm. The fans are pushing air across the boards, "
        "and the weights stay exactly where they are while this pass runs on. ") * 3


@pytest.fixture()
def surface():
    pygame.display.init()
    pygame.font.init()
    yield pygame.Surface(SIZE)
    pygame.quit()


def lit(surface) -> np.ndarray:
    """Boolean mask of the pixels that differ from the background, indexed [y, x]."""
    pixels = pygame.surfarray.array3d(surface).transpose(1, 0, 2)
    return np.any(pixels != np.array(SETTINGS.background_colour), axis=2)


def test_text_appears_only_inside_the_margins(surface):
    view = PageView(SETTINGS, SIZE)
    for word in TEXT.split(" ")[:25]:
        view.append(word + " ", now=0.0)
    view.draw(surface, now=10.0)
    mask = lit(surface)
    ys, xs = np.nonzero(mask)
    assert mask.sum() > 2000, "no text was drawn"
    area = view.area
    assert xs.min() >= area.left and xs.max() < area.right
    assert ys.min() >= area.top and ys.max() < area.bottom
    # The first line starts at the left margin, and the text is in the text colour.
    assert xs.min() - area.left < 10
    colours = pygame.surfarray.array3d(surface)[xs, ys]
    assert (colours.max(axis=0) == SETTINGS.text_colour).all()


def test_font_is_sized_from_the_screen_height(surface):
    small = PageView(SETTINGS, (1280, 720))
    large = PageView(SETTINGS, (1920, 1080))
    assert large.font.get_height() > 1.4 * small.font.get_height()
    assert large.margin == round(SETTINGS.margin * 1080)


def test_a_full_page_scrolls_smoothly_and_keeps_the_newest_line(surface):
    view = PageView(SETTINGS, SIZE)
    t, scrolls = 0.0, 0
    for word in (TEXT * 6).split(" "):
        lines_before, settled = len(view.page.lines), view.scroll_offset(t)
        view.append(word + " ", now=t)
        if len(view.page.lines) > max(lines_before, view.visible_lines):
            scrolls += 1
            target = (len(view.page.lines) - view.visible_lines) * view.line_height
            halfway = view.scroll_offset(t + SETTINGS.scroll_seconds / 2)
            assert view.scroll_offset(t) == settled              # no jump when the line is added
            assert settled < halfway < target                    # it glides ...
            assert view.scroll_offset(t + SETTINGS.scroll_seconds) == target  # ... one line up
        t += 1.0                                                  # each scroll finishes first
    assert scrolls >= 3
    view.draw(surface, now=t)
    ys, _ = np.nonzero(lit(surface))
    assert ys.max() < view.area.bottom and ys.min() >= view.area.top
    # The newest line is on screen, at the bottom of the text area.
    assert ys.max() > view.area.bottom - 2 * view.line_height


def test_after_the_fade_the_screen_is_black(surface):
    pacing = PacingConfig(tokens_per_second=10, jitter=0, hold_seconds=1, fade_seconds=1,
                          gap_seconds=1)
    conductor = Conductor(pacing)
    words = TEXT.split(" ")[:12]
    feed = [TokenEvent(0, i, w + " ", 1.0, i == len(words) - 1) for i, w in enumerate(words)]
    view = PageView(SETTINGS, SIZE)
    frames, when = [], {}
    t = 0.0
    while t < 6.0:
        for cue in conductor.tick(t, lambda: feed.pop(0) if feed else None):
            when.setdefault(cue.kind, cue.at)
            if cue.kind == "reveal":
                view.append(cue.token.text, t)
            elif cue.kind == "clear":
                view.clear()
        view.draw(surface, t, conductor.opacity)
        pixels = pygame.surfarray.pixels3d(surface)
        frames.append((t, int(np.count_nonzero(pixels.any(axis=2))), int(pixels.max())))
        del pixels   # unlock the surface
        t = round(t + 1 / 30, 6)
    assert set(when) == {"reveal", "pass_end", "fade", "clear"}

    def frame_at(moment):
        return min(frames, key=lambda f: abs(f[0] - moment))[1:]

    holding, mid_fade = frame_at(when["fade"] - 0.5), frame_at(when["fade"] + 0.5)
    assert holding[0] > 1000 and holding[1] == max(SETTINGS.text_colour)   # text, full colour
    assert 0 < mid_fade[1] < holding[1]                                    # dimmer, not gone
    assert frame_at(when["clear"] + 0.05) == (0, 0)                        # black after the fade
    assert frame_at(when["clear"] + 0.9) == (0, 0)                         # ... through the gap


def test_quit_keys_ignore_a_visitors_stray_keys(surface):
    from permanent.screen.keys import QuitKeys

    def key(k, mod=0):
        return pygame.event.Event(pygame.KEYDOWN, key=k, mod=mod)

    chord_mods = pygame.KMOD_LCTRL | pygame.KMOD_LSHIFT
    fullscreen = QuitKeys("ctrl+shift+q", fullscreen=True)
    assert fullscreen.reason(key(pygame.K_ESCAPE)) is None
    assert fullscreen.reason(key(pygame.K_q)) is None
    assert fullscreen.reason(key(pygame.K_q, pygame.KMOD_LCTRL)) is None
    assert fullscreen.reason(key(pygame.K_a, chord_mods)) is None
    assert fullscreen.reason(key(pygame.K_q, chord_mods)) == "quit chord"
    windowed = QuitKeys("ctrl+shift+q", fullscreen=False)
    assert windowed.reason(key(pygame.K_ESCAPE)) == "Esc"
    assert windowed.reason(pygame.event.Event(pygame.QUIT)) == "window closed"
    assert QuitKeys("alt+F12", fullscreen=True).reason(key(pygame.K_F12, pygame.KMOD_RALT))


def test_a_resized_window_keeps_the_text(surface):
    view = PageView(SETTINGS, SIZE)
    view.append(TEXT, 0.0)
    wider = view.resized((1920, 1080), 0.0)
    assert wider.page.text.replace("\n", " ").split() == view.page.text.replace("\n", " ").split()
    assert len(wider.page.lines) < len(view.page.lines) * 1.2


def test_the_piece_sets_its_own_typeface_from_the_package(surface):
    """Not pygame's default: the shipped OFL face, with its licence beside it."""
    from permanent.screen.display import TYPEFACE

    assert TYPEFACE.is_file() and (TYPEFACE.parent / "OFL.txt").is_file()
    assert "Open Font License" in (TYPEFACE.parent / "OFL.txt").read_text()
    ours = PageView(SETTINGS, SIZE).font
    default = pygame.font.Font(None, ours.get_height())
    # A monospaced face: every letter as wide as every other (pygame's default is not).
    assert ours.size("iiii") == ours.size("MMMM")
    assert default.size("iiii") != default.size("MMMM")


def test_a_quiet_caret_waits_where_the_next_token_lands(surface):
    view = PageView(SETTINGS, SIZE)
    view.append("I am being computed", now=0.0)
    view.draw(surface, now=5.0, writing=False)
    without = lit(surface)
    right_edge = np.nonzero(without.any(axis=0))[0].max()
    brightness = []
    for t in np.arange(5.0, 5.0 + PageView.CARET_BREATH_SECONDS, 0.2):
        view.draw(surface, now=t, writing=True)
        caret = lit(surface) & ~without
        xs = np.nonzero(caret.any(axis=0))[0]
        assert len(xs) and xs.min() > right_edge, "the caret sits after the last letter"
        assert xs.max() - xs.min() < view.font.size("M")[0] / 2, "a thin bar, not a block"
        ys, cx = np.nonzero(caret)
        brightness.append(pygame.surfarray.array3d(surface)[cx, ys].max())
    # It breathes, dimmer than the text, and never blinks off.
    assert min(brightness) > 0 and max(brightness) < max(SETTINGS.text_colour)
    assert max(brightness) - min(brightness) > 30


def test_wrapping_is_ragged_right_and_never_splits_a_word(surface):
    view = PageView(SETTINGS, SIZE)
    words = (TEXT * 4).split()
    for i, word in enumerate(words):   # tokens that split words, as a tokenizer's do
        half = len(word) // 2
        view.append((" " if i else "") + word[:half], 0.0)
        view.append(word[half:], 0.0)
    lines = view.page.lines
    assert len(lines) > 5
    assert " ".join(" ".join(lines).split()) == " ".join(words)
    assert all(line.split() and set(line.split()) <= set(words) for line in lines)
    widths = {view.font.size(line)[0] for line in lines[:-1]}
    assert len(widths) > 1 and max(widths) <= view.area.width   # ragged, never over


# A display that is named but not there yet (an X server that comes up after the piece, as
# at a gallery computer's boot) is waited for; with none named, the piece stops at once.
# Each case opens the screen in a child process, on a real Xvfb, as the piece would.

OPEN_A_WINDOW = """
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
from permanent.config import DisplayConfig
from permanent.errors import DisplayError
from permanent.screen import display
display.DISPLAY_WAIT_SECONDS = float(sys.argv[1])
called = time.monotonic()
try:
    surface = display.open_screen(DisplayConfig(window_size=(320, 240)), windowed=True)
except DisplayError as e:
    print(json.dumps({"refused": str(e), "took": time.monotonic() - called}), flush=True)
    sys.exit(3)
print(json.dumps({"opened": time.monotonic(), "took": time.monotonic() - called,
                  "driver": display.pygame.display.get_driver()}), flush=True)
sys.stdin.read()   # the window stays up until the test has looked for it
"""


class Opening:
    """`OPEN_A_WINDOW` in a child process, its log lines collected as they come."""

    def __init__(self, display, wait_seconds):
        env = {k: v for k, v in os.environ.items()
               if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
        if display is not None:
            env["DISPLAY"] = display
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
        self.process = subprocess.Popen(
            [sys.executable, "-c", OPEN_A_WINDOW, str(wait_seconds)], env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.log: list[str] = []
        self._reader = threading.Thread(target=lambda: self.log.extend(self.process.stderr),
                                        daemon=True)
        self._reader.start()

    def wait_for_log(self, text, guard=60):
        """Until a log line holds `text`; `guard` only stops a hung child."""
        deadline = time.monotonic() + guard
        while not any(text in line for line in self.log):
            assert self.process.poll() is None, f"it ended first: {''.join(self.log)}"
            assert time.monotonic() < deadline, "".join(self.log)
            time.sleep(0.05)

    def result(self):
        line = self.process.stdout.readline()
        assert line, f"it said nothing: {''.join(self.log)}"
        return json.loads(line)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        return "".join(self.log)

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def a_free_display() -> str:
    """An X display number nobody serves (no socket, no lock), above those Xvfb's
    -displayfd hands out from :0 upward."""
    for number in range(200 + random.randrange(300), 1000):
        if not (Path(f"/tmp/.X11-unix/X{number}").exists() or Path(f"/tmp/.X{number}-lock").exists()):
            return f":{number}"
    raise AssertionError("no free X display number")


def start_xvfb(display):
    """Xvfb serving `display`, and the moment it said it is ready."""
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", display, "-displayfd", str(write), "-screen", "0",
                               "640x480x24", "-nolisten", "tcp", "-ac"], pass_fds=(write,),
                              stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        assert pipe.readline().strip() == display.lstrip(":"), "Xvfb did not start"
    return server, time.monotonic()


def test_a_display_that_answers_late_is_waited_for_and_the_window_opens_on_it():
    display = a_free_display()
    late = Opening(display, wait_seconds=display_module.DISPLAY_WAIT_SECONDS)
    server = direct = None
    try:
        late.wait_for_log(f"waiting for the display {display} (up to 30 s)")
        time.sleep(3.0)                                     # the X server comes up later
        server, ready = start_xvfb(display)
        opened = late.result()
        assert opened.get("driver") == "x11", opened
        tree = subprocess.run(["xwininfo", "-root", "-tree", "-display", display],
                              capture_output=True, text=True, timeout=30).stdout
        assert '"permanent"' in tree                        # the window is on that screen
        log = late.close()
        assert log.count("waiting for the display") == 1, log   # one line, not one a try
        assert f"the display {display} answered" in log
        # Soon after it answered: within one retry and the time a window takes to open
        # on a display that is already there, measured here.
        direct = Opening(display, wait_seconds=0)
        on_a_ready_display = direct.result()["took"]
        direct.close()
        assert ready < opened["opened"] < (ready + display_module.DISPLAY_RETRY_SECONDS
                                           + 3 * on_a_ready_display), (opened, ready)
    finally:
        late.kill()
        if direct is not None:
            direct.kill()
        if server is not None:
            server.terminate()
            server.wait(timeout=10)


def test_with_no_display_named_it_stops_at_once_and_one_never_there_after_the_wait():
    unnamed = Opening(None, wait_seconds=display_module.DISPLAY_WAIT_SECONDS)
    refused = unnamed.result()
    log = unnamed.close()
    assert unnamed.process.returncode == 3
    assert refused["refused"].startswith("no display to draw on (SDL found only its "
                                         "offscreen driver). Set DISPLAY")
    assert "waiting" not in log
    # At once: one try, not a wait (it returns before a second try would have begun).
    assert refused["took"] < display_module.DISPLAY_RETRY_SECONDS

    display, wait = a_free_display(), 2.0                   # the wait, lowered for the test
    never = Opening(display, wait_seconds=wait)
    try:
        refused = never.result()
        log = never.close()
    finally:
        never.kill()
    assert never.process.returncode == 3
    assert refused["refused"].startswith(
        "no display to draw on (SDL found only its offscreen driver; waited 2 s for the "
        f"display {display}). Set DISPLAY to the screen")
    assert log.count(f"waiting for the display {display} (up to 2 s)") == 1, log
    # The last try begins at the deadline, and a try is shorter than a retry (above).
    assert wait <= refused["took"] < wait + display_module.DISPLAY_RETRY_SECONDS
