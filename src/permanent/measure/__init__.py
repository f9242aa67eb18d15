"""Measure: the benchmark and the analysis of rendered audio.

`bench` drives the real roles the way the piece does and times them (with `anchor`,
`shapes`, `audio_soak`, `entropy_estimate` and `server_load` for its other modes);
`audition` and `reading` put the voice on trial; `audio_analysis` and `spectrogram` read
WAV files. Like the app, it may import any role; no role imports it.
"""
