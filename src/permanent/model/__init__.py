"""The model: text, and how unsure the model was of each token.

Three parts, and what they share:
  local/    the model on this machine: finding and converting the weights, the compact
            decoder and its kernels, the warm start, sampling, the streaming loop
  voice/    how the piece speaks: the system prompt, the openings, avoided words, the
            LoRA voice (reading, training, export to GGUF) and the corpus it grew from
  server/   writing from an inference server: the client, the entropy from its top-k,
            the embedded model standing in while the server cannot write
  passes.py the pass rules both writers follow, and `TextGenerator`, what the rest of
            the piece sees of either
  entropy.py the exact entropy of a next-token distribution
  process.py the model's own process and its supervisor
It knows nothing of sound or pixels.
May import: config, events, errors, lifecycle. Never the room or the screen.
"""
