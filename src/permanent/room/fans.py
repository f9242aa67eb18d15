"""Fan physics: how a token's entropy becomes fan speed, and fan speed becomes pitch.

Pure arithmetic, shared by the live hum, offline renders and tests, so what the tests
predict is what the synthesis does.
"""

from __future__ import annotations

import math


def speed_from_entropy(bits: float, low_bits: float, high_bits: float) -> float:
    """Cooling demand in 0..1: 0 at or below `low_bits`, 1 at or above `high_bits`."""
    return min(1.0, max(0.0, (bits - low_bits) / (high_bits - low_bits)))


def rpm_for_speed(speed: float, rpm_low: float, rpm_high: float) -> float:
    # Geometric, not linear: equal steps of uncertainty are equal steps of pitch.
    return rpm_low * (rpm_high / rpm_low) ** speed


def blade_pass_hz(rpm: float, blades: int) -> float:
    """Each blade passes a strut once a revolution: blades x revolutions per second."""
    return blades * rpm / 60.0


def semitones(f_from: float, f_to: float) -> float:
    return 12.0 * math.log2(f_to / f_from)


def settle(current: float, target: float, dt: float, spin_up: float, spin_down: float) -> float:
    """One step of fan inertia: exponential approach with separate up and down time constants.

    Matches the one-pole smoothing of pyo's `Port` closely enough to predict where
    the rendered tone sits once a plateau has lasted a few time constants.
    """
    tau = spin_up if target > current else spin_down
    return target + (current - target) * math.exp(-dt / tau)
