"""Which keys end the piece, so a visitor's stray key never does.

A chord such as "ctrl+shift+q" is a setting; its format is `config.parse_chord`'s.
"""

from __future__ import annotations

from ..config import parse_chord


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
