"""Sound presets: a server room described as data (one YAML file per room in `sounds/`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from ..config import HumConfig
from ..errors import ConfigError
from .fans import blade_pass_hz, rpm_for_speed, speed_from_entropy
from ..schema import bounded, load_yaml_file


@dataclass(frozen=True)
class FanSpeeds:
    idle: float = bounded(1800.0, gt=0.0, le=30000.0)   # RPM between passes
    low: float = bounded(2200.0, gt=0.0, le=30000.0)    # RPM for a near-certain token
    high: float = bounded(3300.0, gt=0.0, le=30000.0)   # RPM for a very uncertain token

    def validate(self):
        if self.low >= self.high:
            return "low", f"must be below high ({self.high} RPM)."
        return None


@dataclass(frozen=True)
class Fan:
    blades: int = bounded(7, ge=2, le=32)
    detune: float = bounded(1.0, ge=0.5, le=2.0)      # speed ratio to the controller's RPM
    level: float = bounded(0.1, ge=0.0, le=1.0)
    # Where it sounds (room/speakers.py): on a stereo pair, 0 left to 1 right; on a ring
    # of more speakers, a speaker's number or a point between two (2.5). None: spread.
    pan: Optional[float] = bounded(None, ge=0.0, le=1.0)
    speaker: Optional[float] = bounded(None, ge=1.0, le=9.0)
    harmonics: list[float] = field(default_factory=lambda: [1.0, 0.35, 0.12])
    flutter: float = bounded(0.15, ge=0.0, le=1.0)     # depth of turbulent amplitude wobble


@dataclass(frozen=True)
class Airflow:
    level: float = bounded(0.2, ge=0.0, le=1.0)
    cutoff_hz: float = bounded(900.0, ge=20.0, le=20000.0)   # noise colour at idle speed
    cutoff_follows: float = bounded(1.5, ge=0.0, le=4.0)     # cutoff ~ (rpm / idle) ** this
    hiss_level: float = bounded(0.03, ge=0.0, le=1.0)        # the thin high band of moving air
    hiss_hz: float = bounded(4500.0, ge=200.0, le=20000.0)


@dataclass(frozen=True)
class Mains:
    hz: Literal[50, 60] = 50
    level: float = bounded(0.04, ge=0.0, le=1.0)
    harmonics: list[float] = field(default_factory=lambda: [1.0, 0.7, 0.25])


@dataclass(frozen=True)
class Room:
    size: float = bounded(0.5, ge=0.0, le=1.0)
    damping: float = bounded(0.6, ge=0.0, le=1.0)
    mix: float = bounded(0.25, ge=0.0, le=1.0)


@dataclass(frozen=True)
class Preset:
    description: str = ""
    rpm: FanSpeeds = field(default_factory=FanSpeeds)
    speakers: int = bounded(4, ge=3, le=8)   # the ring the fans' `speaker` numbers are for
    fans: list[Fan] = field(default_factory=lambda: [Fan()])
    airflow: Airflow = field(default_factory=Airflow)
    mains: Mains = field(default_factory=Mains)
    room: Room = field(default_factory=Room)
    limiter_db: float = bounded(-3.0, ge=-40.0, le=0.0)   # ceiling of the soft limiter

    def validate(self):
        if not self.fans:
            return "fans", "needs at least one fan."
        for key in ("pan", "speaker"):
            given = [getattr(fan, key) is not None for fan in self.fans]
            if any(given) and not all(given):
                return "fans", (f"fans[{given.index(not given[0])}] has no {key} while "
                                f"fans[0] {'has' if given[0] else 'has none'}: give every "
                                f"fan a {key}, or none (then they spread evenly).")
        beyond = [i for i, fan in enumerate(self.fans)
                  if fan.speaker is not None and fan.speaker >= self.speakers + 1]
        if beyond:
            return "fans", (f"fans[{beyond[0]}].speaker is {self.fans[beyond[0]].speaker}, "
                            f"past the last of the preset's {self.speakers} speakers; use "
                            f"1 up to {self.speakers} (or between, e.g. {self.speakers}.5 "
                            "for between the last and the first), or raise speakers.")
        return None

    @property
    def lead(self) -> Fan:
        """The first fan: the one whose tone the piece tracks and the tests measure."""
        return self.fans[0]

    def lead_blade_pass_hz(self, rpm: float) -> float:
        return blade_pass_hz(rpm * self.lead.detune, self.lead.blades)

    def rpm_for_entropy(self, bits: float, settings: HumConfig) -> float:
        """The fan controller: the RPM a token of `bits` entropy asks for."""
        speed = speed_from_entropy(bits, settings.entropy_low_bits, settings.entropy_high_bits)
        return rpm_for_speed(speed, self.rpm.low, self.rpm.high)


def _search_dirs(base_dir: Path) -> list[Path]:
    package = Path(__file__).resolve().parent.parent   # permanent/, where a wheel puts sounds/
    return [base_dir / "sounds", package / "sounds", package.parent.parent / "sounds"]


def find_preset(name: str, base_dir: Path = Path(".")) -> Path:
    candidate = Path(name).expanduser()
    if candidate.suffix in (".yaml", ".yml"):
        path = candidate if candidate.is_absolute() else base_dir / candidate
        if path.is_file():
            return path
        raise ConfigError(f"the preset file {path} does not exist. "
                          f"Use a name from {', '.join(available_presets(base_dir))} or a path.")
    for folder in _search_dirs(base_dir):
        path = folder / f"{name}.yaml"
        if path.is_file():
            return path
    raise ConfigError(f"there is no preset called {name!r}. "
                      f"Available: {', '.join(available_presets(base_dir)) or 'none found'}.")


def available_presets(base_dir: Path = Path(".")) -> list[str]:
    names = {p.stem for d in _search_dirs(base_dir) if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def load_preset(name: str, base_dir: Path = Path(".")) -> Preset:
    return load_yaml_file(Preset, find_preset(name, base_dir))
