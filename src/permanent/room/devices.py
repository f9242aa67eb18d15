"""Audio output devices as PortAudio (inside pyo) sees them, and whether the sound server
behind them answers.

pyo's bundled ALSA looks for plugins in /usr/lib64/alsa-lib; Debian and Ubuntu keep them
in /usr/lib/<multiarch>/alsa-lib, without which pyo cannot reach PulseAudio or PipeWire.
`prepare_audio_environment` points it there before pyo loads.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import glob
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

from ..errors import AudioError

_PLUGIN_DIRS = ["/usr/lib/x86_64-linux-gnu/alsa-lib", "/usr/lib/aarch64-linux-gnu/alsa-lib",
                *glob.glob("/usr/lib/*-linux-gnu*/alsa-lib"), "/usr/lib64/alsa-lib",
                "/usr/lib/alsa-lib"]


def prepare_audio_environment() -> None:
    os.environ.setdefault("PYO_GUI_WX", "0")  # no wxPython banner
    if "ALSA_PLUGIN_DIR" not in os.environ:
        for folder in _PLUGIN_DIRS:
            if os.path.isdir(folder):
                os.environ["ALSA_PLUGIN_DIR"] = folder
                break


def import_pyo():
    """pyo, its environment prepared and its import quiet. The import prints a GUI banner
    on stdout when wxPython is missing, and with PYO_GUI_WX=0 still another when Tkinter
    is missing too (Debian's own Python): noise in a terminal, and in front of
    `permanent bench --json`'s output."""
    prepare_audio_environment()
    with contextlib.redirect_stdout(io.StringIO()):
        import pyo
    return pyo


@contextlib.contextmanager
def quiet_stderr():
    """Silence C-level chatter (ALSA probing every card it knows of) for a moment."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


@dataclass(frozen=True)
class OutputDevice:
    index: int
    name: str
    is_default: bool
    channels: Optional[int] = None   # the most it takes; None where it cannot be read
    sink: Optional[str] = None       # the sound server's sink it plays into, if it does


class _PaDeviceInfo(ctypes.Structure):
    """The head of PortAudio's PaDeviceInfo (portaudio.h), as far as the channel counts."""
    _fields_ = [("structVersion", ctypes.c_int), ("name", ctypes.c_char_p),
                ("hostApi", ctypes.c_int), ("maxInputChannels", ctypes.c_int),
                ("maxOutputChannels", ctypes.c_int)]


def _portaudio(pyo) -> Optional[ctypes.CDLL]:
    """The PortAudio library pyo plays through (its wheel carries its own), so device
    numbers agree with pyo's; None where it cannot be found."""
    package = os.path.dirname(pyo.__file__)
    bundled = sorted(glob.glob(os.path.join(package + ".libs", "libportaudio*")) +
                     glob.glob(os.path.join(package, ".dylibs", "libportaudio*")))
    path = bundled[0] if bundled else ctypes.util.find_library("portaudio")
    if path is None:
        return None
    library = ctypes.CDLL(path)
    library.Pa_GetDeviceInfo.restype = ctypes.POINTER(_PaDeviceInfo)
    return library


def _output_channels(pyo, indexes: list[int]) -> dict[int, Optional[int]]:
    """Each output's channel count, read from PortAudio itself: pyo's own
    `pa_get_output_max_channels` reads the device's record after closing PortAudio, and
    gave 0 for an output that plays (pyo 1.1.0)."""
    library = _portaudio(pyo)
    if library is None or library.Pa_Initialize() != 0:
        return {i: None for i in indexes}
    try:
        count = library.Pa_GetDeviceCount()
        return {i: library.Pa_GetDeviceInfo(i).contents.maxOutputChannels if 0 <= i < count
                else None for i in indexes}
    finally:
        library.Pa_Terminate()


# ALSA's devices that play into the sound server; PortAudio reports 32 channels for them,
# whatever the sink behind them has. `default` is one of them where `pulse` is listed.
_SOUND_SERVER_DEVICES = ("pulse", "pipewire")


def default_sink() -> Optional[tuple[str, int]]:
    """The sound server's default sink and its channel count, from `pactl` (PulseAudio's,
    which PipeWire's pulse server answers too); None where it cannot tell."""
    pactl = shutil.which("pactl")
    if pactl is None:
        return None
    try:
        info, sinks = (json.loads(subprocess.run(
            [pactl, "-f", "json", *what], capture_output=True, text=True, timeout=5,
            check=True).stdout) for what in (["info"], ["list", "sinks"]))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    name = info.get("default_sink_name")
    for sink in sinks:
        found = re.search(r"(\d+)ch", sink.get("sample_specification", ""))
        if sink.get("name") == name and found:
            return name, int(found[1])
    return None


def list_output_devices() -> list[OutputDevice]:
    with quiet_stderr():
        pyo = import_pyo()
        names, indexes = pyo.pa_get_output_devices()
        default = pyo.pa_get_default_output() if indexes else -1
        channels = _output_channels(pyo, indexes) if indexes else {}
    devices = [OutputDevice(i, n, i == default, channels[i]) for n, i in zip(names, indexes)]
    served = set(_SOUND_SERVER_DEVICES) | ({"default"} if {*names} & {*_SOUND_SERVER_DEVICES}
                                           else set())
    if {*names} & served and (sink := default_sink()) is not None:
        devices = [dataclasses.replace(d, channels=sink[1], sink=sink[0])
                   if d.name in served else d for d in devices]
    return devices


def probe_output_devices(timeout: float = 30.0) -> list[OutputDevice]:
    """`list_output_devices` in a child process: a broken ALSA setup can abort() the
    process that asks, and that must never be the one running the piece or the CLI."""
    code = f"from {__name__} import _print_devices_json; _print_devices_json()"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AudioError(f"listing audio devices hung for {timeout:.0f} s; check that the "
                         "sound server (PulseAudio/PipeWire) is responding.") from None
    if done.returncode != 0:
        raise AudioError(f"listing audio devices crashed (exit {done.returncode}); the audio "
                         "setup is broken. Check ALSA_CONFIG_PATH and the sound server.")
    return [OutputDevice(**d) for d in json.loads(done.stdout.strip().splitlines()[-1])]


def _print_devices_json() -> None:
    devices = list_output_devices()
    print(json.dumps([dataclasses.asdict(d) for d in devices]), flush=True)


class DeviceNotFound(AudioError):
    pass


def choose_output(wanted: int | str, devices: list[OutputDevice]) -> OutputDevice | None:
    """The device `audio.device` names; None when there is no output at all."""
    if not devices:
        return None
    if wanted == "default":
        return next((d for d in devices if d.is_default), devices[0])
    if isinstance(wanted, int):
        match = [d for d in devices if d.index == wanted]
    else:
        match = [d for d in devices if str(wanted).lower() in d.name.lower()]
    if not match:
        listing = "; ".join(f"{d.index}: {d.name}" for d in devices)
        raise DeviceNotFound(f"{wanted!r} matches no output device. "
                             f"Outputs here: {listing}. Set audio.device in config.yaml to "
                             "one of these, or to default.")
    return match[0]


class TooFewChannels(AudioError):
    pass


def require_channels(device: OutputDevice, channels: int) -> None:
    """Raise TooFewChannels, naming the output and its count, when it cannot take
    `channels`; an output whose count PortAudio does not tell is given the benefit."""
    if device.channels is None or device.channels >= channels:
        return
    fits = [n for n in (2, 4, 6, 8) if n <= device.channels]
    fix = (f"set audio.channels to {fits[-1]}" if fits else
           "this output cannot take a stereo pair either")
    behind = f", the sound server's sink {device.sink!r}" if device.sink else ""
    other = (f"give the sink {channels} channels or more with the card's profile (in "
             "pavucontrol's Configuration tab, e.g. Analog Surround 4.0)" if device.sink else
             f"choose an output with {channels} or more in audio.device (`permanent "
             "devices` lists each output's channels)")
    raise TooFewChannels(f"is {channels}, but the output {device.name!r} (device "
                         f"{device.index}{behind}) has {device.channels} channel"
                         f"{'s' * (device.channels != 1)}. {fix[0].upper()}{fix[1:]}, or "
                         f"{other}.")


def sound_server_socket() -> str | None:
    """The Unix socket where the user's sound server listens: PulseAudio's, which
    PipeWire's pulse server also answers. None when PULSE_SERVER names only a network
    server, which is not probed."""
    named = os.environ.get("PULSE_SERVER")
    if named:
        for address in named.split():   # a list, tried in turn by PulseAudio's clients
            if address.startswith("unix:"):
                return address[len("unix:"):]
            if address.startswith("/"):
                return address
        return None
    runtime = os.environ.get("PULSE_RUNTIME_PATH") or os.path.join(
        os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}", "pulse")
    return os.path.join(runtime, "native")


def sound_server_answers(path: str | None) -> bool:
    """Whether a sound server accepts a connection at `path`: a connect and a close, cheap
    enough for the main loop to ask twice a second while the hum waits for it."""
    if path is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True
