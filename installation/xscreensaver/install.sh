#!/usr/bin/env bash
# Add permanent to this user's XScreenSaver hacks (so it appears in xscreensaver-settings),
# or take it out again. Safe to run twice.
#
#   installation/xscreensaver/install.sh              add it, listed first
#   installation/xscreensaver/install.sh --uninstall  remove it
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
action=${1:-install}
case "$action" in install|--uninstall) ;; *) echo "usage: $0 [--uninstall]" >&2; exit 2;; esac
[ "$action" = install ] && make -C "$root" .venv/.installed >/dev/null

python3 - "$HOME/.xscreensaver" "$root" "$action" <<'PY'
import re, sys
from pathlib import Path

rc, root, action = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
marker = "permanent screensaver"
entry = f'  "permanent" {root}/.venv/bin/permanent screensaver --config {root}/config.yaml \\n\\\n'

if not rc.exists():
    # Start from XScreenSaver's own defaults, so every other hack stays listed.
    text = "programs:\t\\\n"
    for defaults in ("/etc/X11/app-defaults/XScreenSaver",
                     "/usr/share/X11/app-defaults/XScreenSaver"):
        if Path(defaults).is_file():
            lines = Path(defaults).read_text(errors="replace").splitlines(keepends=True)
            start = next((i for i, l in enumerate(lines) if l.startswith("*programs:")), None)
            if start is not None:
                end = start
                while lines[end].rstrip("\n").endswith("\\") and end + 1 < len(lines):
                    end += 1
                text = "".join(lines[start:end + 1])[1:]   # drop the resource's leading *
            break
    rc.write_text(text)

lines = [l for l in rc.read_text().splitlines(keepends=True) if marker not in l]
if action == "install":
    at = next((i for i, l in enumerate(lines) if re.match(r"programs:", l)), None)
    if at is None:
        lines += ["programs:\t\\\n", entry]
    else:
        lines.insert(at + 1, entry)
rc.write_text("".join(lines))
print(("Added permanent to" if action == "install" else "Removed permanent from"), rc)
PY
