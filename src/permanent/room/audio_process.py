"""The hum's own process: it starts first, plays through everything, and fades out last.

pyo's audio callback takes the GIL every buffer, and its PortAudio server segfaults on a
machine with no output device; a process of its own keeps both away from the display
and the model. The parent talks to it through a small bounded queue of commands, and
hears back through a pipe when its sound is flowing.

A room loses its sound now and then: the sound server restarts after an update, a device
is unplugged or its sink unloaded. PortAudio then aborts the hum's process, or its stream
stands still, which the hum's own loop notices (`StreamWatch`) and leaves. The supervisor
starts a new hum after its backoff; a new hum that finds no output leaves at once, and
the piece goes on silently, saying so once, until a hum plays again and fades in.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import resource
import signal
import time
from typing import Optional

from ..config import Config
from ..events import Status
from ..lifecycle import (SPAWN, ChildProcess, LatestOfEach, Supervisor, die_with_parent,
                         exit_now)
from .devices import sound_server_answers, sound_server_socket

log = logging.getLogger("permanent.audio")

# How a hum's process says why it left, besides 0 (stopped, or silent from the start).
EXIT_NO_OUTPUT = 3        # a restarted hum found no output to play on
EXIT_STREAM_STOPPED = 4   # its sound stopped flowing (the StreamWatch)
EXIT_TOO_FEW_CHANNELS = 5  # a restarted hum found its output with fewer channels than asked
# PortAudio's ALSA stream asserts, and so aborts the process, when its device goes away.
EXITS_OF_A_GONE_DEVICE = (EXIT_NO_OUTPUT, -signal.SIGABRT)
# The causes the log names.
SERVER_GONE = "the sound server went away"
DEVICE_GONE = "the output device is gone"
STREAM_STALLED = "the output stopped taking its sound"   # a frozen server, a hung device
# A sound server that came back on a stereo profile, say, where the ring was.
TOO_FEW_CHANNELS = "the output now has fewer channels than audio.channels asks"


class AudioProcess(ChildProcess):
    """The parent's handle on the hum. Every method returns at once and never raises."""

    def __init__(self, config: Config, status: mp.Queue, restarted: bool = False,
                 edited: bool = False):
        self.config = config
        self.restarted = restarted   # after a lost output: silent about finding none
        self._commands: mp.Queue = SPAWN.Queue(maxsize=64)
        # Fan targets are thinned to the newest; a volume, a room or a stop is never lost.
        self._outbox = LatestOfEach(self._commands)
        self._reports, self._reports_writer = SPAWN.Pipe(duplex=False)
        # When the hum's sound last moved (monotonic; 0 before it flows), for /health.
        self.sound_at = SPAWN.Value("d", 0.0, lock=False)
        super().__init__(_main, "permanent-hum",
                         (config, self._commands, status, logging.getLogger().level,
                          self._reports_writer, restarted, self.sound_at, edited),
                         queues=(self._commands,))
        self.silent = not config.audio.enabled
        self.started_at: Optional[float] = None
        self.playing_on: Optional[str] = None   # the output, once its sound flows

    def start(self) -> "AudioProcess":
        if not self.silent:
            super().start()
            self.started_at = time.monotonic()
        self._reports_writer.close()   # the child holds its own end
        return self

    def heard_playing(self) -> Optional[str]:
        """The output the hum's sound began to flow on, the first time it is asked after
        that happened; else None."""
        if self.playing_on is not None or self._reports.closed:
            return None
        try:
            if not self._reports.poll():
                return None
            kind, where = self._reports.recv()
        except (EOFError, OSError):   # it left without a word
            return None
        if kind == "playing":
            self.playing_on = where
            return where
        return None

    def kill(self) -> None:
        """End a hum that hangs; it holds nothing that needs a fade."""
        self._process.kill()

    def close_queues(self) -> None:
        super().close_queues()
        self._reports.close()

    def _listening(self) -> bool:
        return not self.silent and self.is_alive()

    def _send(self, name: str, value=0.0) -> None:
        if self._listening():
            self._outbox.send(name, value)

    def flush(self) -> None:
        """Send what waited for room in the queue (the supervisor calls this every frame)."""
        if self._listening():
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
        if self._listening():
            self._outbox.flush(timeout=0.2)   # the hum reads its queue at once
        self._process.join(timeout=fade_seconds + heard_after(self.config.audio) + 0.5)
        if self.is_alive():
            log.warning("the hum did not stop after its fade; ending it")
            self._process.kill()
            self._process.join(timeout=1.0)
        self.close_queues()


