"""How the piece speaks: its prompt, its openings, and the voice trained on its corpus.

Owns the system prompt and the openings each pass starts from, the words the voice
avoids, the LoRA adapter (found, read, run beside packed weights), training one from a
corpus, exporting one as a GGUF adapter for llama.cpp, and the corpus itself.
May import: the local decoder's layout (export writes rows in its order); errors.
"""
