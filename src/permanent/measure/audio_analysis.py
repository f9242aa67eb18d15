"""Measuring audio: read a WAV, find a tone, take levels. Used by `bench` and the tests."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Samples as float in -1..1, shape (frames, channels), and the sample rate."""
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    dtype = {2: np.int16, 4: np.int32}[width]
    samples = np.frombuffer(raw, dtype=dtype).astype(np.float64) / np.iinfo(dtype).max
    return samples.reshape(-1, channels), rate


def mono(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=1)


def peak_hz(signal: np.ndarray, rate: int, low: float, high: float) -> float:
    """The strongest frequency between `low` and `high`, refined between FFT bins."""
    windowed = signal * np.hanning(len(signal))
    padded = np.abs(np.fft.rfft(windowed, n=len(signal) * 8))
    freqs = np.fft.rfftfreq(len(signal) * 8, 1.0 / rate)
    band = (freqs >= low) & (freqs <= high)
    return float(freqs[band][np.argmax(padded[band])])


def window(signal: np.ndarray, rate: int, start: float, end: float) -> np.ndarray:
    return signal[int(start * rate):int(end * rate)]


def rms(signal: np.ndarray) -> float:
    return float(np.sqrt(np.mean(signal ** 2))) if len(signal) else 0.0
