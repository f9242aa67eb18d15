import pytest

from permanent.config import Config, load_config
from permanent.errors import ConfigError
from permanent.schema import load_yaml

from conftest import REPO, run_cli

SHIPPED = REPO / "config.yaml"


def test_shipped_config_is_the_defaults():
    loaded = load_config(SHIPPED)
    defaults = Config()
    for section in ("model", "text", "pacing", "display", "hum", "audio", "osc", "status"):
        assert getattr(loaded, section) == getattr(defaults, section), section


def test_every_shipped_setting_has_a_comment_with_its_default():
    lines = SHIPPED.read_text().splitlines()
    settings = 0
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.split("#")[0].strip().endswith(":"):
            continue   # blank, comment, or a section heading
        settings += 1
        assert "#" in line, f"config.yaml line {number + 1} has no comment: {line!r}"
        block = [line] + [l for l in lines[number + 1:number + 3] if l.strip().startswith("#")]
        assert any("Default:" in l for l in block), f"line {number + 1} does not state its default"
    assert settings >= 40


def test_empty_file_means_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# nothing set\n")
    assert load_config(path).pacing == Config().pacing


def test_values_are_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pacing:\n  tokens_per_second: 9\nhum:\n  preset: hall\n"
                    "display:\n  text_colour: [1, 2, 3]\n  rotation: 270\n"
                    "audio:\n  channels: 8\n  lead_speaker: 8.5\n")
    config = load_config(path)
    assert (config.audio.channels, config.audio.lead_speaker) == (8, 8.5)
    assert config.display.rotation == 270
    assert config.pacing.tokens_per_second == 9.0
    assert isinstance(config.pacing.tokens_per_second, float)
    assert config.hum.preset == "hall"
    assert config.display.text_colour == (1, 2, 3)


@pytest.mark.parametrize("text, line, key, words", [
    ("pacing:\n  tokens_per_secnd: 3\n", 2, "pacing.tokens_per_secnd", "did you mean 'tokens_per_second'"),
    ("pacing:\n  jitter: 0.2\n  hold_seconds: soon\n", 3, "pacing.hold_seconds", "expected a number"),
    ("hum:\n  volume: 1.5\n", 2, "hum.volume", "at most 1.0"),
    ("text:\n  top_k: 2.5\n", 2, "text.top_k", "whole number"),
    ("display:\n  fullscreen: 1\n", 2, "display.fullscreen", "true or false"),
    ("display:\n  text_colour: [1, 2]\n", 2, "display.text_colour", "a list of 3 values"),
    ("display:\n  text_colour: [1, 2, 300]\n", 2, "display.text_colour", "0 to 255"),
    ("audio:\n  sample_rate: 22050\n", 2, "audio.sample_rate", "one of 44100, 48000, 96000"),
    ("text:\n  min_tokens: 50\n  max_tokens: 10\n", 2, "text.min_tokens", "larger than max_tokens"),
    ("hum:\n  entropy_low_bits: 8\n", 2, "hum.entropy_low_bits", "below entropy_high_bits"),
    ("model:\n  device: gpu\n", 2, "model.device", "auto, cpu, cuda"),
    ("model:\n  server_url: gpu-box:8000\n  server_model: m\n", 2, "model.server_url",
     "http://"),
    ("model:\n  server_url: http://gpu-box:8000/v1\n", 2, "model.server_model", "/v1/models"),
    ("model:\n  server_api_key_env: sk-123abc\n", 2, "model.server_api_key_env",
     "never the key itself"),
    ("model:\n  fallback: local\n", 2, "model.fallback", "'embedded', 'wait'"),
    ("display:\n  quit_chord: ctrl+shift\n", 2, "display.quit_chord", "end it with a key"),
    ("pacing: 3\n", 1, "pacing", "expected a section of keys"),
    ("hum:\n  volume: 0.5\n  volume: 0.6\n", 3, "hum.volume", "appears twice"),
    ("text:\n  temperature: .nan\n", 2, "text.temperature", "must be a number (got nan)"),
    ("hum:\n  volume: 1" + "0" * 400 + "\n", 2, "hum.volume", "too large a number"),
    ("text:\n  drafts: 9\n", 2, "text.drafts", "at most 8"),
    ("text:\n  draft_by: word\n", 2, "text.draft_by", "sentence"),
    ("text:\n  openings: ['', ' ']\n", 2, "text.openings", "write []"),
    ("osc:\n  send_to: [\"desk:9000\", desk]\n", 2, "osc.send_to", "is not host:port"),
    ("osc:\n  listen: 0.0.0.0:70000\n", 2, "osc.listen", "a port from 1 to 65535"),
    ("osc:\n  allow_from: [lighting-desk]\n", 2, "osc.allow_from", "is not an IP address"),
    ("osc:\n  max_messages_per_second: 0\n", 2, "osc.max_messages_per_second", "greater than 0"),
    ("status:\n  enabled: true\n  address: 0.0.0.0\n", 3, "status.address",
     "set status.token_env"),
    ("status:\n  token_env: 3f9a-secret\n", 2, "status.token_env", "never the token itself"),
    ("status:\n  port: 0\n", 2, "status.port", "at least 1"),
    ("audio:\n  channels: 5\n", 2, "audio.channels", "one of 2, 4, 6, 8"),
    ("audio:\n  channels: 4\n  lead_speaker: 6\n", 3, "audio.lead_speaker",
     "the speakers are 1 to 4; use a value from 1 to 4.5"),
    ("audio:\n  lead_speaker: 2.5\n", 2, "audio.lead_speaker", "from 1 to 2"),
    ("audio:\n  lead_speaker: 0\n", 2, "audio.lead_speaker", "at least 1.0"),
    ("display:\n  rotation: 45\n", 2, "display.rotation", "one of 0, 90, 180, 270"),
])
def test_bad_values_name_the_key_and_line(text, line, key, words):
    with pytest.raises(ConfigError) as caught:
        load_yaml(Config, text, "config.yaml")
    message = str(caught.value)
    assert message.startswith(f"config.yaml, line {line}: {key}: "), message
    assert words in message


