"""Care: what keeps the piece going for months without a person beside it.

Owns opening hours, live edits to config.yaml, the archive of finished passes, and
systemd's notify protocol. The restart of a dead child lives with the child's own
supervisor (room, model), built on `lifecycle`.
May import: config, events, errors, schema. Never a role's internals: what it must check
of another role (a preset that loads) is handed to it by the app.
"""
