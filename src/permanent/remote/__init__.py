"""Remote: the piece speaking to the gallery's own tools, and answering them.

Owns OSC out (the piece's moments as UDP messages to QLab, TouchDesigner, Max), OSC in
(a few cues from an allow-list of senders, validated and handed on as `Command`s), and
the status server (a page for a technician's phone, /health, /metrics). Everything here
that listens runs on its own threads; the main loop only hands it plain numbers and
text, and takes validated commands back through a bounded queue, never waiting.
May import: config, events, errors. Never a role: what it shows of them (a fan's pitch,
a process alive) is handed to it by the app.
"""
