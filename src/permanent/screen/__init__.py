"""The screen: what is shown, and when.

Owns the window (fullscreen, windowed, or a screensaver host's), word wrap, the page's
look and fades, the pacing that decides when each token appears, and the keys that end
the piece. It receives TokenEvents and gives back cues; it never calls the model or the hum.
May import: config, events, errors. Never the room or the model.
"""
