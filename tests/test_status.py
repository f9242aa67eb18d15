"""The status server against the whole running piece: /health that proves the screen is
drawing, /metrics read by prometheus_client's own parser, the page in a real headless
Chromium, a token off loopback, a port already taken, and malformed requests."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from headless_browser import HeadlessChromium
from test_piece import Running

pytestmark = pytest.mark.slow

QUICK = """\
text:
  min_tokens: 10
  max_tokens: 30
pacing:
  tokens_per_second: 10
  hold_seconds: 1
  fade_seconds: 0.5
  gap_seconds: 0.5
"""
STALL_SECONDS = 3.0
NOTES = Path("/work/notes")


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                     if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def metrics(base: str) -> dict:
    status, body = get(f"{base}/metrics")
    assert status == 200
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def sample(families: dict, name: str, suffix: str = "_total", **labels) -> float:
    family = families[name]
    return next(s.value for s in family.samples
                if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items()))


def until(check, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s")


def status_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(QUICK + f"care:\n  archive_file: {tmp_path / 'passes.jsonl'}\n"
                      f"status:\n  enabled: true\n  port: {port}\n  thumbnail_seconds: 1\n"
                      f"  request_seconds: 2\n{extra}")
    return config


# What a careless or hostile client sends: each a raw request, or a way of being slow.
MALFORMED = [
    b"BREW / HTTP/1.1\r\n\r\n",
    b"DELETE /health HTTP/1.1\r\n\r\n",
    b"POST /metrics HTTP/1.1\r\nContent-Length: 999999999\r\n\r\nx",
    b"\x00\x01\x02\xff\xfe garbage\r\n\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Huge: " + b"h" * 100_000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
    b"GET /../../etc/passwd HTTP/1.1\r\n\r\n",
    b"GET http://elsewhere/ HTTP/1.1\r\nHost: elsewhere\r\n\r\n",
    b"GET /health?%ff%fe=\xff HTTP/1.1\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /events HTTP/1.1\r\n\r\n",   # an event stream, left unread and dropped
    "slow",   # a header a byte at a time, never finished
    "silent",  # connects and says nothing
    "half",   # half a request line, then gone
]


def label(how) -> str:
    return how if isinstance(how, str) else repr(how[:24] + (b"..." if len(how) > 24 else b""))


def misbehave(port: int, how) -> str:
    """One bad client; what the server did about it: its status code, or 'closed'."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        try:
            if how == "slow":
                for byte in b"GET / HTTP/1.1\r\nX-Slow: ":
                    client.sendall(bytes([byte]))
                    time.sleep(0.3)
            elif how == "silent":
                time.sleep(3)
            elif how == "half":
                client.sendall(b"GET /hea")
                return "closed by the client"
            else:
                client.sendall(how)
            answer = client.recv(64)
        except OSError:
            return "closed"
    if not answer:
        return "closed, no answer"
    line = answer.split(b"\r\n", 1)[0].split()
    if len(line) > 1 and line[0].startswith(b"HTTP/"):
        return line[1].decode()
    return "an error page without a status line (HTTP/0.9's way)"


