"""The piece as a client of a real inference server: llama.cpp's, through llama-cpp-python,
serving the embedded GGUF on 127.0.0.1, started, killed and restarted by the tests."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from permanent.config import Config, ModelConfig, TextConfig
from permanent.measure import entropy_estimate
from permanent.measure.audio_analysis import mono, peak_hz, read_wav
from permanent.model.server.top_k_entropy import TAIL_OFFSET_BITS
from permanent.room.fans import semitones
from permanent.room.preset import load_preset

from conftest import REPO, recording_the_hum
from test_live_paths import SHORT_PASSES
from test_piece import Running

pytestmark = pytest.mark.slow


class LlamaServer:
    """llama-cpp-python's OpenAI-compatible server on a fixed local port."""

    def __init__(self, gguf, voice_gguf, port: int):
        self.gguf, self.voice_gguf, self.port = gguf, voice_gguf, port
        self.url = f"http://127.0.0.1:{port}/v1"
        self.process = None

    def start(self) -> "LlamaServer":
        # One thread: the piece under test needs the other core. --logits_all gives the
        # log-probabilities; without --interrupt_requests false a second screen's request
        # would cut the first one's pass.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf),
             "--lora_path", str(self.voice_gguf),
             "--host", "127.0.0.1", "--port", str(self.port), "--n_threads", "1",
             "--n_ctx", "2048", "--logits_all", "true", "--model_alias", "smollm2",
             "--interrupt_requests", "false"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                assert self.process.poll() is None, "llama_cpp.server exited at start"
                assert time.monotonic() < deadline, "llama_cpp.server did not listen in 60 s"
                time.sleep(0.1)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(embedded_model, tmp_path_factory):
    """The embedded model with the builtin voice, as a gallery's CPU box would serve it."""
    from permanent.model.local.store import embedded_gguf
    from permanent.model.voice.adapter import BUILTIN_VOICE
    from permanent.model.voice.export import export_gguf

    voice = tmp_path_factory.mktemp("voice") / "voice.gguf"
    export_gguf(BUILTIN_VOICE, embedded_model.location, voice)
    running = LlamaServer(embedded_gguf(), voice, free_port()).start()
    yield running
    running.kill()


def server_config(tmp_path, url) -> str:
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  server_url: {url}\n  server_model: smollm2\n" + SHORT_PASSES)
    return str(config)


def test_the_entropy_estimate_from_top_logprobs_is_calibrated(embedded_model):
    """The estimator's shipped tail offset, on tokens it was not fitted on: mean absolute
    error within 0.07 bits of the exact entropy with the top 20 (the default), within 0.25
    with the top 5."""
    config = Config()
    # One draft a sentence: the estimator reads the distribution each token was drawn
    # from, which drafts do not change; they would write twelve tokens for each one read.
    config = config.replace(text=dataclasses.replace(config.text, seed=7, drafts=1))
    sample = entropy_estimate.sample_model(config, 1000)
    # Twice the error measured with the top 20, 1.75 times with the top 5 (docs/server.md):
    # a CPU whose kernels round differently samples other tokens after a while, and 1,000
    # tokens vary that much, no more.
    for k, limit in ((20, 0.07), (5, 0.25)):
        result = entropy_estimate.report(sample, k, TAIL_OFFSET_BITS)
        print(f"top {k}: mean absolute error {result['mae']:.3f} bits (limit {limit}); "
              f"{result}")
        assert result["mae"] <= limit, result
    # The shipped offset is still near the best one for these tokens.
    assert abs(entropy_estimate.fit_offset(sample, 20) - TAIL_OFFSET_BITS) < 0.75


def test_the_servers_entropies_are_close_to_the_local_models(server, embedded_model):
    """The same model and voice, the same text: the entropy estimated from llama.cpp's
    top 20 is the exact entropy of the piece's own forward over that text, token by token.
    This also checks the voice's GGUF export: a wrong tensor moves it by bits."""
    import torch

    from permanent.model.voice import prompt as voice
    from permanent.model.entropy import entropy_bits
    from permanent.model.local.generator import load_generator
    from permanent.model.server.generator import ServerGenerator

    text = TextConfig(voice="builtin", min_tokens=20, max_tokens=60)
    remote = ServerGenerator(ModelConfig(server_url=server.url, server_model="smollm2"), text)
    local = load_generator(embedded_model, ModelConfig(weights="float"), text)
    errors, seed = [], 0
    while len(errors) < 60:
        remote.update_text(dataclasses.replace(text, seed=seed))
        seed += 1
        events = list(remote.write_pass(0))
        assert remote.fault is None, remote.fault
        given = next(i for i, e in enumerate(events) if e.entropy_bits > 0.0)
        opening = "".join(e.text for e in events[:given])
        reply = events[given:]
        # llama.cpp's server takes the opening as an earlier reply and answers after it.
        messages = voice.chat_messages(text) + [{"role": "assistant", "content": opening}]
        prompt = local.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                     tokenize=False)
        prompt_ids = local.tokenizer(prompt, add_special_tokens=False).input_ids
        reply_ids = local.tokenizer("".join(e.text for e in reply).lstrip(),
                                    add_special_tokens=False).input_ids
        if len(reply_ids) != len(reply):
            continue   # a piece of several tokens: this pass cannot be lined up token by token
        ids = torch.tensor([prompt_ids + reply_ids])
        with torch.inference_mode():
            logits = local.forward.prefill(ids, ids.shape[1] + 1, keep=len(reply_ids) + 1)
        exact = entropy_bits(logits[:-1].float()).tolist()
        errors += [abs(e.entropy_bits - x) for e, x in zip(reply, exact)]
        assert seed < 40, "too few passes could be lined up"
    print(f"{len(errors)} tokens: mean absolute difference {np.mean(errors):.3f} bits")
    # About twice what was measured (docs/server.md): llama.cpp's own Q4_1 arithmetic is
    # part of the difference and differs between its builds, and 60-odd tokens vary.
    assert np.mean(errors) < 0.2