def test_broken_yaml_names_the_line():
    with pytest.raises(ConfigError, match=r"config.yaml, line 3: this is not valid YAML"):
        load_yaml(Config, "hum:\n  preset: closet\n   volume: 1\n", "config.yaml")


@pytest.mark.parametrize("text, line, key", [
    # On a scalar, an unsafe loader imports the module: code of the file's choosing runs.
    ("model:\n  name: !!python/module:permanent_yaml_probe\n", 2, "model.name"),
    # On a mapping and on a list, an unsafe loader calls the function with the arguments.
    ("model: !!python/object/apply:permanent_yaml_probe.ran\n  args: [1]\n", 1, "model"),
    ("text:\n  openings: !!python/object/apply:permanent_yaml_probe.ran [1]\n", 2,
     "text.openings"),
], ids=["scalar", "mapping", "list"])
def test_yaml_tags_that_run_code_are_refused_before_anything_runs(
        text, line, key, tmp_path, monkeypatch):
    probe = tmp_path / "ran"
    (tmp_path / "permanent_yaml_probe.py").write_text(
        f"import pathlib\npathlib.Path({str(probe)!r}).touch()\ndef ran(*a): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as refused:
        load_yaml(Config, text, "c.yaml")
    assert f"c.yaml, line {line}: {key}: the tag 'tag:yaml.org,2002:python/" in str(refused.value)
    assert "is not allowed in settings; remove it" in str(refused.value)
    assert not probe.exists(), "the file's code ran"


def test_cli_exits_2_and_starts_nothing_on_a_bad_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(SHIPPED.read_text().replace("tokens_per_second: 4.5", "tokens_per_second: -2"))
    done = run_cli("--config", str(path), "--windowed", "--duration", "5")
    line = 1 + next(i for i, l in enumerate(path.read_text().splitlines()) if "tokens_per_" in l)
    assert done.returncode == 2
    assert f"line {line}: pacing.tokens_per_second: must be greater than 0.0 (got -2" in done.stderr
    assert "hum playing" not in done.stderr and "window open" not in done.stderr


def test_cli_names_a_missing_preset_with_its_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("hum:\n  volume: 0.4\n  preset: attic\n")
    done = run_cli("check", "--config", str(path))
    assert done.returncode == 2
    assert "line 3: hum.preset: there is no preset called 'attic'" in done.stderr
    assert "closet" in done.stderr and "hall" in done.stderr


@pytest.mark.parametrize("name, said", [
    ("./weights/here", ("line 2: model.name: the folder", "weights/here does not exist")),
    ("someone/not-in-this-cache",
     ("line 2: model.name: model 'someone/not-in-this-cache' is not in the local",)),
], ids=["missing folder", "model id not cached"])
def test_cli_names_a_model_it_cannot_find(tmp_path, name, said):
    path = tmp_path / "config.yaml"
    path.write_text(f"model:\n  name: {name}\n")
    done = run_cli("--config", str(path), "--windowed")
    assert done.returncode == 1
    assert all(part in done.stderr for part in said), done.stderr
    assert "window open" not in done.stderr


def test_missing_config_file_is_named(tmp_path):
    done = run_cli("check", "--config", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2
    assert "nope.yaml: no such file" in done.stderr


def test_osc_and_status_are_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('osc:\n  send_to: ["192.168.1.20:9000", "[::1]:9001"]\n'
                    '  listen: "0.0.0.0:9002"\n  allow_from: [192.168.1.30, "::1"]\n'
                    "status:\n  enabled: true\n  address: 0.0.0.0\n  port: 9100\n"
                    "  token_env: PERMANENT_STATUS_TOKEN\n")
    config = load_config(path)
    assert config.osc.send_to == ["192.168.1.20:9000", "[::1]:9001"]
    assert config.osc.listen == "0.0.0.0:9002"
    assert config.status.port == 9100 and config.status.token_env == "PERMANENT_STATUS_TOKEN"
    assert Config().osc.send_to == [] and Config().osc.listen is None
    assert not Config().status.enabled and Config().status.address == "127.0.0.1"
