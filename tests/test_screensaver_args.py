"""Where the screensaver draws, from the flags each host passes."""

import pytest

from permanent.cli import build_parser
from permanent.screen.screensaver import SaverArgumentError, SaverMode, choose_mode


def mode(*argv, env=None, program="permanent"):
    args = build_parser().parse_args(["screensaver", *argv])
    return choose_mode(args.window_id, args.root, args.windows, env or {}, program)


@pytest.mark.parametrize("argv, expected", [
    (["--window-id", "0x2a00007"], SaverMode("window", 0x2A00007)),
    (["--window-id", "44040199"], SaverMode("window", 44040199)),
    (["-window-id", "0x10"], SaverMode("window", 16)),          # XScreenSaver's old spelling
    (["--root"], SaverMode("root")),
    (["-root"], SaverMode("root")),
    (["/s"], SaverMode("standalone")),
    (["/S"], SaverMode("standalone")),
    (["/c"], SaverMode("configure")),
    (["/c:1234"], SaverMode("configure")),
    (["/p", "1234"], SaverMode("window", 1234)),
    (["/p:1234"], SaverMode("window", 1234)),
    (["/P", "0x4d2"], SaverMode("window", 1234)),
    ([], SaverMode("standalone")),
])
def test_flags(argv, expected):
    assert mode(*argv) == expected


def test_xscreensaver_window_from_the_environment():
    assert mode(env={"XSCREENSAVER_WINDOW": "0x1e00003"}) == SaverMode("window", 0x1E00003)
    # An explicit flag wins over the environment.
    assert mode("--root", env={"XSCREENSAVER_WINDOW": "0x1e00003"}) == SaverMode("root")


def test_a_bare_scr_opens_its_configuration():
    assert mode(program=r"C:\Windows\System32\permanent.scr") == SaverMode("configure")


@pytest.mark.parametrize("argv, words", [
    (["--window-id", "nowhere"], "not a window id"),
    (["--window-id", "0"], "not a window id"),
    (["/p"], "needs the preview window's handle"),
    (["/x"], "unknown screensaver argument"),
])
def test_bad_flags_say_what_to_pass(argv, words):
    with pytest.raises(SaverArgumentError, match=words):
        mode(*argv)
