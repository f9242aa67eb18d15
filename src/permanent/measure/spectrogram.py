"""A picture of the hum: its spectrogram, with the lead fan's blade-pass line over it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .audio_analysis import mono, read_wav

WIDTH, HEIGHT = 1200, 500
LEFT, BOTTOM, TOP, RIGHT = 70, 40, 20, 20


def spectrogram(signal: np.ndarray, rate: int, window_seconds: float = 0.25,
                hop_seconds: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power in dB, shape (frequencies, times), with the frequency and time axes."""
    size, hop = int(window_seconds * rate), int(hop_seconds * rate)
    starts = np.arange(0, max(1, len(signal) - size), hop)
    frames = np.stack([signal[s:s + size] for s in starts]) * np.hanning(size)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    db = 10 * np.log10(power.T + 1e-12)
    return db, np.fft.rfftfreq(size, 1 / rate), (starts + size / 2) / rate


def draw_spectrogram(wav: Path, tokens_jsonl: Path, png: Path) -> None:
    import pygame

    samples, rate = read_wav(wav)
    tokens = [json.loads(line) for line in open(tokens_jsonl, encoding="utf-8")]
    top_hz = max([t["blade_pass_hz"] for t in tokens] + [200.0]) * 1.6
    db, freqs, times = spectrogram(mono(samples), rate)
    keep = freqs <= top_hz
    db, freqs = db[keep], freqs[keep]
    peak = db.max() if db.size else 0.0
    level = np.clip((db - (peak - 70)) / 70, 0, 1)       # 70 dB of range, loudest at 1

    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    # Warm ramp: black -> deep red -> amber -> pale, like heat off a rack.
    ramp = np.stack([np.clip(level * 2.2, 0, 1), np.clip(level * 1.6 - 0.45, 0, 1),
                     np.clip(level * 2.5 - 1.6, 0, 1)], axis=-1)
    image = (ramp[::-1] * 255).astype(np.uint8)            # low frequencies at the bottom
    surface = pygame.Surface((WIDTH, HEIGHT))
    surface.fill((12, 12, 12))
    if image.size:
        plot = pygame.surfarray.make_surface(image.transpose(1, 0, 2))
        surface.blit(pygame.transform.smoothscale(plot, (plot_w, plot_h)), (LEFT, TOP))
    duration = len(samples) / rate

    def xy(t, hz):
        return LEFT + t / duration * plot_w, TOP + plot_h * (1 - hz / freqs[-1])

    points = [xy(t["t"], t["blade_pass_hz"]) for t in tokens if t["t"] <= duration]
    for x, y in points:
        pygame.draw.circle(surface, (120, 210, 255), (round(x), round(y)), 2)
    if not pygame.font.get_init():
        pygame.font.init()
    font = pygame.font.Font(None, 20)
    label = lambda text, pos: surface.blit(font.render(text, True, (200, 200, 200)), pos)
    for hz in np.linspace(0, freqs[-1], 6):
        label(f"{hz:.0f} Hz", (6, xy(0, hz)[1] - 7))
    for t in np.linspace(0, duration, 7):
        label(f"{t:.0f} s", (xy(t, 0)[0] - 8, HEIGHT - BOTTOM + 8))
    label("dots: lead fan blade-pass frequency from tokens.jsonl", (LEFT + 8, TOP + 4))
    pygame.image.save(surface, str(png))
