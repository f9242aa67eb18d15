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


def tone_level_db(signal: np.ndarray, rate: int, hz: float, width_hz: float = 2.0) -> float:
    """The level of the tone at `hz` (the strongest bin within `width_hz` of it), in dB."""
    windowed = signal * np.hanning(len(signal))
    spectrum = np.abs(np.fft.rfft(windowed)) / (len(signal) / 4)   # a full-scale sine: 1
    freqs = np.fft.rfftfreq(len(signal), 1.0 / rate)
    band = np.abs(freqs - hz) <= width_hz
    return float(20 * np.log10(spectrum[band].max() + 1e-12))


def band_correlations(samples: np.ndarray, rate: int, low: float, high: float) -> np.ndarray:
    """The correlation of every pair of channels within one band (an FFT mask), as a
    channels x channels matrix: noise of its own in each is near 0, a shared sound near 1."""
    spectra = np.fft.rfft(samples, axis=0)
    freqs = np.fft.rfftfreq(len(samples), 1.0 / rate)
    spectra[(freqs < low) | (freqs > high)] = 0
    return np.corrcoef(np.fft.irfft(spectra, n=len(samples), axis=0).T)
