"""The model: text, and how unsure the model was of each token.

Owns the weights (finding, converting, packing, keeping a warm start), the decoder,
sampling, per-token entropy (exact, or estimated from a server's top-k), the voice (system
prompt, openings, LoRA adapters and their GGUF export), the client of an inference server
with the embedded model as its stand-in, and the process that writes passes ahead into a
bounded queue of TokenEvents. It knows nothing of sound or pixels.
May import: config, events, errors, lifecycle. Never the room or the screen.
"""
