"""What the piece does when an inference server misbehaves in ways a real one seldom does
on demand: no log-probabilities, broken chunks, a wrong model name, silence, a refused key;
and that neither its key nor a password in its address reaches a log.

A small HTTP server on 127.0.0.1 speaks the OpenAI streaming format and misbehaves as each
test asks; the client, its timeouts and the messages are the piece's real ones.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from permanent.config import ModelConfig, TextConfig, masked_url
from permanent.events import TokenEvent
from permanent.model.server import generator as server_generator
from permanent.model.server.fallback import ServerWithFallback
from permanent.model.server.generator import ServerFault, ServerGenerator
from permanent.model.voice.prompt import SYSTEM_PROMPT

from conftest import run_cli

WORDS = [" The", " fans", " turn", " and", " the", " numbers", " stay", " still", "."]


def chunk(content, logprobs=True, finish=None) -> bytes:
    choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
    if logprobs:
        choice["logprobs"] = {"content": [{
            "token": content, "logprob": -0.5, "bytes": None,
            "top_logprobs": [{"token": t, "logprob": lp, "bytes": None}
                             for t, lp in ((content, -0.5), ("a", -1.5), ("b", -2.5))]}]}
    body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake",
            "choices": [choice]}
    return f"data: {json.dumps(body)}\n\n".encode()


class FakeServer:
    """An OpenAI-compatible server whose misbehaviour is set by `mode`."""

    def __init__(self):
        self.mode = "ok"
        self.requests: list[dict] = []
        self.keys: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

            def do_POST(self):
                fake.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                fake.keys.append(self.headers.get("Authorization"))
                if fake.mode == "unauthorized":
                    return self._json(401, {"error": {"message": "bad key"}})
                if fake.mode == "max_logprobs":
                    return self._json(400, {"error": {"message": "top_logprobs 20 exceeds "
                                                      "max_logprobs 5"}})
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                if fake.mode == "slow":
                    time.sleep(3.0)
                    return
                for i, word in enumerate(WORDS):
                    if fake.mode == "malformed" and i == 3:
                        self.wfile.write(b"data: {not json\n\n")
                        break
                    if fake.mode == "cut" and i == 4:
                        break
                    self.wfile.write(chunk(word, logprobs=fake.mode != "no_logprobs"))
                    self.wfile.flush()
                else:
                    self.wfile.write(chunk("", finish="stop") + b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

            def _json(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake():
    server = FakeServer()
    yield server
    server.close()


def settings(url, **more) -> ModelConfig:
    return ModelConfig(server_url=url, server_model=more.pop("model", "fake"), **more)


TEXT = TextConfig(seed=3, min_tokens=50, max_tokens=60)


def write(generator) -> list[TokenEvent]:
    return list(generator.write_pass(0))


def test_a_pass_from_the_server_carries_text_entropy_and_the_pass_rules(fake):
    generator = ServerGenerator(settings(fake.url), TEXT)
    events = write(generator)
    assert generator.fault is None
    text = "".join(e.text for e in events)
    assert text.endswith("The fans turn and the numbers stay still.")
    assert events[-1].is_last and not any(e.is_last for e in events[:-1])
    # The opening is given (0 bits); each streamed token has the estimate of its top 3.
    streamed = events[-len(WORDS):]
    assert [e.text for e in streamed] == WORDS
    assert all(1.0 < e.entropy_bits < 3.0 for e in streamed)
    assert all(e.entropy_bits == 0.0 for e in events[:-len(WORDS)])
    request = fake.requests[0]
    assert request["logprobs"] is True and request["top_logprobs"] == 20
    assert request["max_tokens"] == 60 and request["messages"][0]["role"] == "system"
    assert request["messages"][-1]["role"] == "assistant"     # the opening, to continue
    assert request["continue_final_message"] is True


def test_a_pass_stops_at_the_first_sentence_end_after_min_tokens(fake):
    generator = ServerGenerator(settings(fake.url), TextConfig(seed=3, min_tokens=2,
                                                               max_tokens=60))
    text = "".join(e.text for e in write(generator))
    assert text.endswith("still.") and generator.tokens_sampled == len(WORDS)


@pytest.mark.parametrize("mode, says", [
    ("no_logprobs", "--logits_all true"),
    ("max_logprobs", "--max-logprobs"),
    ("malformed", "broke off mid-pass"),
    ("cut", "mid-pass"),
    ("unauthorized", "model.server_api_key_env"),
])
def test_each_fault_ends_the_pass_with_a_message_naming_the_fix(fake, mode, says):
    fake.mode = mode
    generator = ServerGenerator(settings(fake.url), TEXT)
    events = write(generator)
    assert isinstance(generator.fault, ServerFault)
    assert says in str(generator.fault), generator.fault
    if events:   # a cut pass still ends: its last piece says so, and it fades as it stands
        assert events[-1].is_last


def test_a_silent_server_is_given_up_on_after_the_read_timeout(fake, monkeypatch):
    monkeypatch.setattr(server_generator, "READ_TIMEOUT_SECONDS", 1.0)
    fake.mode = "slow"
    generator = ServerGenerator(settings(fake.url), TEXT)
    started = time.monotonic()
    assert write(generator) == []
    took = time.monotonic() - started
    assert "did not answer within" in str(generator.fault)
    assert took < 3.0   # the timeout (with openai's one retry) and not the server's 3 s


def test_a_wrong_model_name_is_named_with_what_the_server_has(fake):
    generator = ServerGenerator(settings(fake.url, model="gpt-9"), TEXT)
    with pytest.raises(ServerFault, match=r"model.server_model 'gpt-9'.*serves fake"):
        generator.probe()


def test_nobody_listening_is_named_at_once():
    with socket.socket() as s:   # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    generator = ServerGenerator(settings(f"http://127.0.0.1:{port}/v1"), TEXT)
    started = time.monotonic()
    with pytest.raises(ServerFault, match="cannot reach the server.*model.server_url"):
        generator.probe()
    assert time.monotonic() - started < 3.0


class Standin:
    """The embedded model's place in the fallback, for testing the switching alone."""
    def __init__(self, text):
        self.text, self.tokens_sampled = text, 0

    def update_text(self, text):
        self.text = text

    def write_pass(self, pass_id):
        yield TokenEvent(pass_id, 0, "standing in.", 1.0, True)


