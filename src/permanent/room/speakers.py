"""Where each fan of a room sounds, on 2 to 8 speakers (pure).

A stereo pair is a line, left to right: a fan's place is its preset `pan`, 0 to 1. More
speakers stand in a ring round the visitor, numbered in order from 1 as the output's
channels are, the last next to the first: a fan's place is a speaker (`speaker: 3`) or a
point between two neighbours (`speaker: 2.5`). A preset writes those numbers for its own
ring of `speakers`; on a ring of another size each fan keeps its share of the way round.
A preset that places no fan spreads them evenly. The lead fan, the one the visitor stands
nearest, may be put on any speaker of the gallery's own (`audio.lead_speaker`).
"""

from __future__ import annotations

from typing import Optional, Sequence


def stereo_pans(pans: Sequence[Optional[float]], lead_speaker: Optional[float] = None) -> list[float]:
    """Each fan's pan on a stereo pair, 0 left to 1 right; speaker 1 is left, 2 right."""
    count = len(pans)
    placed = list(pans) if pans[0] is not None else [(i + 0.5) / count for i in range(count)]
    if lead_speaker is not None:
        placed[0] = lead_speaker - 1.0
    return placed


def ring_shares(speakers: Sequence[Optional[float]], preset_ring: int, channels: int,
                lead_speaker: Optional[float] = None) -> list[float]:
    """Each fan's place on a ring of `channels` speakers as the share of the way round it,
    0 up to 1, where speaker k (from 1) sits at (k - 1) / channels: pyo's SPan reads it."""
    count = len(speakers)
    if speakers[0] is None:
        shares = [i / count for i in range(count)]
    else:
        shares = [(s - 1.0) / preset_ring for s in speakers]
    if lead_speaker is not None:
        shares[0] = (lead_speaker - 1.0) / channels
    return [share % 1.0 for share in shares]


def nearest_speaker(share: float, channels: int) -> int:
    """The speaker (from 1) nearest a place on the ring."""
    return round(share * channels) % channels + 1


def opposite_speaker(speaker: int, channels: int) -> int:
    """The speaker across the ring: the one a fan at `speaker` is farthest from."""
    return (speaker - 1 + channels // 2) % channels + 1
