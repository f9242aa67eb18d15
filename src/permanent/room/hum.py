"""The hum: a server room synthesized with pyo.

    fans ──┐  blade-pass tone and harmonics per fan, slightly detuned so they beat
    air  ──┼─ Mix ─ Freeverb (the room) ─ Compress (soft limiter) ─ master fade ─ out
    mains ─┘  50/60 Hz and its harmonics

Every control change goes through `Port`/`SigTo`, so nothing steps: a fan spins up with
inertia, a fade is a ramp. Build a `Hum` inside a booted pyo Server; the same graph runs
live (audio_process) and offline (hum_render).
"""

from __future__ import annotations

from ..config import HumConfig
from .devices import import_pyo
from .preset import Preset

pyo = import_pyo()


class Hum:
    def __init__(self, preset: Preset, settings: HumConfig):
        self.preset, self.settings = preset, settings
        idle = preset.rpm.idle
        self._target_rpm = pyo.Sig(idle)
        # Fan inertia: the controller asks, the blades follow.
        self.rpm = pyo.Port(self._target_rpm, risetime=settings.spin_up_seconds,
                            falltime=settings.spin_down_seconds, init=idle)
        # How much faster than idle the air is moving: drives noise colour and level.
        self._drive = self.rpm / idle
        voices = [self._fan(fan) for fan in preset.fans]
        voices += self._airflow()
        voices.append(self._mains())
        self._dry = pyo.Mix(voices, voices=2)
        room = preset.room
        self._room = pyo.Freeverb(self._dry, size=room.size, damp=room.damping, bal=room.mix)
        self._limited = pyo.Compress(self._room, thresh=preset.limiter_db, ratio=20,
                                     risetime=0.003, falltime=0.15, lookahead=5.0, knee=0.6)
        self.master = pyo.SigTo(0.0, time=settings.fade_in_seconds, init=0.0)
        self.output = self._limited * self.master

    def _fan(self, fan):
        shaft = self.rpm * (fan.detune / 60.0)          # revolutions per second
        blade_pass = shaft * fan.blades
        flutter = pyo.Randi(min=1.0 - fan.flutter, max=1.0, freq=[2.3, 3.7, 5.1])
        partials = [pyo.Sine(freq=blade_pass * (k + 1), mul=fan.level * level * flutter[k % 3])
                    for k, level in enumerate(fan.harmonics)]
        return pyo.Pan(pyo.Mix(partials, voices=1), outs=2, pan=fan.pan, spread=0.3)

    def _airflow(self):
        air = self.preset.airflow
        cutoff = pyo.Pow(self._drive, air.cutoff_follows) * air.cutoff_hz
        body = pyo.ButLP(pyo.PinkNoise(mul=[air.level, air.level]), freq=cutoff)
        hiss = pyo.ButBP(pyo.Noise(mul=[air.hiss_level, air.hiss_level]), freq=air.hiss_hz, q=0.7)
        return [body * self._drive, hiss * self._drive]

    def _mains(self):
        mains = self.preset.mains
        freqs = [mains.hz * (k + 1) for k in range(len(mains.harmonics))]
        tones = pyo.Sine(freq=freqs, mul=[mains.level * h for h in mains.harmonics])
        return pyo.Pan(pyo.Mix(tones, voices=1), outs=2, pan=0.5)

    # -- commands ---------------------------------------------------------------

    def start(self) -> "Hum":
        self.output.out()
        self.set_volume(self.settings.volume, self.settings.fade_in_seconds)
        return self

    def show_token(self, entropy_bits: float) -> None:
        self._aim(self.preset.rpm_for_entropy(entropy_bits, self.settings))

    def idle(self) -> None:
        self._aim(self.preset.rpm.idle)

    def _aim(self, rpm: float) -> None:
        # Port picks rise or fall by comparing the new target with the old one, not with
        # where the fan is now; a fan still slowing down towards a lower target would then
        # take the spin-up time. Choose from the actual speed, as a motor would.
        tau = (self.settings.spin_up_seconds if rpm > self.rpm.get()
               else self.settings.spin_down_seconds)
        self.rpm.setRiseTime(tau)
        self.rpm.setFallTime(tau)
        self._target_rpm.value = rpm

    def set_volume(self, volume: float, seconds: float = 0.5) -> None:
        self.master.time = max(seconds, 0.005)
        self.master.value = volume

    def fade_out(self, seconds: float) -> None:
        self.set_volume(0.0, seconds)

    def stop(self) -> None:
        """Take the graph off the output (call once it has faded)."""
        self.output.stop()