def test_fallback_writes_while_the_server_is_down_and_returns_to_it(fake):
    fake.mode = "cut"
    both = ServerWithFallback(ServerGenerator(settings(fake.url), TEXT), "embedded", Standin)
    cut = list(both.write_pass(0))
    assert cut[-1].is_last and "standing in." not in [e.text for e in cut]
    assert [e.text for e in both.write_pass(1)] == ["standing in."]   # within the backoff
    fake.mode = "ok"
    both._retry_at = time.monotonic()   # the backoff is over
    back = "".join(e.text for e in both.write_pass(2))
    assert back.endswith("stay still.")


def test_fallback_wait_writes_nothing_until_the_server_answers(fake):
    fake.mode = "cut"
    both = ServerWithFallback(ServerGenerator(settings(fake.url), TEXT), "wait", Standin)
    list(both.write_pass(0))
    started = time.monotonic()
    assert list(both.write_pass(1)) == []
    assert time.monotonic() - started < 2.5   # it returns to show it is alive


def test_no_key_and_no_prompt_text_reach_the_log(fake, monkeypatch, caplog):
    monkeypatch.setenv("GALLERY_KEY", "sk-very-secret-0123")
    caplog.set_level(logging.DEBUG)
    fake.mode = "unauthorized"
    generator = ServerGenerator(settings(fake.url, server_api_key_env="GALLERY_KEY"), TEXT)
    both = ServerWithFallback(generator, "embedded", Standin)
    list(both.write_pass(0))
    assert fake.keys[-1] == "Bearer sk-very-secret-0123"
    assert "refused the key" in caplog.text
    assert "sk-very-secret" not in caplog.text
    assert SYSTEM_PROMPT[:40] not in caplog.text


# A user and password written into model.server_url (a proxy's basic auth) are the
# client's alone: every address the piece shows has them masked.

PASSWORD = "s3cret-horse-battery"


def with_credentials(url: str) -> str:
    return url.replace("http://", f"http://gallery:{PASSWORD}@")


def a_closed_port() -> int:
    with socket.socket() as s:   # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("url, shown", [
    ("http://user:pass@host/v1", "http://user:***@host/v1"),
    ("https://user:pass@host:8443/v1", "https://user:***@host:8443/v1"),
    ("http://sk-token@host/v1", "http://***@host/v1"),         # a user alone may be a key
    ("http://user:p%2Fa%40ss@host/v1", "http://user:***@host/v1"),
    ("http://user:a@b@host/v1", "http://user:***@host/v1"),     # an @ in the password
    ("http://gpu-box:8000/v1", "http://gpu-box:8000/v1"),
])
def test_the_password_in_an_address_is_masked(url, shown):
    assert masked_url(url) == shown


