"""The scripts a gallery technician or a desktop user runs around the piece."""

import os
import subprocess

from conftest import REPO

INSTALLER = REPO / "installation/xscreensaver/install.sh"


def run_installer(home, *args):
    return subprocess.run(["bash", str(INSTALLER), *args], env=dict(os.environ, HOME=str(home)),
                          capture_output=True, text=True, check=True)


def test_xscreensaver_installer_adds_once_keeps_the_rest_and_uninstalls(tmp_path):
    rc = tmp_path / ".xscreensaver"
    rc.write_text("timeout:\t0:10:00\nprograms:\t\\\n\t\tmaze --root \\n\\\n"
                  "\t\tblitspin --root \\n\n")
    run_installer(tmp_path)
    run_installer(tmp_path)                                    # twice: still one entry
    text = rc.read_text()
    assert text.count("permanent screensaver") == 1
    entry = next(l for l in text.splitlines() if "permanent screensaver" in l)
    assert entry.endswith("\\n\\") and f"{REPO}/.venv/bin/permanent" in entry
    lines = text.splitlines()
    assert lines.index(entry) == lines.index("programs:\t\\") + 1   # listed first
    assert "maze --root" in text and "blitspin --root" in text and "timeout:\t0:10:00" in text
    run_installer(tmp_path, "--uninstall")
    assert "permanent" not in rc.read_text() and "maze --root" in rc.read_text()


def test_xscreensaver_installer_starts_from_the_system_defaults(tmp_path):
    run_installer(tmp_path)
    text = (tmp_path / ".xscreensaver").read_text()
    assert text.startswith("programs:") and "permanent screensaver" in text
    # CI installs xscreensaver, whose defaults list its own hacks: they stay available.
    assert text.count("\\n\\") > 20
