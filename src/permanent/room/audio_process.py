"""The hum's own process: it starts first, plays through everything, and fades out last.

pyo's audio callback takes the GIL every buffer, and its PortAudio server segfaults on a
machine with no output device; a process of its own keeps both away from the display
and the model. The parent talks to it through a small bounded queue of commands.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import time

from ..config import Config
from ..events import Status
from ..lifecycle import (SPAWN, ChildProcess, LatestOfEach, Supervisor, die_with_parent,
                         exit_now)

log = logging.getLogger("permanent.audio")


class AudioProcess(ChildProcess):
    """The parent's handle on the hum. Every method returns at once and never raises."""

    def __init__(self, config: Config, status: mp.Queue):
        self.config = config
        self._commands: mp.Queue = SPAWN.Queue(maxsize=64)
        # Fan targets are thinned to the newest; a volume, a room or a stop is never lost.
        self._outbox = LatestOfEach(self._commands)
        super().__init__(_main, "permanent-hum",
                         (config, self._commands, status, logging.getLogger().level),
                         queues=(self._commands,))
        self.silent = not config.audio.enabled

    def start(self) -> "AudioProcess":
        if not self.silent:
            super().start()
        return self

    def _send(self, name: str, value=0.0) -> None:
        if self.silent or not self.is_alive():
            return
        self._outbox.send(name, value)

    def flush(self) -> None:
        """Send what waited for room in the queue (the supervisor calls this every frame)."""
        if not self.silent and self.is_alive():
            self._outbox.flush()

    def show_token(self, entropy_bits: float) -> None:
        self._send("token", entropy_bits)

    def idle(self) -> None:
        self._send("idle")

    def set_volume(self, volume: float, seconds: float = 0.5) -> None:
        self._send("volume", (volume, seconds))

    def change_room(self, config: Config) -> None:
        """A new preset or hum settings: the new room fades in as the old one fades out."""
        self.config = config
        self._send("room", config)

    def begin_stop(self, fade_seconds: float) -> None:
        """Start the fade-out and return; `stop` then waits for the end."""
        self._send("stop", fade_seconds)

    def stop(self, fade_seconds: float) -> None:
        """Fade out, then end the process; waits at most the fade plus a moment."""
        if self.pid is None:
            return
        self._send("stop", fade_seconds)
        if not self.silent and self.is_alive():
            self._outbox.flush(timeout=0.2)   # the hum reads its queue at once
        self._process.join(timeout=fade_seconds + heard_after(self.config.audio) + 0.5)
        if self.is_alive():
            log.warning("the hum did not stop after its fade; ending it")
            self._process.kill()
            self._process.join(timeout=1.0)
        self.close_queues()


class HumSupervisor(Supervisor):
    """Keeps the hum playing: an audio process that dies is started again (fading in)."""

    process: AudioProcess

    def __init__(self, config: Config, status: mp.Queue):
        self.config, self.status = config, status
        super().__init__("hum", AudioProcess(config, status), log)
        self.volume = config.hum.volume

    def show_token(self, entropy_bits: float) -> None:
        self.process.show_token(entropy_bits)

    def idle(self) -> None:
        self.process.idle()

    def begin_stop(self, fade_seconds: float) -> None:
        self.process.begin_stop(fade_seconds)

    def set_volume(self, volume: float, seconds: float = 0.5) -> None:
        self.volume = volume   # remembered, so a restarted hum comes back at this level
        self.process.set_volume(volume, seconds)

    def apply(self, config: Config) -> None:
        old, self.config = self.config, config
        if config.audio != old.audio:
            log.info("audio settings changed: restarting the hum")
            self.process.stop(old.hum.fade_out_seconds)
            self.process = AudioProcess(config, self.status).start()
        elif config.hum != old.hum:
            self.process.change_room(config)

    def watch(self, now: float) -> None:
        if self.restart_when_due(now):
            return
        process = self.process
        process.flush()
        if process.silent or process.pid is None or process.is_alive():
            return
        if process.exitcode == 0:
            return   # it ended on purpose (no device: the piece is silent)
        self.crashed(now, f"died (exit code {process.exitcode})")

    def _next_process(self) -> AudioProcess:
        process = AudioProcess(self.config, self.status).start()   # the dead one holds nothing
        if self.volume != self.config.hum.volume:
            process.set_volume(self.volume, self.config.hum.fade_in_seconds)
        return process

    def stop(self, fade_seconds: float) -> None:
        self.process.stop(fade_seconds)


def _main(config: Config, commands: mp.Queue, status: mp.Queue, log_level: int) -> None:
    # Ctrl+C reaches the whole process group; the parent decides when the hum fades.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    terminated = []
    signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
    die_with_parent(signal.SIGTERM)   # if the piece dies, still fade out rather than click
    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s: %(message)s")

    from .devices import (DeviceNotFound, choose_output, import_pyo, list_output_devices,
                          quiet_stderr)
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

    priority = _ask_for_priority()   # before pyo starts its audio thread, which inherits it
    pyo = import_pyo()
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
    leaving = []   # rooms fading out after a change, dropped once silent
    status.put(Status("audio", "playing", f"{device.name} ({priority})", time.monotonic()))
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
            hum.set_volume(*value)
        elif name == "room":
            hum.fade_out(value.hum.fade_in_seconds)
            leaving.append((time.monotonic() + value.hum.fade_in_seconds + 0.1, hum))
            hum = Hum(load_preset(value.hum.preset, value.base_dir), value.hum).start()
        elif name == "stop":
            # Logged, as is the close below: a stop that overruns its wait then shows
            # whether the word came late or the close was slow.
            log.info("hum fading out over %.2f s", value)
            hum.fade_out(value)
            time.sleep(value + heard_after(audio))   # the ramp played out, not only computed
            break
        while leaving and leaving[0][0] < time.monotonic():
            leaving.pop(0)[1].stop()
    server.stop()
    time.sleep(0.05)
    server.shutdown()
    log.info("hum closed")
    exit_now(0)   # the room is silent and closed: the piece waits for this process to be gone


def heard_after(audio) -> float:
    """Seconds from pyo computing a sample to the speakers playing it, with a margin.
    pyo runs ahead of what is heard by the stream's buffers, and stopping the stream drops
    them: a margin shorter than those buffers cuts the fade-out before it reaches 0."""
    return 0.05 + 4 * audio.buffer_size / audio.sample_rate


HUM_REALTIME_PRIORITY = 10   # of 1-99: above ordinary work, below the sound server's own


def _ask_for_priority() -> str:
    """The best scheduling this process is allowed without asking for root: real-time
    round-robin where RLIMIT_RTPRIO allows it (root, or a gallery user given `rtprio` in
    limits.conf or LimitRTPRIO= in systemd), else a lower nice where RLIMIT_NICE allows.
    The hum needs 2 % of a core, but every buffer: a busy loop at the same priority can
    delay it past the buffer's deadline."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(HUM_REALTIME_PRIORITY))
        return f"real-time priority {HUM_REALTIME_PRIORITY}"
    except (AttributeError, OSError):
        pass
    for nice in (-10, -5, -1):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
            return f"nice {nice}"
        except OSError:
            continue
    return "ordinary priority: see installation/README.md to give it more"

