"""Render the hum offline, buffer by buffer, on a virtual clock.

`Server(audio="manual")` computes one buffer per `process()` call, so a script of
timed commands lands on the same sample every time and a minute renders in a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from ..config import HumConfig
from .devices import import_pyo
from .preset import Preset


@dataclass(frozen=True)
class HumCommand:
    """At `seconds`, tell the hum to do `action` ("token", "idle", "fade_out") with `value`:
    what the live piece sends the hum's process, on the render's clock."""
    seconds: float
    action: str
    value: float = 0.0


def render_hum(preset: Preset, settings: HumConfig, commands: Iterable[HumCommand], seconds: float,
               path: Path, sample_rate: int = 48000, buffer_size: int = 256,
               seed: int = 1, channels: int = 2, lead_speaker: Optional[float] = None) -> Path:
    pyo = import_pyo()
    from .hum import Hum

    server = pyo.Server(sr=sample_rate, nchnls=channels, buffersize=buffer_size, duplex=0,
                        audio="manual").boot()
    try:
        server.setGlobalSeed(seed)   # the same noise every time, however many renders ran before
        # 32-bit integer WAV: exact, and readable by Python's own `wave` module.
        server.recordOptions(filename=str(path), fileformat=0, sampletype=2)
        hum = Hum(preset, settings, channels, lead_speaker)
        server.start()
        hum.start()
        server.recstart()
        pending = sorted(commands, key=lambda c: c.seconds)
        n_buffers = round(seconds * sample_rate / buffer_size)
        for i in range(n_buffers):
            now = i * buffer_size / sample_rate
            while pending and pending[0].seconds <= now:
                _apply(hum, pending.pop(0))
            server.process()
        server.recstop()
        server.stop()
    finally:
        server.shutdown()
    return Path(path)


def _apply(hum, command: HumCommand) -> None:
    if command.action == "token":
        hum.show_token(command.value)
    elif command.action == "idle":
        hum.idle()
    elif command.action == "fade_out":
        hum.fade_out(command.value)
    else:
        raise ValueError(f"unknown hum command {command.action!r}")