def test_health_metrics_the_page_and_bad_requests_on_a_running_piece(
        pulse_env, xvfb_env, embedded_model, tmp_path):
    port = free_tcp_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(pulse_env, DISPLAY=xvfb_env["DISPLAY"],
               PERMANENT_TEST_STALL_SECONDS=str(STALL_SECONDS))
    env.pop("SDL_VIDEODRIVER", None)   # on the virtual screen, fullscreen, as in a gallery
    piece = Running(env, "--config", str(status_config(tmp_path, port)), on_screen=True)
    browser = None
    try:
        piece.wait_for(r"status page on http://127\.0\.0\.1:\d+/")
        piece.wait_for(r"first token shown", timeout=90)
        until(lambda: (lambda h: h["model"] == "writing" and h["hum_last_buffer_age_s"]
                       is not None)(json.loads(get(f"{base}/health")[1])), 10)
        status, body = get(f"{base}/health")
        healthy = json.loads(body)
        assert status == 200 and healthy["healthy"], healthy
        assert healthy["last_frame_age_s"] < 0.5 and healthy["last_token_age_s"] < 10
        assert healthy["processes"]["hum"]["alive"] and healthy["processes"]["model"]["alive"]
        assert healthy["hum_last_buffer_age_s"] is not None
        assert healthy["hum_last_buffer_age_s"] < 1.0

        # /metrics, read by prometheus_client's own parser.
        first = metrics(base)
        assert sample(first, "permanent_tokens_shown") >= 1
        assert sample(first, "permanent_token_entropy_bits", "_count") >= 1
        assert sample(first, "permanent_frame_seconds", "_count") > 10
        assert 100 < sample(first, "permanent_fan_hz", "") < 2000
        assert sample(first, "permanent_process_restarts", process="model") == 0
        assert "permanent_hum_dropouts" in first

        # The page in a real browser: the text grows as the piece writes it.
        browser = HeadlessChromium(tmp_path / "chromium", env=env)
        browser.open(f"{base}/")
        text = "document.getElementById('text')?.textContent ?? ''"
        live = "Number(document.getElementById('text')?.dataset.live ?? 0)"
        until(lambda: browser.evaluate(live) >= 3, 20, step=0.2)
        seen = [browser.evaluate(text)]

        def grew() -> bool:   # within one pass: a new pass starts the text again
            seen.append(browser.evaluate(text))
            return seen[-2] != "" and seen[-1].startswith(seen[-2]) and seen[-1] != seen[-2]
        until(grew, 20, step=0.3)
        assert browser.evaluate("document.getElementById('model').textContent") == "writing"
        until(lambda: browser.evaluate("document.getElementById('shot').naturalWidth") == 320,
              10, step=0.2)
        until(lambda: len(browser.evaluate(text)) > 80, 30, step=0.2)
        shot = tmp_path / "status-page.png"
        browser.screenshot(shot)
        if NOTES.is_dir():
            (NOTES / "status-page.png").write_bytes(shot.read_bytes())
        assert shot.stat().st_size > 10_000

        # /health turns 503 within 2 s of the draw step standing still, and 200 after.
        piece.process.send_signal(signal.SIGUSR1)
        asked = time.monotonic()
        until(lambda: get(f"{base}/health", timeout=2)[0] == 503, 2.0, step=0.02)
        unhealthy_after = time.monotonic() - asked
        status, body = get(f"{base}/health")
        assert "the screen has not drawn" in " ".join(json.loads(body)["problems"])
        until(lambda: get(f"{base}/health", timeout=2)[0] == 200, STALL_SECONDS + 2, step=0.02)
        healthy_after = time.monotonic() - asked
        print(f"/health: 503 {unhealthy_after:.2f} s after the draw step stalled for "
              f"{STALL_SECONDS} s, 200 again {healthy_after:.2f} s after")
        assert unhealthy_after < 2.0
        assert STALL_SECONDS <= healthy_after < STALL_SECONDS + 2

        # 200 malformed requests, 6 at a time (and slow ones among them): the piece writes on.
        shown_before = piece.count(r"shown '")
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            outcomes = collections.Counter(pool.map(
                lambda i: (label(MALFORMED[i % len(MALFORMED)]),
                           misbehave(port, MALFORMED[i % len(MALFORMED)])), range(200)))
        print("200 malformed requests, what each got:\n" + "\n".join(
            f"  {what}: {answer} x{count}" for (what, answer), count in sorted(outcomes.items())))
        assert sum(outcomes.values()) == 200
        assert piece.count(r"shown '") > shown_before + 5, "the piece stopped writing"
        assert get(f"{base}/health")[0] == 200
        assert sample(metrics(base), "permanent_tokens_shown") > sample(
            first, "permanent_tokens_shown")
        assert piece.process.poll() is None

        # The hum's process killed: a dropout, a restart, and the hum alive again.
        hum_pid = int(piece.wait_for(r"hum process (\d+), model process")[1])
        os.kill(hum_pid, signal.SIGKILL)
        until(lambda: sample(metrics(base), "permanent_process_restarts", process="hum") == 1,
              15, step=0.2)
        assert sample(metrics(base), "permanent_hum_dropouts") == 1
        until(lambda: json.loads(get(f"{base}/health")[1])["processes"]["hum"]["alive"], 10)
        assert json.loads(get(f"{base}/health")[1])["processes"]["hum"]["restarts"] == 1
        assert piece.terminate() < 2.0 and piece.process.returncode == 0, piece.log
    finally:
        if browser is not None:
            browser.close()
        piece.kill()
    assert "Traceback" not in piece.log, piece.log


