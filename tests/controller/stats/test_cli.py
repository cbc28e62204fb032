"""``borne simulate`` then ``borne stats export``: the open-data CSV matches the truth."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from controller.cli import main
from controller.stats._export import COMMUNE_COLUMNS, FLOW_COLUMNS
from tests.testbed import MosquittoBroker


def test_simulate_then_export_matches_truth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every exported commune and flow equals the simulator's truth and counts ≥ k."""
    monkeypatch.setenv("BORNE__DATABASE__URL", f"sqlite+aiosqlite:///{tmp_path}/b.db")
    day = "2026-07-14"
    assert main(["simulate", "--date", day, "--scale", "0.05", "--truth", str(tmp_path)]) == 0
    assert "cellules publiées" in capsys.readouterr().out
    truth = json.loads((tmp_path / f"truth-{day}.json").read_text())
    out = tmp_path / "communes.csv"
    assert main(["stats", "export", "--day", day, "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert rows and tuple(rows[0]) == COMMUNE_COLUMNS
    for row in rows:
        assert int(row["visiteurs"]) == truth["visitors"][row["code_insee"]] >= 11
        assert row["commune"] and row["bruit"] == "non"
    assert main(["stats", "export", "--day", day, "--flows"]) == 0
    flows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert flows and tuple(flows[0]) == FLOW_COLUMNS
    expected = {(f["origin"], f["destination"]): f["visitors"] for f in truth["flows"]}
    for f in flows:
        key = (f["code_insee_origine"], f["code_insee_destination"])
        assert int(f["visiteurs"]) == expected[key] >= 11


def test_optout_and_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """borne stats optout stores a device; a bad MAC or a bad date is refused clearly."""
    monkeypatch.setenv("BORNE__DATABASE__URL", f"sqlite+aiosqlite:///{tmp_path}/b.db")
    assert main(["stats", "optout", "AA:BB:CC:DD:EE:FF"]) == 0
    assert "exclu" in capsys.readouterr().out
    assert main(["stats", "optout", "not-a-mac"]) == 2
    assert "invalide" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["stats", "export", "--day", "14/07/2026"])
    assert "AAAA-MM-JJ" in capsys.readouterr().err


def test_simulate_over_mqtt_then_export_matches_truth(
    mosquitto: MosquittoBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``borne simulate --mqtt``: real agents on the broker, the controller's pipeline,
    then the open-data export equals the truth written beside."""
    monkeypatch.setenv("BORNE__DATABASE__URL", f"sqlite+aiosqlite:///{tmp_path}/m.db")
    day = "2026-08-15"
    argv = ["simulate", "--mqtt", f"{mosquitto.host}:{mosquitto.port}", "--date", day]
    argv += ["--communes", "3", "--scale", "0.0015", "--step", "900", "--truth", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "0 échecs" in out and "cellules publiées" in out
    truth = json.loads((tmp_path / f"truth-{day}.json").read_text())
    assert main(["stats", "export", "--day", day]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3
    for row in rows:
        assert int(row["visiteurs"]) == truth["visitors"][row["code_insee"]]


def test_simulate_refuses_a_bad_broker_address(capsys: pytest.CaptureFixture[str]) -> None:
    """--mqtt wants HOST:PORT."""
    with pytest.raises(SystemExit):
        main(["simulate", "--mqtt", "localhost"])
    assert "HOST:PORT" in capsys.readouterr().err
