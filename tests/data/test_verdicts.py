"""The committed verdict record: a fresh machine rebuilds the filter's results without running a prompt."""

import gzip
import json

import pytest

from hyperdas.core.errors import ResultsError
from hyperdas.data.filter import FilterConfig, filter_domain
from hyperdas.data.verdicts import record_path

CONFIG = FilterConfig(attributes=("Country",), templates_per_attribute=2, selection_entities=8, max_entities=40)


def _payload(path):
    return json.loads(gzip.decompress(path.read_bytes()))


def test_a_record_serves_a_fresh_cache(synthetic_target, synthetic_data, tmp_path, monkeypatch):
    records = tmp_path / "results" / "filter_verdicts"
    monkeypatch.setenv("HYPERDAS_CACHE", str(tmp_path / "cache-a"))
    first = filter_domain(synthetic_target, synthetic_data, CONFIG.replace(chance_entities=10), False, records)
    path = record_path(records, synthetic_data.domain)
    written = path.read_bytes()
    payload = _payload(path)
    assert len(payload["right"]) + len(payload["wrong"]) == first.n_looked_up and first.n_from_record == 0
    assert payload["timing"]["prompts"] == first.n_checked > 0
    # no RAVEL text in the record: only hashes
    entity = next(iter(synthetic_data.entity_attributes))
    assert entity.encode() not in gzip.decompress(written)

    monkeypatch.setenv("HYPERDAS_CACHE", str(tmp_path / "cache-b"))  # a fresh machine with the record
    again = filter_domain(synthetic_target, synthetic_data, CONFIG.replace(chance_entities=10), False, records)
    assert again.n_checked == 0 and again.n_from_record == first.n_looked_up
    assert (again.known, again.selected, again.chance) == (first.known, first.selected, first.chance)
    assert again.cache_seconds_per_prompt == pytest.approx(first.cache_seconds_per_prompt)
    assert path.read_bytes() == written  # the same verdicts give the same bytes: nothing for git to commit


def test_a_record_of_other_weights_is_not_used(synthetic_target, synthetic_data, tmp_path, monkeypatch):
    records = tmp_path / "filter_verdicts"
    monkeypatch.setenv("HYPERDAS_CACHE", str(tmp_path / "cache-a"))
    first = filter_domain(synthetic_target, synthetic_data, CONFIG, False, records)
    path = record_path(records, synthetic_data.domain)
    payload = _payload(path) | {"model_fingerprint": "other-weights"}
    path.write_bytes(gzip.compress(json.dumps(payload).encode()))
    monkeypatch.setenv("HYPERDAS_CACHE", str(tmp_path / "cache-b"))
    again = filter_domain(synthetic_target, synthetic_data, CONFIG, False, records)
    assert again.n_from_record == 0 and again.n_checked == first.n_checked and again.known == first.known
    assert _payload(path)["model_fingerprint"] == first.model_fingerprint  # rewritten for these weights


def test_a_broken_record_is_named_with_its_fix(synthetic_target, synthetic_data, tmp_path, fresh_cache):
    records = tmp_path / "filter_verdicts"
    record_path(records, synthetic_data.domain).parent.mkdir(parents=True)
    record_path(records, synthetic_data.domain).write_bytes(b"not gzip")
    with pytest.raises(ResultsError, match="cannot be read.*git checkout") as err:
        filter_domain(synthetic_target, synthetic_data, CONFIG, False, records)
    assert "\n" not in str(err.value)
