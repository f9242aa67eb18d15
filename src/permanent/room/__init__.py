"""The room: the hum and the process it plays in.

Owns the pyo server, the hum's graph (fans, blades, mains, air), its presets in sounds/,
the choice of audio device, and the process that keeps the room playing from launch to
exit. It hears about tokens only as numbers (entropy in bits) sent through its commands.
May import: config, events, errors, schema, lifecycle. Never the model or the screen.
"""
