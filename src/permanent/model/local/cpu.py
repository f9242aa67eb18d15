"""What /proc/cpuinfo says of this CPU: which int4 kernel can run and what a warm start
was packed for; the bench reads it too (which machine a figure came from)."""

from __future__ import annotations

from pathlib import Path


def cpu_fields() -> dict[str, str] | None:
    """The first CPU's fields in /proc/cpuinfo (Linux), e.g. 'model name', 'cpu family',
    'flags'; None elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            break   # the first processor's block is enough: they are all alike
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpuinfo() -> tuple[str | None, set[str] | None]:
    """The first CPU's model name and flags from /proc/cpuinfo (Linux); None elsewhere."""
    fields = cpu_fields() or {}
    return fields.get("model name"), set(fields.get("flags", "").split()) or None
