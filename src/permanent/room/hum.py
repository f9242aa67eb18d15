"""The hum: a server room synthesized with pyo, on 2 to 8 speakers.

    fans ──┐  blade-pass tone and harmonics per fan, each at its place (room/speakers.py)
    air  ──┼─ Mix ─┬─────────────────────────────── dry ─┐
    mains ─┘       └─ Freeverb ─ decorrelated per speaker ┴─ Compress ─ master fade ─ out
                   (on a pair: Freeverb on each side, as the stereo hum always had it)

Fans are point sources, panned between speakers. Moving air is everywhere: each speaker
gets noise of its own, so the room is wide. Mains hum sits in every speaker alike, and the
room's reverb, fed by all of it, reaches every speaker, each through its own all-pass
chain so no two carry the same tail. Every control change goes through `Port`/`SigTo`,
so nothing steps: a fan spins up with inertia, a fade is a ramp. Build a `Hum` inside a
booted pyo Server with as many channels; the same graph runs live (audio_process) and
offline (hum_render).
"""

from __future__ import annotations

import math
from typing import Optional

from ..config import HumConfig
from .devices import import_pyo
from .preset import Preset
from .speakers import ring_shares, stereo_pans

pyo = import_pyo()

# Two all-pass stages per speaker, with delays no other speaker shares (seconds, prime
# numbers of tenths of a millisecond), turn one reverb tail into as many that do not
# correlate; the feedback is kept moderate, as stronger feedback rings and correlates more.
_DECORRELATING_DELAYS = ((0.0113, 0.0157), (0.0171, 0.0233), (0.0237, 0.0127),
                         (0.0293, 0.0191), (0.0131, 0.0281), (0.0199, 0.0107),
                         (0.0311, 0.0167), (0.0073, 0.0251))
_DECORRELATING_FEEDBACK = 0.5
_CENTRE = math.sqrt(0.5)   # a constant-power pan's gain at the centre of a pair


class Hum:
    def __init__(self, preset: Preset, settings: HumConfig, channels: int = 2,
                 lead_speaker: Optional[float] = None):
        self.preset, self.settings, self.channels = preset, settings, channels
        idle = preset.rpm.idle
        self._target_rpm = pyo.Sig(idle)
        # Fan inertia: the controller asks, the blades follow.
        self.rpm = pyo.Port(self._target_rpm, risetime=settings.spin_up_seconds,
                            falltime=settings.spin_down_seconds, init=idle)
        # How much faster than idle the air is moving: drives noise colour and level.
        self._drive = self.rpm / idle
        if channels == 2:
            places = stereo_pans([fan.pan for fan in preset.fans], lead_speaker)
        else:
            places = ring_shares([fan.speaker for fan in preset.fans], preset.speakers,
                                 channels, lead_speaker)
        voices = [self._fan(fan, place) for fan, place in zip(preset.fans, places)]
        voices += self._airflow()
        voices.append(self._mains())
        self._dry = pyo.Mix(voices, voices=channels)   # every voice has one stream a speaker
        self._limited = pyo.Compress(self._room(), thresh=preset.limiter_db, ratio=20,
                                     risetime=0.003, falltime=0.15, lookahead=5.0, knee=0.6)
        self.master = pyo.SigTo(0.0, time=settings.fade_in_seconds, init=0.0)
        self.output = self._limited * self.master

    def _fan(self, fan, place: float):
        shaft = self.rpm * (fan.detune / 60.0)          # revolutions per second
        blade_pass = shaft * fan.blades
        flutter = pyo.Randi(min=1.0 - fan.flutter, max=1.0, freq=[2.3, 3.7, 5.1])
        partials = [pyo.Sine(freq=blade_pass * (k + 1), mul=fan.level * level * flutter[k % 3])
                    for k, level in enumerate(fan.harmonics)]
        tone = pyo.Mix(partials, voices=1)
        if self.channels == 2:
            return pyo.Pan(tone, outs=2, pan=place, spread=0.3)
        return pyo.SPan(tone, outs=self.channels, pan=place)   # between two neighbours

    def _airflow(self):
        air, n = self.preset.airflow, self.channels
        cutoff = pyo.Pow(self._drive, air.cutoff_follows) * air.cutoff_hz
        # One noise generator a speaker: the same noise everywhere would sound mono.
        body = pyo.ButLP(pyo.PinkNoise(mul=[air.level] * n), freq=cutoff)
        hiss = pyo.ButBP(pyo.Noise(mul=[air.hiss_level] * n), freq=air.hiss_hz, q=0.7)
        return [body * self._drive, hiss * self._drive]

    def _mains(self):
        mains = self.preset.mains
        freqs = [mains.hz * (k + 1) for k in range(len(mains.harmonics))]
        tones = pyo.Sine(freq=freqs, mul=[mains.level * h for h in mains.harmonics])
        return pyo.Sig(pyo.Mix(tones, voices=1), mul=[_CENTRE] * self.channels)

    def _room(self):
        """The dry sound at each speaker and the reverb of the whole room at all of them."""
        room, n = self.preset.room, self.channels
        if n == 2:
            # A pair's fans are panned, not placed: each side's reverb of its own sound
            # already holds the whole room, as the stereo hum has always had it.
            return pyo.Freeverb(self._dry, size=room.size, damp=room.damping, bal=room.mix)
        # The sum of n speakers scaled so a diffuse sound (the air) keeps its level.
        whole = pyo.Mix(self._dry, voices=1, mul=1.0 / math.sqrt(n))
        tail = pyo.Freeverb(whole, size=room.size, damp=room.damping, bal=1.0)
        delays = _DECORRELATING_DELAYS[:n]
        first = pyo.Allpass(tail, delay=[d[0] for d in delays],
                            feedback=_DECORRELATING_FEEDBACK, maxdelay=0.05)
        tails = pyo.Allpass(first, delay=[d[1] for d in delays],
                            feedback=_DECORRELATING_FEEDBACK, maxdelay=0.05)
        self._reverb_parts = (whole, tail, first, tails)   # pyo plays what is referenced
        return self._dry * (1.0 - room.mix) + tails * room.mix

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