class HumSupervisor(Supervisor):
    """Keeps the hum playing: an audio process that dies is started again (fading in).

    When the output goes (the sound server or the device), the piece runs silently and
    says so once; new hums are tried at the backoff's pace, and at once when the sound
    server answers again, until one plays. Its return is logged with the time it took."""

    process: AudioProcess

    # A restarted hum that neither plays nor leaves by then hangs (a frozen sound server
    # can hold PortAudio's listing of devices): it is ended and tried again.
    RESTART_LIMIT_SECONDS = 30.0
    SERVER_PROBE_SECONDS = 0.5

    def __init__(self, config: Config, status: mp.Queue):
        self.config, self.status = config, status
        super().__init__("hum", AudioProcess(config, status), log)
        self.volume = config.hum.volume
        self._server = sound_server_socket()
        self._server_answered = False   # while the hum played: so its going names a cause
        self._silent_since: Optional[float] = None   # when the sound stopped, until back
        self._said_silent = False       # the outage's one line
        self._said_channels = False     # ... and one more if the output comes back too small
        self._waiting_for_server = False
        self._next_probe = 0.0
        self.dropouts = 0   # times the room lost the hum's sound (its output went, or it died)

    def show_token(self, entropy_bits: float) -> None:
        self.process.show_token(entropy_bits)

    def idle(self) -> None:
        self.process.idle()

    def begin_stop(self, fade_seconds: float) -> None:
        self.process.begin_stop(fade_seconds)

    def set_volume(self, volume: float, seconds: float = 0.5) -> None:
        self.volume = volume   # remembered, so a restarted hum comes back at this level
        self.process.set_volume(volume, seconds)

    def sound_at(self) -> Optional[float]:
        """When the hum's sound last moved (monotonic), None while there is none."""
        process = self.process
        if process.silent or not process.is_alive() or not process.sound_at.value:
            return None
        return process.sound_at.value

    def apply(self, config: Config) -> None:
        old, self.config = self.config, config
        if config.audio != old.audio:
            log.info("audio settings changed: restarting the hum")
            if self.restart_pending:
                return   # the hum waiting to be restarted starts with them
            self.process.stop(old.hum.fade_out_seconds)
            self.process = AudioProcess(config, self.status,
                                        restarted=self._silent_since is not None,
                                        edited=True).start()
        elif config.hum != old.hum:
            self.process.change_room(config)

    def watch(self, now: float) -> None:
        if self.restart_pending:
            self._hurry_when_the_server_is_back(now)
        if self.restart_when_due(now):
            return
        process = self.process
        process.flush()
        if process.silent or process.pid is None:
            return
        if process.is_alive():
            self._listen(process, now)
            return
        if process.exitcode == 0:
            return   # it ended on purpose (no device at the start: the piece is silent)
        self._lost(process, now)

    def _listen(self, process: AudioProcess, now: float) -> None:
        if (where := process.heard_playing()) is not None:
            self._server_answered = sound_server_answers(self._server)
            if self._silent_since is not None:
                log.info("the hum is back on %s after %.1f s", where, now - self._silent_since)
                self._silent_since, self._said_silent = None, False
                self._said_channels = False
        elif (process.restarted and process.playing_on is None
              and now - process.started_at > self.RESTART_LIMIT_SECONDS):
            log.debug("the restarted hum neither played nor left in %.0f s; ending it",
                      self.RESTART_LIMIT_SECONDS)
            process.kill()   # seen dead at the next frame, and tried again

    def _lost(self, process: AudioProcess, now: float) -> None:
        code = process.exitcode
        process.close_queues()
        cause = self._cause(code)
        self._waiting_for_server = cause == SERVER_GONE
        if self._silent_since is None:   # it was playing, or starting for the first time
            self._silent_since = now
            self.dropouts += 1
            self._said_silent = cause is not None
            what = f"{'stopped' if code == EXIT_STREAM_STOPPED else 'died'} (exit code {code})"
            if cause is not None:
                what += f": {cause}, so the room is silent until the hum is back"
            self.crashed(now, what)
            return
        if not self._said_silent or (cause == TOO_FEW_CHANNELS and not self._said_channels):
            log.warning("%s: the room is silent until the hum is back, tried again at the "
                        "backoff's pace", cause or f"the restarted hum died (exit code {code})")
            self._said_silent = True
            self._said_channels = cause == TOO_FEW_CHANNELS
        self.crashed(now, f"found no output (exit code {code})", quiet=True)

    def _cause(self, exit_code: int) -> Optional[str]:
        """Why the hum lost its output, as far as can be told from here; None for a crash
        of its own."""
        if exit_code == EXIT_TOO_FEW_CHANNELS:
            return TOO_FEW_CHANNELS
        if self._server_answered and not sound_server_answers(self._server):
            return SERVER_GONE
        if exit_code in EXITS_OF_A_GONE_DEVICE:
            return DEVICE_GONE
        if exit_code == EXIT_STREAM_STOPPED:
            return STREAM_STALLED
        return None

    def _hurry_when_the_server_is_back(self, now: float) -> None:
        """A sound server that went away is probed while the restart waits: once it
        answers, a new hum starts at once rather than after the rest of the wait."""
        if not self._waiting_for_server or now < self._next_probe:
            return
        self._next_probe = now + self.SERVER_PROBE_SECONDS
        if sound_server_answers(self._server):
            self._waiting_for_server = False
            log.debug("the sound server answers again")
            self.restart_now(now)

    def _next_process(self) -> AudioProcess:
        process = AudioProcess(self.config, self.status, restarted=True).start()
        if self.volume != self.config.hum.volume:
            process.set_volume(self.volume, self.config.hum.fade_in_seconds)
        return process

    def stop(self, fade_seconds: float) -> None:
        self.process.stop(fade_seconds)


