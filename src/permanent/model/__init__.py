"""The model: text, and how unsure the model was of each token.

Owns the weights (finding, converting, packing), the decoder, sampling, per-token entropy,
the voice (system prompt and openings), and the process that writes passes ahead into a
bounded queue of TokenEvents. It knows nothing of sound or pixels.
May import: config, events, errors, lifecycle. Never the room or the screen.
"""
