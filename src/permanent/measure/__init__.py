"""Measure: the benchmark and the analysis of rendered audio.

`bench` drives the real roles the way the piece does and times them; `audio_analysis`
and `spectrogram` read WAV files. Like the app, it may import any role; no role imports it.
"""
