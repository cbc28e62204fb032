"""Configuration: TOML + environment, every problem reported with its path, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller.config import ConfigError, check_file, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_examples_are_valid() -> None:
    """The commented example configurations pass the checker."""
    assert check_file(ROOT / "controller" / "borne.example.toml") == []
    assert check_file(ROOT / "agents" / "agent.example.toml") == []


def test_every_problem_is_reported_with_its_path(tmp_path: Path) -> None:
    """All problems come back at once, each with its dotted field path."""
    f = tmp_path / "bad.toml"
    f.write_text(
        'log_level = "LOUD"\n[mqtt]\nport = 70000\nusr = "x"\npassword = "p"\n'
        '[database]\nurl = "mysql://x"\n[sessions]\nstale_factor = 1\n'
    )
    paths = {p.path for p in check_file(f)}
    assert paths == {
        "log_level",
        "mqtt.port",
        "mqtt.usr",
        "database.url",
        "sessions.stale_factor",
    }


def test_a_password_needs_a_username(tmp_path: Path) -> None:
    """Cross-field rules are explained too."""
    f = tmp_path / "c.toml"
    f.write_text('[mqtt]\npassword = "p"\n')
    (problem,) = check_file(f)
    assert (problem.path, problem.message) == ("mqtt", "a password is set without a username")


def test_agent_file_problems(tmp_path: Path) -> None:
    """An agent file is recognised by its [agent] table and checked by the agent's rules."""
    f = tmp_path / "agent.toml"
    f.write_text('[agent]\nap_id = "AP 1"\ncommand_key = "short"\nmqtt_port = "1883"\nfoo = 1\n')
    got = {p.path: p.message for p in check_file(f)}
    assert set(got) == {"agent.ap_id", "agent.command_key", "agent.mqtt_port", "agent.foo"}
    assert "expected int" in got["agent.mqtt_port"]


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BORNE__SECTION__FIELD wins over the file."""
    f = tmp_path / "c.toml"
    f.write_text("[mqtt]\nport = 1884\n")
    monkeypatch.setenv("BORNE__MQTT__PORT", "1999")
    monkeypatch.setenv("BORNE__MQTT__PASSWORD", "s3cret")
    monkeypatch.setenv("BORNE__MQTT__USERNAME", "ctl")
    s = load_settings(f)
    assert s.mqtt.port == 1999
    assert "s3cret" not in repr(s)
    assert s.mqtt.password is not None and s.mqtt.password.get_secret_value() == "s3cret"


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not TOML gives a ConfigError, not a traceback."""
    f = tmp_path / "c.toml"
    f.write_text("[mqtt\n")
    with pytest.raises(ConfigError) as err:
        load_settings(f)
    assert err.value.problems[0].path == "(file)"


@pytest.mark.parametrize(
    ("content", "code", "needle"),
    [
        ("[mqtt]\nport = 0\n", 2, "mqtt.port"),
        ("[mqtt\n", 2, "not valid TOML"),
        ('name = "ok"\n', 0, "OK"),
    ],
)
def test_config_check_command(tmp_path: Path, content: str, code: int, needle: str) -> None:
    """`borne config check` exits 2 with plain messages and no traceback, 0 when fine."""
    f = tmp_path / "c.toml"
    f.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "controller.cli", "config", "check", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == code
    assert needle in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_check_missing_file(tmp_path: Path) -> None:
    """A missing file is reported plainly."""
    proc = subprocess.run(
        [sys.executable, "-m", "controller.cli", "config", "check", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "no such file" in proc.stderr
