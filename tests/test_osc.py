"""OSC out and in, against the whole running piece: a real UDP receiver in the test gets
the piece's moments, and real senders cue it (and fail to)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from pythonosc.osc_message import OscMessage

from permanent.measure.audio_analysis import mono, read_wav, rms, window
from permanent.remote.osc_out import OscOut, osc_message
from permanent.remote.osc_in import Rejected, command_of

from conftest import every_line_parses, recording_the_hum
from test_piece import Running

QUICK = """\
text:
  min_tokens: 8
  max_tokens: 16
pacing:
  tokens_per_second: 12
  uncertainty_pause_seconds_per_bit: 0
  hold_seconds: 0.3
  fade_seconds: 0.3
  gap_seconds: 0.3
  sentence_pause_seconds: 0.1
  comma_pause_seconds: 0.05
  line_break_pause_seconds: 0.1
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Receiver:
    """An OSC receiver like a lighting desk's: every message, with when it came."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.messages: list[tuple[float, str, list]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._stop:
            try:
                data = self.socket.recv(65536)
            except socket.timeout:
                continue
            message = OscMessage(data)
            self.messages.append((time.monotonic(), message.address, message.params))

    def of(self, address: str, since: float = 0.0) -> list[list]:
        return [params for at, a, params in list(self.messages) if a == address and at >= since]

    def wait_for(self, address: str, since: float, timeout: float = 30.0) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.of(address, since):
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no {address} since {since}: {self.messages[-5:]}")

    def close(self):
        self._stop = True
        self._thread.join(timeout=2)
        self.socket.close()


def send(port: int, data: bytes, source: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind((source, 0))
        sender.sendto(data, ("127.0.0.1", port))


def test_cues_are_validated_before_they_become_commands():
    assert command_of("/permanent/volume", [0.25], "a").value == 0.25
    assert command_of("/permanent/volume", [1], "a").value == 1.0
    assert command_of("/permanent/hold", [], "a").kind == "hold"
    assert command_of("/permanent/next", [1], "a").kind == "next"
    assert command_of("/permanent/next", [0], "a") is None   # a button's release
    for address, params, kind in [("/permanent/volume", [1.5], "out of range"),
                                  ("/permanent/volume", [float("nan")], "out of range"),
                                  ("/permanent/volume", ["loud"], "malformed"),
                                  ("/permanent/volume", [], "malformed"),
                                  ("/permanent/volume", [True], "malformed"),
                                  ("/permanent/hold", ["x", 2], "malformed"),
                                  ("/permanent/quit", [], "malformed"),
                                  ("/other/volume", [0.1], "malformed")]:
        with pytest.raises(Rejected) as caught:
            command_of(address, params, "a")
        assert caught.value.kind == kind, (address, params)


def test_senders_are_compared_as_plain_addresses():
    from permanent.remote.osc_in import plain_address

    assert plain_address("::ffff:192.168.1.30") == "192.168.1.30"
    assert plain_address("0:0:0:0:0:0:0:1") == "::1"
    assert plain_address("192.168.1.30") == "192.168.1.30"


def test_osc_out_keeps_to_its_rate_and_never_waits_for_a_receiver():
    receiver = Receiver()
    clock = [100.0]
    nobody = free_udp_port()   # nothing listens there
    out = OscOut([f"127.0.0.1:{receiver.port}", f"127.0.0.1:{nobody}"], 10,
                 clock=lambda: clock[0])
    try:
        started = time.monotonic()
        for i in range(50):
            out.send("/permanent/token", 1, i, "word", 2.5, 440.0)
        clock[0] += 0.5   # half a second later, five more may go
        for i in range(50, 60):
            out.send("/permanent/token", 1, i, "word", 2.5, 440.0)
        assert time.monotonic() - started < 0.5
        time.sleep(0.5)
        indexes = [params[1] for params in receiver.of("/permanent/token")]
        assert indexes == list(range(10)) + list(range(50, 55))
        assert out.dropped >= 45
    finally:
        out.close()
        receiver.close()


@pytest.mark.slow
def test_the_gallery_hears_every_token_and_cues_the_piece(pulse_env, embedded_model, tmp_path):
    receiver = Receiver()
    listen = free_udp_port()
    archive = tmp_path / "passes.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(QUICK + f"""\
care:
  archive_file: {archive}
osc:
  send_to: ["127.0.0.1:{receiver.port}"]
  listen: "127.0.0.1:{listen}"
  allow_from: [127.0.0.1]
  volume_glide_seconds: 0.3