def test_a_password_ending_the_host_early_is_refused_without_repeating_it(tmp_path):
    """An unescaped / in a password ends the host there, so the rest would be read as the
    path, and shown: such an address is refused, and the message does not repeat it."""
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  server_url: http://gallery:pa/ss-word@gpu-box/v1\n"
                      "  server_model: fake\n")
    done = run_cli("check", "--config", str(config))
    assert done.returncode == 2
    assert ("line 2: model.server_url: has an @ after the end of its host; write a /, ?, # or "
            "@ in the user or password as %2F, %3F, %23 or %40.") in done.stderr
    assert "ss-word" not in done.stdout + done.stderr


def test_no_password_in_the_address_reaches_the_log_or_a_message(fake, caplog):
    """As the key above: a real refused request and a real unreachable server, with the
    password in the address, through the fallback that logs what failed."""
    caplog.set_level(logging.DEBUG)
    fake.mode = "unauthorized"
    generator = ServerGenerator(settings(with_credentials(fake.url)), TEXT)
    both = ServerWithFallback(generator, "embedded", Standin)
    list(both.write_pass(0))
    sent = base64.b64decode(fake.keys[-1].removeprefix("Basic ")).decode()
    assert sent == f"gallery:{PASSWORD}"                 # the server was given them ...
    shown = with_credentials(fake.url).replace(PASSWORD, "***")
    assert (f"the server at {shown} refused the user and password in model.server_url "
            "(HTTP 401)") in caplog.text
    assert generator.label == f"fake at {shown}"
    messages = [caplog.text, generator.label, str(generator.fault)]
    unreachable = ServerGenerator(
        settings(with_credentials(f"http://127.0.0.1:{a_closed_port()}/v1")), TEXT)
    with pytest.raises(ServerFault, match=r"cannot reach the server at http://gallery:\*\*\*@") \
            as refused:
        unreachable.probe()
    messages.append(str(refused.value))
    list(unreachable.write_pass(1))
    messages.append(str(unreachable.fault))
    assert all(PASSWORD not in text for text in messages), messages   # ... and no one else


def test_check_and_bench_server_print_the_address_masked(tmp_path):
    config = tmp_path / "config.yaml"
    url = with_credentials(f"http://127.0.0.1:{a_closed_port()}/v1")
    config.write_text(f"model:\n  server_url: {url}\n  server_model: fake\n"
                      "  fallback: wait\n")
    checked = run_cli("check", "--config", str(config))
    assert checked.returncode == 1
    assert "line 2: model.server_url: cannot reach the server at http://gallery:***@" \
        in checked.stdout
    benched = run_cli("bench", "server", "--config", str(config), "--seconds", "1")
    assert benched.returncode != 0
    assert "fake at http://gallery:***@127.0.0.1" in benched.stderr
    assert "cannot reach the server at http://gallery:***@" in benched.stderr
    config.write_text("model:\n  server_url: http://gallery:" + PASSWORD + "@gpu box/v1\n"
                      "  server_model: fake\n")
    refused = run_cli("check", "--config", str(config))
    assert refused.returncode == 2
    assert "(got 'http://gallery:***@gpu box/v1')" in refused.stderr
    for done in (checked, benched, refused):
        assert PASSWORD not in done.stdout + done.stderr, done.stdout + done.stderr


@pytest.mark.slow
def test_the_running_piece_logs_the_address_masked(tmp_path):
    """The whole program at its most talkative (-v), the server unreachable: the piece
    hums and waits, and names the server in its log, masked."""
    from test_piece import Running

    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  server_url: "
                      f"{with_credentials(f'http://127.0.0.1:{a_closed_port()}/v1')}\n"
                      "  server_model: fake\n  fallback: wait\n")
    env = dict(os.environ, PULSE_SERVER="unix:/nonexistent/socket")
    piece = Running(env, "--windowed", "--config", str(config))
    try:
        piece.wait_for(r"inference server: cannot reach the server at "
                       r"http://gallery:\*\*\*@127\.0\.0\.1:\d+/v1 .*the piece waits")
        piece.wait_for(r"window open")
        piece.terminate()
        assert piece.process.returncode == 0, piece.log
    finally:
        piece.kill()
    assert PASSWORD not in piece.log and "gallery:***@" in piece.log