def _main(config: Config, commands: mp.Queue, status: mp.Queue, log_level: int,
          reports, restarted: bool, sound_at, edited: bool = False) -> None:
    # Ctrl+C reaches the whole process group; the parent decides when the hum fades.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    terminated = []
    signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
    die_with_parent(signal.SIGTERM)   # if the piece dies, still fade out rather than click
    # PortAudio aborts this process when its device goes: expected, and tried again, so
    # a core file each time would only fill the disk (or keep systemd-coredump busy).
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    logging.basicConfig(level=log_level, format="%(asctime)s %(name)s: %(message)s")
    # Before pyo starts its audio thread, which inherits it; and before pyo is imported
    # and the devices listed, which a hum returning to a busy machine waits on.
    priority = _ask_for_priority()

    from .preset import load_preset

    preset = load_preset(config.hum.preset, config.base_dir)
    opened = _open_output(config, status, restarted, priority, edited)
    if opened is None:
        if restarted:
            exit_now(EXIT_NO_OUTPUT)   # the supervisor has said once that the room is silent
        return
    server, where = opened
    from .hum import Hum
    from .stream_watch import StreamWatch

    audio = config.audio
    hum = Hum(preset, config.hum, audio.channels, audio.lead_speaker).start()
    leaving = []   # rooms fading out after a change, dropped once silent
    if not restarted:   # a restarted hum's return is the supervisor's to tell
        status.put(Status("audio", "playing", where, time.monotonic()))
    flow = StreamWatch(audio.sample_rate, time.monotonic())
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
            hum = Hum(load_preset(value.hum.preset, value.base_dir), value.hum,
                      audio.channels, audio.lead_speaker).start()
        elif name == "stop":
            # Logged, as is the close below: a stop that overruns its wait then shows
            # whether the word came late or the close was slow.
            log.info("hum fading out over %.2f s", value)
            hum.fade_out(value)
            time.sleep(value + heard_after(audio))   # the ramp played out, not only computed
            break
        while leaving and leaving[0][0] < time.monotonic():
            leaving.pop(0)[1].stop()
        heard = flow.observe(server.getCurrentTimeInSamples(), time.monotonic())
        if flow.flowing:
            sound_at.value = flow.moved_at
        if heard == "flowing":
            _report(reports, ("playing", where))
        elif heard == "stopped":
            log.debug("the hum's sound %s", "stopped flowing" if flow.flowing
                      else "never began to flow")
            # Not stopped through pyo: PortAudio may wait forever on a stream that stands
            # still. Leaving closes it, and the supervisor starts a new hum.
            exit_now(EXIT_STREAM_STOPPED)
    server.stop()
    time.sleep(0.05)
    server.shutdown()
    log.info("hum closed")
    exit_now(0)   # the room is silent and closed: the piece waits for this process to be gone


