"""Key chords such as "ctrl+shift+q", so a visitor's stray key never ends the piece."""

from __future__ import annotations

from dataclasses import dataclass

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


def held_modifiers(mod_state: int) -> set[str]:
    """Names of the modifiers in a pygame modifier bitmask."""
    import pygame

    names = {"ctrl": pygame.KMOD_CTRL, "shift": pygame.KMOD_SHIFT,
             "alt": pygame.KMOD_ALT, "meta": pygame.KMOD_META}
    return {name for name, mask in names.items() if mod_state & mask}


class QuitKeys:
    """Which key presses end the piece: Esc in a window; only the chord in fullscreen."""

    def __init__(self, chord_text: str, fullscreen: bool, keys_quit: bool = True):
        self.chord = parse_chord(chord_text)
        self.fullscreen = fullscreen
        self.keys_quit = keys_quit

    def reason(self, event, now: float = 0.0) -> str | None:
        import pygame

        if event.type == pygame.QUIT:
            return "window closed"
        if event.type != pygame.KEYDOWN or not self.keys_quit:
            return None
        if not self.fullscreen and event.key == pygame.K_ESCAPE:
            return "Esc"
        if self.chord.matches(pygame.key.name(event.key), held_modifiers(event.mod)):
            return "quit chord"
        return None