def test_check_probes_a_configured_server(server, tmp_path):
    config = server_config(tmp_path, server.url)
    result = subprocess.run([sys.executable, "-m", "permanent", "check", "--config", config],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "it serves smollm2" in result.stdout and "tokens/s" in result.stdout
    dead = server_config(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    result = subprocess.run([sys.executable, "-m", "permanent", "check", "--config", dead],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 1
    assert "line 2: model.server_url" in result.stdout and "cannot reach" in result.stdout


def test_a_piece_in_a_window_writes_through_a_server_crash_and_its_return(
        server, xvfb_env, pulse_env, embedded_model, tmp_path):
    """The whole path: the server writes, the fans follow its estimated entropy, the server
    is killed mid-run (the embedded model takes over) and restarted (the piece returns to
    it), and the text never stops for longer than a pass's own ending plus 5 s."""
    env = dict(xvfb_env, PULSE_SERVER=pulse_env["PULSE_SERVER"],
               PULSE_RUNTIME_PATH=pulse_env["PULSE_RUNTIME_PATH"])
    wav = tmp_path / "room.wav"
    with recording_the_hum(pulse_env, wav):
        piece = Running(env, "--windowed", "--config", server_config(tmp_path, server.url),
                        on_screen=True)
        try:
            piece.wait_for(r"model ready: smollm2 at .*inference server; fallback: embedded")
            piece.wait_for(r"first token shown")
            time.sleep(4)   # the server writes for a while
            killed = time.monotonic() - piece.started
            server.kill()
            piece.wait_for(
                r"inference server: .*(mid-pass|cannot reach).*embedded model writes", timeout=60)
            fallback = float(piece.wait_for(r"embedded model wrote its first token ([\d.]+) s "
                                            r"after the server failed", timeout=30)[1])
            time.sleep(3)   # the embedded model writes for a while
            server.start()
            piece.wait_for(r"answers again; writing from it", timeout=60)
            back = time.monotonic() - piece.started
            time.sleep(8)
            assert piece.terminate() < 2.0 and piece.process.returncode == 0, piece.log
        finally:
            piece.kill()
            if server.process.poll() is not None:
                server.start()   # the next test needs it
    shown = [t for t, line in piece.lines if "shown '" in line or 'shown "' in line]
    assert len([t for t in shown if t > back]) > 10, "no text after the server came back"
    gaps = np.diff(shown)
    limit = 1.5 + 1.5 + 1 + 1.1 + 5.0   # hold, fade, gap, a sentence's pause, and 5 s
    print(f"killed at {killed:.1f} s, back at {back:.1f} s; the embedded model wrote "
          f"{fallback:.2f} s after the failure; {len(shown)} tokens shown; longest wait "
          f"between two {gaps.max():.2f} s (limit {limit:.1f})")
    assert fallback < 5.0
    assert gaps.max() < limit, piece.log
    assert "Traceback" not in piece.log
    # The fans followed the text: the lead fan's tone moved by more than 2 semitones.
    samples, rate = read_wav(wav)
    signal_ = mono(samples)
    preset = load_preset("closet")
    low = preset.lead_blade_pass_hz(preset.rpm.idle)
    high = preset.lead_blade_pass_hz(preset.rpm.high)
    audible = np.flatnonzero(np.abs(signal_) > 1e-3)
    start, end = audible[0] / rate, audible[-1] / rate
    peaks = [peak_hz(signal_[int(t * rate):int((t + 0.5) * rate)], rate, low * 0.95, high * 1.05)
             for t in np.arange(start + 3.0, end - 1.5, 0.5)]
    print(f"lead fan from {min(peaks):.1f} to {max(peaks):.1f} Hz")
    assert semitones(min(peaks), max(peaks)) > 2.0


def test_two_pieces_write_from_one_server_at_once(server, tmp_path):
    env = dict(os.environ, PULSE_SERVER="unix:/nonexistent/socket")   # text only
    config = server_config(tmp_path, server.url)
    pieces = [Running(env, "--windowed", "--duration", "25", "--config", config)
              for _ in range(2)]
    try:
        for piece in pieces:
            piece.process.wait(timeout=90)
    finally:
        for piece in pieces:
            piece.kill()
    for piece in pieces:
        print(f"a piece of two: {piece.count(r'shown ')} tokens shown in 25 s")
        assert piece.process.returncode == 0, piece.log
        assert piece.count(r"shown ") > 40, piece.log
        assert piece.count(r"inference server: ") == 0, piece.log   # never fell back
