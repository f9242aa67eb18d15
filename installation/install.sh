#!/usr/bin/env bash
# Start permanent with this user's graphical session, and keep it running.
#
#   installation/install.sh              systemd user service (restart on failure, watchdog)
#   installation/install.sh --autostart  an XDG autostart entry instead (no systemd user session)
#   installation/install.sh --uninstall  remove whichever is installed
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
autostart_dir="${XDG_CONFIG_HOME:-$HOME/.config}/autostart"

fill() { sed "s|@ROOT@|$root|g" "$1"; }

case "${1:-}" in
  --uninstall)
    if [ -f "$unit_dir/permanent.service" ]; then
      systemctl --user disable --now permanent.service 2>/dev/null || true
      rm -f "$unit_dir/permanent.service"
      systemctl --user daemon-reload 2>/dev/null || true
    fi
    rm -f "$autostart_dir/permanent.desktop"
    echo "permanent will no longer start by itself."
    ;;
  --autostart)
    make -C "$root" .venv/.installed >/dev/null
    mkdir -p "$autostart_dir"
    fill "$root/installation/permanent.desktop" > "$autostart_dir/permanent.desktop"
    echo "Installed $autostart_dir/permanent.desktop: permanent starts at the next login."
    ;;
  "")
    make -C "$root" .venv/.installed >/dev/null
    mkdir -p "$unit_dir"
    fill "$root/installation/systemd/permanent.service" > "$unit_dir/permanent.service"
    systemctl --user daemon-reload
    systemctl --user enable permanent.service
    # Keep the user's services alive without a terminal session (a kiosk logs in once).
    loginctl enable-linger "$(id -un)" 2>/dev/null || \
      echo "note: could not enable lingering; run 'sudo loginctl enable-linger $(id -un)'"
    systemctl --user start permanent.service || \
      echo "note: it starts with the next graphical login."
    echo "Installed $unit_dir/permanent.service."
    echo "Logs: journalctl --user -u permanent -f    Stop: systemctl --user stop permanent"
    ;;
  *)
    echo "usage: $0 [--autostart | --uninstall]" >&2
    exit 2
    ;;
esac
