"""The hum's own process: it starts first, plays through everything, and fades out last.

pyo's audio callback takes the GIL every buffer, and its PortAudio server segfaults on a
machine with no output device; a process of its own keeps both away from the display
and the model. The parent talks to it through a small bounded queue of commands.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import signal
import time

from .config import Config
from .events import Status

log = logging.getLogger("permanent.audio")
_CONTEXT = mp.get_context("spawn")   # a clean interpreter: no inherited pygame or torch state


class AudioProcess:
    """The parent's handle on the hum. Every method returns at once and never raises."""

    def __init__(self, config: Config, status: mp.Queue):
        self.config = config
        self._commands: mp.Queue = _CONTEXT.Queue(maxsize=64)
        self._process = _CONTEXT.Process(
            target=_main, name="permanent-hum", daemon=True,
            args=(config, self._commands, status, logging.getLogger().level))
        self.silent = not config.audio.enabled

    def start(self) -> "AudioProcess":
        if not self.silent:
            self._process.start()
        return self

    @property
    def pid(self):
        return self._process.pid

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def _send(self, name: str, value: float = 0.0) -> None:
        if self.silent or not self._process.is_alive():
            return
        try:
            self._commands.put_nowait((name, value))
        except queue.Full:
            pass  # the hum is behind; a fan target is only worth its latest value

    def show_token(self, entropy_bits: float) -> None:
        self._send("token", entropy_bits)

    def idle(self) -> None:
        self._send("idle")

    def set_volume(self, volume: float) -> None:
        self._send("volume", volume)

    def stop(self, fade_seconds: float) -> None:
        """Fade out, then end the process; waits at most the fade plus a moment."""
        if self._process.pid is None:
            return
        self._send("stop", fade_seconds)
        self._process.join(timeout=fade_seconds + 0.7)
        if self._process.is_alive():
            log.warning("the hum did not stop after its fade; ending it")
            self._process.kill()
            self._process.join(timeout=1.0)
        self._commands.close()
        self._commands.cancel_join_thread()


def _main(config: Config, commands: mp.Queue, status: mp.Queue, log_level: int) -> None:
    # Ctrl+C reaches the whole process group; the parent decides when the hum fades.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    terminated = []
    signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s: %(message)s")

    from .devices import DeviceNotFound, choose_output, list_output_devices, quiet_stderr
    from .preset import load_preset

    preset = load_preset(config.hum.preset, config.base_dir)
    try:
        device = choose_output(config.audio.device, list_output_devices())
    except DeviceNotFound as e:
        status.put(Status("audio", "error", str(e), time.monotonic()))
        return
    if device is None:
        status.put(Status("audio", "silent",
                          "no audio output device found, so the piece runs silently. Connect "
                          "speakers or start PulseAudio/PipeWire, then list outputs with "
                          "`permanent devices`.", time.monotonic()))
        return

    import pyo

    from .hum import Hum

    audio = config.audio
    with quiet_stderr():
        server = pyo.Server(sr=audio.sample_rate, nchnls=2, buffersize=audio.buffer_size,
                            duplex=0, audio="portaudio", winhost="default")
        server.setOutputDevice(device.index)
        server.deactivateMidi()   # the hum listens to nothing
        server.boot()
    if not server.getIsBooted():
        status.put(Status("audio", "silent", f"the audio output {device.name!r} would not "
                          "start, so the piece runs silently. Check `permanent devices`.",
                          time.monotonic()))
        return
    server.start()
    hum = Hum(preset, config.hum).start()
    status.put(Status("audio", "playing", device.name, time.monotonic()))
    parent = mp.parent_process()
    fade = config.hum.fade_out_seconds
    while True:
        try:
            name, value = commands.get(timeout=0.2)
        except queue.Empty:
            name, value = None, 0.0
        if terminated or (parent is not None and not parent.is_alive()):
            name, value = "stop", fade   # never leave the room humming on its own
        if name == "token":
            hum.show_token(value)
        elif name == "idle":
            hum.idle()
        elif name == "volume":
            hum.set_volume(value)
        elif name == "stop":
            hum.fade_out(value)
            time.sleep(value + 0.05)     # let the ramp reach zero before the stream stops
            break
    server.stop()
    time.sleep(0.05)
    server.shutdown()
