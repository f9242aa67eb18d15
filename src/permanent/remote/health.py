"""Whether the piece is really running, judged from what it last did (pure).

A service can be up while the screen shows nothing: so health is the age of the last
frame drawn, of the last token shown and of the hum's last sound, not a process that
answers. Healthy means the screen drew within a second and, while the model is meant to
be writing, a token was shown within the longest pause the pacing allows.
"""

from __future__ import annotations

from typing import Optional

from .piece_state import PieceState

FRAME_WITHIN_SECONDS = 1.0


def _age(at: Optional[float], now: float) -> Optional[float]:
    return None if at is None else round(max(0.0, now - at), 3)


def health(state: PieceState, now: float) -> tuple[bool, dict]:
    """(healthy, the JSON body of /health) at monotonic time `now`."""
    vitals = state.vitals
    frame_age = _age(state.last_frame_at, now)
    token_age = _age(state.last_token_at if state.last_token_at is not None
                     else state.launched, now)
    problems = []
    if frame_age is None or frame_age > FRAME_WITHIN_SECONDS:
        problems.append("the screen has not drawn within "
                        f"{FRAME_WITHIN_SECONDS:.0f} s")
    if vitals.model == "down":
        problems.append("the model is down")
    elif vitals.model in ("writing", "loading") and token_age > state.token_within_seconds:
        problems.append(f"no token shown within {state.token_within_seconds:.0f} s")
    body = {
        "healthy": not problems,
        "problems": problems,
        "last_frame_age_s": frame_age,
        "last_token_age_s": _age(state.last_token_at, now),
        "hum_last_buffer_age_s": _age(vitals.hum_sound_at, now),
        "processes": {name: {"alive": alive, "restarts": vitals.restarts.get(name, 0)}
                      for name, alive in vitals.processes.items()},
        "model": vitals.model,
        "waiting_for": vitals.waiting_for or None,
        "hours": vitals.hours,
        "uptime_s": round(now - state.launched, 1),
    }
    return not problems, body