def test_off_loopback_a_token_is_needed_and_a_taken_port_is_no_stop(embedded_model, tmp_path,
                                                                   monkeypatch):
    token = "a-long-token-for-the-test-0123456789"
    port = free_tcp_port()
    config = status_config(tmp_path, port, "  address: 0.0.0.0\n  token_env: PIECE_TOKEN\n")
    piece = Running(dict(os.environ, PIECE_TOKEN=token), "--windowed", "--config", str(config))
    try:
        piece.wait_for(r"status page on http://0\.0\.0\.0:\d+/ \(token needed\)")
        base = f"http://127.0.0.1:{port}"
        for path in ("/", "/health", "/metrics", "/events", "/thumbnail.jpg"):
            assert get(base + path)[0] == 401, path
            assert get(base + path, token="wrong")[0] == 401, path
        assert get(f"{base}/metrics", token=token)[0] == 200
        assert get(f"{base}/?token={token}")[0] == 200
    finally:
        piece.kill()

    # The same port, already taken: said once, and the piece writes on without the page.
    port = free_tcp_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        config = status_config(tmp_path, port)
        piece = Running(dict(os.environ), "--windowed", "--config", str(config))
        try:
            piece.wait_for(r"status page: cannot listen on 127\.0\.0\.1:\d+ .*the piece goes "
                           r"on without it")
            piece.wait_for(r"first token shown", timeout=90)
            assert piece.terminate() < 2.0 and piece.process.returncode == 0, piece.log
        finally:
            piece.kill()
    assert "Traceback" not in piece.log

    # A token the page needs that is not in the environment stops the launch, naming the key.
    monkeypatch.delenv("PIECE_TOKEN", raising=False)
    from conftest import run_cli
    config = status_config(tmp_path, port, "  address: 0.0.0.0\n  token_env: PIECE_TOKEN\n")
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 2, result.stderr
    assert "status.token_env: names PIECE_TOKEN, which is not set" in result.stderr


def test_check_reports_whether_the_ports_can_be_bound(tmp_path):
    from conftest import run_cli

    status_port, osc_port = free_tcp_port(), free_tcp_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"status:\n  enabled: true\n  port: {status_port}\n"
                      f"osc:\n  listen: 127.0.0.1:{osc_port}\n")
    result = run_cli("check", "--config", str(config))
    assert f"status page on 127.0.0.1:{status_port} (TCP): can be bound" in result.stdout
    assert f"OSC in on 127.0.0.1:{osc_port} (UDP): can be bound" in result.stdout
    with socket.socket() as squatter, socket.socket(type=socket.SOCK_DGRAM) as udp:
        squatter.bind(("127.0.0.1", status_port))
        squatter.listen()
        udp.bind(("127.0.0.1", osc_port))
        result = run_cli("check", "--config", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"status page on 127.0.0.1:{status_port} (TCP): cannot be bound (Address already "
            "in use)") in result.stdout
    assert f"OSC in on 127.0.0.1:{osc_port} (UDP): cannot be bound" in result.stdout
    assert "line 3: status.port" in result.stdout
