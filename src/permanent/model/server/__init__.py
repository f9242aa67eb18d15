"""Writing from an OpenAI-compatible inference server instead of the model here.

Owns the client that streams a pass with each token's top-k log-probabilities, the
entropy estimated from them, and the fallback that writes from the embedded model
while the server cannot.
May import: the model's shared modules and its voice; config, events, errors, lifecycle.
"""