""")
    wav = tmp_path / "room.wav"
    piece = None
    try:
        with recording_the_hum(pulse_env, wav):
            recorded = time.monotonic()
            piece = Running(pulse_env, "--windowed", "--config", str(config))
            piece.wait_for(r"OSC in on 127.0.0.1:\d+")
            piece.wait_for(r"pass 1 ended", timeout=90)
            heard_before = time.monotonic()

            # An unknown sender and malformed packets, 50 of each: nothing changes, and
            # the log says so once for each kind of trouble.
            for _ in range(50):
                send(listen, osc_message("/permanent/hold"), source="127.0.0.2")
                send(listen, b"\x00garbage that is not OSC")
                send(listen, osc_message("/permanent/volume", 7.0))
                send(listen, osc_message("/permanent/volume", "loud"))
            time.sleep(1.5)
            assert len(receiver.of("/permanent/token", since=heard_before + 1.0)) >= 5, \
                "the piece stopped writing after bad OSC"
            assert piece.count(r"OSC from 127\.0\.0\.2 ignored: the sender is not in") == 1
            assert piece.count(r"OSC from .* ignored: not an OSC packet") == 1
            assert piece.count(r"ignored: /permanent/volume 7\.0 is out of range") == 1
            assert piece.count(r"OSC from 127\.0\.0\.1: ") == 0   # none obeyed

            # /permanent/hold: the writing stops, the hum goes on, its fans settling to
            # idle; then /permanent/volume makes the room quieter, glided (measured while
            # held, so that the fans' pitch is the same on both sides of the change).
            send(listen, osc_message("/permanent/hold"))
            piece.wait_for(r"OSC from 127\.0\.0\.1: hold")
            time.sleep(0.5)   # a token already in flight may land
            held = time.monotonic()
            time.sleep(3.5)   # the fans most of the way to idle (spin-down 2 s)
            loud_from = time.monotonic() - recorded
            time.sleep(2.0)
            levels = {params[1] for params in receiver.of("/permanent/fan", since=heard_before)}
            assert levels == {0.5}, levels   # the bad volumes changed nothing
            send(listen, osc_message("/permanent/volume", 0.05))
            quiet_from = time.monotonic() - recorded + 1.0   # after the glide, with margin
            time.sleep(3.0)
            assert receiver.of("/permanent/token", since=held) == []
            send(listen, osc_message("/permanent/resume"))
            resumed = time.monotonic()
            receiver.wait_for("/permanent/token", since=resumed, timeout=10)

            # /permanent/next: the pass on screen fades at once (asked early in a pass,
            # which cannot have ended by itself before text.min_tokens).
            deadline = time.monotonic() + 30
            while not (1 <= receiver.of("/permanent/token", since=resumed)[-1][1] <= 4):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            cut = receiver.of("/permanent/token", since=resumed)[-1][0]
            send(listen, osc_message("/permanent/next"))
            asked = time.monotonic()
            assert receiver.wait_for("/permanent/fade", since=asked, timeout=5) == [cut]
            faded_in = [at for at, a, p in receiver.messages
                        if a == "/permanent/fade" and at >= asked][0] - asked
            assert faded_in < 1.0
            piece.wait_for(rf"pass {cut + 1} ended", timeout=30)
            assert piece.terminate() < 2.0 and piece.process.returncode == 0, piece.log
            recording_ended = time.monotonic()
    finally:
        if piece is not None:
            piece.kill()
        receiver.close()

    assert "Traceback" not in piece.log
    # Every token of every archived pass reached the receiver, in order, with its bits.
    records = every_line_parses(archive)
    assert len(records) >= 2
    tokens = receiver.of("/permanent/token")
    assert all(len(t) == 5 for t in tokens)
    for record in records:
        sent = [t for t in tokens if t[0] == record["pass"]]
        assert [t[1] for t in sent] == list(range(len(sent)))
        assert "".join(t[2] for t in sent) == record["text"]
        assert [round(t[3], 3) for t in sent] == pytest.approx(record["entropy_bits"], abs=2e-3)
        assert all(100 < t[4] < 2000 for t in sent), sent   # the lead fan's pitch, Hz
        assert [record["pass"], record["text"]] in receiver.of("/permanent/pass/end")
        assert [record["pass"]] in receiver.of("/permanent/pass/begin")
    assert all([r["pass"]] in receiver.of("/permanent/fade") for r in records[:-1])
    assert cut not in [r["pass"] for r in records]   # the pass cut short is not archived
    seconds = receiver.of("/permanent/fan")
    assert len(seconds) >= 10 and all(len(s) == 2 for s in seconds)
    assert {round(s[1], 2) for s in seconds} >= {0.5, 0.05}   # the level as set, then by OSC

    samples, rate = read_wav(wav)
    signal = mono(samples)
    # parec starts recording a moment (a second or two on a busy machine) after it is
    # started, and ends at once: so the recording's clock is set from its end.
    late = (recording_ended - recorded) - len(signal) / rate
    loud_from, quiet_from = loud_from - late, quiet_from - late
    loud = rms(window(signal, rate, loud_from, loud_from + 2.0))
    quiet = rms(window(signal, rate, quiet_from, quiet_from + 2.0))
    print(f"hum level before /permanent/volume 0.05: {loud:.4f} rms, after: {quiet:.4f}")
    assert loud > 0.005, "the hum was not recorded"
    assert quiet < loud * 0.25