def _open_output(config: Config, status: mp.Queue, restarted: bool, priority: str,
                 edited: bool = False):
    """The pyo server, booted and started on the chosen output, and the words naming that
    output; None when there is none to play on. The first hum of a launch tells the piece
    why (the piece then runs silently, or stops for a device that does not exist); a
    restarted one leaves that to its supervisor."""
    from .devices import (DeviceNotFound, TooFewChannels, choose_output, import_pyo,
                          list_output_devices, quiet_stderr, require_channels)

    try:
        device = choose_output(config.audio.device, list_output_devices())
        if device is not None:
            require_channels(device, config.audio.channels)
    except TooFewChannels as e:
        # At launch a mistake to stop for; after a live edit the piece goes on silently,
        # and the next edit that fits brings the hum back; after a lost output, the
        # supervisor names it and tries again at its pace.
        if restarted:
            exit_now(EXIT_TOO_FEW_CHANNELS)
        status.put(Status("audio", "silent" if edited else "error",
                          f"{config.where('audio.channels')}: {e}", time.monotonic()))
        return None
    except DeviceNotFound as e:
        if not restarted:
            status.put(Status("audio", "error", str(e), time.monotonic()))
        return None   # restarted: the named device is unplugged, for now
    if device is None:
        if not restarted:
            status.put(Status("audio", "silent",
                              "no audio output device found, so the piece runs silently. "
                              "Connect speakers or start PulseAudio/PipeWire, then list "
                              "outputs with `permanent devices`.", time.monotonic()))
        return None

    pyo = import_pyo()
    audio = config.audio
    with quiet_stderr():
        server = pyo.Server(sr=audio.sample_rate, nchnls=audio.channels, buffersize=audio.buffer_size,
                            duplex=0, audio="portaudio", winhost="default")
        server.setOutputDevice(device.index)
        server.deactivateMidi()   # the hum listens to nothing
        server.boot()
    if not server.getIsBooted():
        if not restarted:
            status.put(Status("audio", "silent", f"the audio output {device.name!r} would not "
                              "start, so the piece runs silently. Check `permanent devices`.",
                              time.monotonic()))
        return None
    server.start()
    return server, f"{device.name} ({priority})"


def _report(reports, message: tuple) -> None:
    try:
        reports.send(message)
    except OSError:   # the supervisor has moved on from this hum
        pass


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

