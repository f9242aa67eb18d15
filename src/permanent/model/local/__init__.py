"""The model on this machine, and the kernels it runs on.

Owns the weights (the embedded GGUF converted once into the cache, or a local folder),
the compact decoder for Llama-shaped models and the packed 4- and 8-bit layers under it,
which kernel each layer runs on, the project's int4 kernel, the warm start that keeps a
loaded model on disk, sampling, and the streaming loop that writes a pass a token at a
time with each token's entropy.
May import: the model's shared modules and its voice; config, events, errors, lifecycle.
"""
