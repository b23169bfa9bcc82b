"""Results files of several sections (benchmarks.json): each keeps the machine that measured it."""

import json

from hyperdas.core import results
from hyperdas.core.results import read_json, write_section


def test_each_section_keeps_the_machine_and_time_that_measured_it(tmp_path, monkeypatch):
    path = tmp_path / "benchmarks.json"
    # a file from before sections carried their own record: its top-level record is the last write's
    path.write_text(json.dumps({"das_step": {"ratio": 1.2}, "written_at": "then", "environment": {"cpu": "Old"}}))
    monkeypatch.setattr(results, "environment", lambda: {"cpu": "New", "cpu_count": 2})
    write_section(path, "hyperdas_step", {"ratio": 0.8})
    saved = read_json(path)
    assert saved["das_step"] == {"ratio": 1.2, "written_at": "then", "environment": {"cpu": "Old"}}
    assert saved["hyperdas_step"]["ratio"] == 0.8 and saved["hyperdas_step"]["environment"]["cpu"] == "New"
    monkeypatch.setattr(results, "environment", lambda: {"cpu": "Third"})
    write_section(path, "hyperdas_step", {"ratio": 0.7})
    again = read_json(path)
    assert again["das_step"]["environment"] == {"cpu": "Old"}
    assert again["hyperdas_step"]["environment"]["cpu"] == "Third"
    assert again["environment"] == {"cpu": "Third"}  # the file's own: its last write
