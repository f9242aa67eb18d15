"""The gallery's knobs: every setting, its unit, its default, and its bounds.

Defaults live here; `config.yaml` shows the ones people change. Loading validates
everything up front (see `schema`), so a typo stops the program before anything starts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union
from urllib.parse import urlsplit

from .schema import bounded, load_yaml_file

Colour = tuple[int, int, int]


# The formats of two kinds of value, here so that checking a setting needs no role:
# the screen reads chords with them, the opening hours times of day.

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_time(text: str) -> dt.time:
    """'10:00' or '18:30:15' -> a time of day; ValueError with a readable message if not."""
    try:
        parts = [int(p) for p in text.split(":")]
        if len(parts) not in (2, 3):
            raise ValueError
        return dt.time(*parts)
    except (ValueError, TypeError):
        raise ValueError(f"{text!r} is not a time of day like 10:00 or 18:30") from None


_MODIFIERS = {"ctrl", "shift", "alt", "meta"}


@dataclass(frozen=True)
class Chord:
    modifiers: frozenset[str]
    key: str

    def matches(self, key_name: str, held: set[str]) -> bool:
        return key_name.lower() == self.key and self.modifiers <= held


def parse_chord(text: str, check_only: bool = False):
    """Return a Chord, or with check_only the problem as a sentence (None when fine)."""
    parts = [p.strip().lower() for p in text.split("+") if p.strip()]
    problem = None
    if not parts:
        problem = "is empty; write keys joined by '+', e.g. ctrl+shift+q."
    elif parts[-1] in _MODIFIERS:
        problem = f"ends with the modifier '{parts[-1]}'; end it with a key, e.g. ctrl+shift+q."
    elif unknown := [p for p in parts[:-1] if p not in _MODIFIERS]:
        problem = (f"'{unknown[0]}' is not a modifier; use ctrl, shift, alt or meta "
                   "before the final key.")
    if check_only:
        return problem
    if problem:
        raise ValueError(f"quit chord {text!r} {problem}")
    return Chord(frozenset(parts[:-1]), parts[-1])


def credentials_masked(text: str, url: Optional[str]) -> str:
    """`text` with the user and password written into `url` masked wherever they appear:
    http://user:pass@host/v1 is shown as http://user:***@host/v1, so the password reaches
    no log, screen or message. A user alone may be a token, so it is masked too."""
    if not url:
        return text
    authority = urlsplit(url).netloc
    userinfo, at, _ = authority.rpartition("@")
    if not at:
        return text
    user, colon, _ = userinfo.partition(":")
    return text.replace(f"{userinfo}@", f"{user}:***@" if colon else "***@")


def masked_url(url: str) -> str:
    """`url` as it may be shown: its password (or a user alone) masked."""
    return credentials_masked(url, url)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "embedded"             # "embedded", a Hugging Face id in the local cache, or a folder
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    threads: int = bounded(0, ge=0, le=256)  # torch CPU threads; 0 = one fewer than the cores
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    runtime: Literal["auto", "transformers"] = "auto"   # auto: the compact decoder when it fits
    weights: Literal["auto", "float", "int8", "int4"] = "auto"  # how a CPU holds the weights
    trust_remote_code: bool = False
    # An OpenAI-compatible inference server (vLLM, llama.cpp's server, Ollama) writing instead.
    server_url: Optional[str] = None         # e.g. http://gpu-box:8000/v1; None = the model here
    server_model: Optional[str] = None       # the name the server knows its model by
    server_api_key_env: Optional[str] = None  # the environment variable holding its key
    server_top_logprobs: int = bounded(20, ge=1, le=100)  # alternatives per token, for entropy
    fallback: Literal["embedded", "wait"] = "embedded"  # while the server cannot be reached

    def validate(self):
        if self.server_url is not None:
            if "@" in self.server_url.partition("://")[2].replace(
                    urlsplit(self.server_url).netloc, "", 1):
                # An unescaped / ? or # in a password ends the host early: the rest of the
                # password would be read as a path, and shown unmasked. Not repeated here.
                return "server_url", ("has an @ after the end of its host; write a /, ?, # "
                                      "or @ in the user or password as %2F, %3F, %23 or %40.")
            if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.server_url):
                shown = masked_url(self.server_url)
                got = (f"got {shown!r}" if "@" not in self.server_url or shown != self.server_url
                       else "not repeated here: it may hold a password")
                return "server_url", ("must be an http:// or https:// address such as "
                                      f"http://gpu-box:8000/v1 ({got}).")
            if not (self.server_model or "").strip():
                return "server_model", ("is needed with server_url: the model name the "
                                        "server lists at /v1/models.")
        if self.server_api_key_env is not None and \
                not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.server_api_key_env):
            return "server_api_key_env", ("must be the name of an environment variable "
                                          "(such as PERMANENT_API_KEY), never the key itself.")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            return "device", f"must be auto, cpu, cuda, cuda:N or mps (got {self.device!r})."
        if not self.name.strip():
            return "name", "is empty; use 'embedded', a model id or a folder."
        return None


@dataclass(frozen=True)
class TextConfig:
    voice: str = "builtin"                   # builtin | none | a folder from `permanent voice train`
    system_prompt: Optional[str] = None      # None = the piece's own voice (see `voice`)
    openings: Optional[list[str]] = None     # None = the piece's own; [] = none, the model begins
    exemplar_turns: int = bounded(0, ge=0, le=8)   # corpus passages given as earlier replies
    temperature: float = bounded(0.7, gt=0.0, le=5.0)
    top_p: float = bounded(0.9, gt=0.0, le=1.0)
    top_k: int = bounded(50, ge=0, le=100_000)         # 0 = no top-k cut
    repetition_penalty: float = bounded(1.1, ge=1.0, le=3.0)
    min_p: float = bounded(0.0, ge=0.0, le=1.0)         # drop tokens below min_p x the likeliest's
    avoid: Optional[list[str]] = None        # words the voice steers away from; None = the piece's
    avoid_strength: float = bounded(6.0, ge=0.0, le=100.0)  # logits taken from each; 0 = off
    seed: Optional[int] = None               # None = a new seed every run
    min_tokens: int = bounded(30, ge=1, le=100_000)    # a pass ends at the first sentence end after this
    max_tokens: int = bounded(100, ge=1, le=100_000)   # ... and never runs past this
    drafts: int = bounded(8, ge=1, le=8)     # tries at each sentence (or pass); the likeliest shown
    draft_by: Literal["sentence", "pass"] = "sentence"

    def validate(self):
        if self.min_tokens > self.max_tokens:
            return "min_tokens", (f"is {self.min_tokens}, larger than max_tokens "
                                  f"({self.max_tokens}); make it smaller.")
        if self.openings and not any(o.strip() for o in self.openings):
            return "openings", ("holds only empty openings; write [] for passes the model "
                                "begins itself, or remove the key for the piece's own.")
        return None


@dataclass(frozen=True)
class PacingConfig:
    tokens_per_second: float = bounded(4.5, gt=0.0, le=200.0)
    jitter: float = bounded(0.35, ge=0.0, le=1.0)      # +- fraction of the base interval
    comma_pause_seconds: float = bounded(0.35, ge=0.0, le=60.0)
    sentence_pause_seconds: float = bounded(1.1, ge=0.0, le=60.0)
    line_break_pause_seconds: float = bounded(1.6, ge=0.0, le=60.0)
    uncertainty_pause_seconds_per_bit: float = bounded(0.06, ge=0.0, le=10.0)
    uncertainty_threshold_bits: float = bounded(4.0, ge=0.0, le=20.0)
    hold_seconds: float = bounded(8.0, ge=0.0, le=3600.0)
    fade_seconds: float = bounded(5.0, ge=0.0, le=600.0)
    gap_seconds: float = bounded(3.0, ge=0.0, le=3600.0)


@dataclass(frozen=True)
class DisplayConfig:
    fullscreen: bool = True
    monitor: int = bounded(0, ge=0, le=16)
    window_size: tuple[int, int] = (1280, 720)       # pixels, when not fullscreen
    font: Optional[str] = None                       # None = the piece's own (screen/fonts)
    font_size: float = bounded(0.06, gt=0.0, le=0.5)  # fraction of the page's shorter side
    line_spacing: float = bounded(1.5, ge=0.8, le=4.0)
    margin: float = bounded(0.09, ge=0.0, le=0.4)      # fraction of the shorter side, every side
    text_colour: Colour = (208, 204, 194)
    background_colour: Colour = (0, 0, 0)
    scroll_seconds: float = bounded(0.9, ge=0.0, le=10.0)
    fps: int = bounded(60, ge=5, le=240)
    quit_chord: str = "ctrl+shift+q"                 # in fullscreen; Esc quits a window
    rotation: Literal[0, 90, 180, 270] = 0           # degrees the screen is turned clockwise

    def validate(self):
        for key in ("text_colour", "background_colour"):
            if not all(0 <= c <= 255 for c in getattr(self, key)):
                return key, "each channel must be from 0 to 255."
        if min(self.window_size) < 64:
            return "window_size", "must be at least 64 x 64 pixels."
        problem = parse_chord(self.quit_chord, check_only=True)
        if problem:
            return "quit_chord", problem
        return None


@dataclass(frozen=True)
class HumConfig:
    preset: str = "closet"                 # a file name in sounds/ (without .yaml) or a path
    volume: float = bounded(0.5, ge=0.0, le=1.0)
    fade_in_seconds: float = bounded(3.0, ge=0.05, le=60.0)
    fade_out_seconds: float = bounded(0.1, ge=0.05, le=10.0)  # SIGTERM: all gone within 0.5 s
    entropy_low_bits: float = bounded(1.0, ge=0.0, le=17.0)    # at or below: fans at their low RPM
    entropy_high_bits: float = bounded(6.0, ge=0.0, le=17.0)   # at or above: fans at their high RPM
    spin_up_seconds: float = bounded(0.7, ge=0.001, le=60.0)   # fan inertia, time constant up
    spin_down_seconds: float = bounded(2.0, ge=0.001, le=60.0)  # ... and down

    def validate(self):
        if self.entropy_low_bits >= self.entropy_high_bits:
            return "entropy_low_bits", (f"must be below entropy_high_bits "
                                        f"({self.entropy_high_bits}).")
        return None


@dataclass(frozen=True)
class AudioConfig:
    enabled: bool = True
    device: Union[int, str] = "default"   # "default", an index or a name from `permanent devices`
    sample_rate: Literal[44100, 48000, 96000] = 48000
    buffer_size: int = bounded(2048, ge=32, le=16384)  # frames per buffer; larger is safer
    channels: Literal[2, 4, 6, 8] = 2      # speakers: a stereo pair, or a ring of 4, 6 or 8
    # The speaker (from 1) the lead fan sounds from, or between two (2.5); None: the preset's.
    lead_speaker: Optional[float] = bounded(None, ge=1.0, le=9.0)

    def validate(self):
        if self.lead_speaker is not None:
            # A pair is a line from 1 to 2; a ring closes, so past the last is towards 1.
            last = 2.0 if self.channels == 2 else self.channels + 0.5
            if self.lead_speaker > last:
                return "lead_speaker", (f"is {self.lead_speaker}, but with channels: "
                                        f"{self.channels} the speakers are 1 to "
                                        f"{self.channels}; use a value from 1 to {last:g}.")
        return None


@dataclass(frozen=True)
class HoursConfig:
    enabled: bool = False                 # false: open around the clock
    days: list[str] = field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"])
    opens: str = "10:00"                  # HH:MM (or HH:MM:SS), the machine's time zone
    closes: str = "18:00"                 # before `opens`: open past midnight
    closed_volume: float = bounded(0.0, ge=0.0, le=1.0)   # the hum's level while closed
    transition_seconds: float = bounded(8.0, ge=0.0, le=600.0)  # fade at opening and closing

    def validate(self):
        for key in ("opens", "closes"):
            try:
                parse_time(getattr(self, key))
            except ValueError as e:
                return key, f"{e}."
        unknown = [d for d in self.days if d not in DAYS]
        if unknown:
            return "days", f"{unknown[0]!r} is not a day; use {', '.join(DAYS)}."
        return None


@dataclass(frozen=True)
class CareConfig:
    hang_seconds: float = bounded(30.0, ge=2.0, le=3600.0)  # a model silent this long is restarted
    watch_config: bool = True             # apply edits to this file at the next pass
    log_file: Optional[str] = None        # None = the user's log folder
    log_megabytes: float = bounded(5.0, gt=0.0, le=1000.0)  # per log file, 3 kept
    archive: bool = True                  # keep every finished pass
    archive_file: Optional[str] = None    # None = the user's data folder
    archive_megabytes: float = bounded(20.0, gt=0.0, le=100000.0)  # per archive file, 5 kept


@dataclass(frozen=True)
class ScreensaverConfig:
    audio: bool = True                   # false: a silent screensaver
    volume: float = bounded(0.3, ge=0.0, le=1.0)
    fade_in_seconds: float = bounded(0.8, ge=0.05, le=1.0)    # the hum is there within 1 s
    fade_out_seconds: float = bounded(0.1, ge=0.05, le=0.3)  # XScreenSaver starts the next hack at once
    first_pass_tokens: int = bounded(50, ge=1, le=100_000)    # a short first pass
    wake_distance_pixels: int = bounded(12, ge=1, le=10_000)  # standalone: mouse travel that wakes
    wake_grace_seconds: float = bounded(0.6, ge=0.0, le=10.0)  # standalone: input ignored at first


def parse_endpoint(text: str) -> tuple[str, int]:
    """'192.168.1.20:9000' or '[::1]:9000' -> (host, port); ValueError naming the fix."""
    host, colon, port = str(text).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host.strip() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not host:port, such as 192.168.1.20:9000 "
                         "(a port from 1 to 65535)")
    return host, int(port)


LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach an address bound to `host`."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class OscConfig:
    send_to: list[str] = field(default_factory=list)  # host:port receivers; empty = no OSC out
    max_messages_per_second: float = bounded(100.0, gt=0.0, le=10_000.0)  # beyond it, dropped
    listen: Optional[str] = None           # host:port for OSC in, e.g. 0.0.0.0:9001; null = off
    allow_from: list[str] = field(default_factory=lambda: ["127.0.0.1"])  # senders obeyed
    volume_glide_seconds: float = bounded(0.5, ge=0.0, le=60.0)  # /permanent/volume glides this long

    def validate(self):
        for key, values in (("send_to", self.send_to), ("listen", [self.listen] if self.listen else [])):
            for value in values:
                try:
                    parse_endpoint(value)
                except ValueError as e:
                    return key, f"{e}."
        for sender in self.allow_from:
            try:
                ipaddress.ip_address(sender)
            except ValueError:
                return "allow_from", (f"{sender!r} is not an IP address; list the senders' "
                                      "addresses, such as 192.168.1.30.")
        return None


@dataclass(frozen=True)
class StatusConfig:
    enabled: bool = False                  # the status page, /health and /metrics
    address: str = "127.0.0.1"             # where it listens; off loopback a token is needed
    port: int = bounded(8642, ge=1, le=65535)
    token_env: Optional[str] = None        # the environment variable holding the page's token
    thumbnail_seconds: float = bounded(5.0, ge=1.0, le=600.0)  # the last frame's picture, at most this often
    max_clients: int = bounded(8, ge=2, le=64)      # connections served at once; more are closed
    request_seconds: float = bounded(5.0, ge=0.5, le=60.0)  # the longest a request may take

    def validate(self):
        if self.token_env is not None and not _ENV_NAME.fullmatch(self.token_env):
            return "token_env", ("must be the name of an environment variable (such as "
                                 "PERMANENT_STATUS_TOKEN), never the token itself.")
        if self.enabled and not is_loopback(self.address) and self.token_env is None:
            return "address", (f"is {self.address!r}, which other machines can reach: set "
                               "status.token_env to the environment variable holding a "
                               "token, or listen on 127.0.0.1.")
        return None


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    text: TextConfig = field(default_factory=TextConfig)
    pacing: PacingConfig = field(default_factory=PacingConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    hum: HumConfig = field(default_factory=HumConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    hours: HoursConfig = field(default_factory=HoursConfig)
    care: CareConfig = field(default_factory=CareConfig)
    screensaver: ScreensaverConfig = field(default_factory=ScreensaverConfig)
    osc: OscConfig = field(default_factory=OscConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    # Where relative paths (presets, fonts, model folders) are resolved from.
    base_dir: Path = field(default=Path("."), metadata={"yaml": False})
    source: str = field(default="built-in defaults", metadata={"yaml": False})
    key_lines: dict = field(default_factory=dict, metadata={"yaml": False}, compare=False)

    def where(self, key: str) -> str:
        """'config.yaml, line 12: key' for messages about a value that loaded but won't work."""
        line = self.key_lines.get(key)
        return f"{self.source}, line {line}: {key}" if line else f"{self.source}: {key}"

    def replace(self, **sections) -> "Config":
        return dataclasses.replace(self, **sections)

    def as_screensaver(self) -> "Config":
        """These settings with the `screensaver:` section laid over them."""
        saver = self.screensaver
        return self.replace(
            audio=dataclasses.replace(self.audio, enabled=self.audio.enabled and saver.audio),
            hum=dataclasses.replace(self.hum, volume=saver.volume,
                                    fade_in_seconds=min(self.hum.fade_in_seconds,
                                                        saver.fade_in_seconds),
                                    fade_out_seconds=saver.fade_out_seconds),
            care=dataclasses.replace(self.care, watch_config=False),
            # A desktop's screensaver, not a gallery's piece: it listens on no port.
            osc=OscConfig(), status=dataclasses.replace(self.status, enabled=False))


def load_config(path: Path | str) -> Config:
    path = Path(path)
    lines: dict[str, int] = {}
    config = load_yaml_file(Config, path, lines)
    return dataclasses.replace(config, base_dir=path.resolve().parent, source=str(path),
                               key_lines=lines)
