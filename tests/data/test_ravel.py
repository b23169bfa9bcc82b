import hashlib
import http.server
import io
import json
import shutil
import tarfile
import threading
from pathlib import Path

import pytest

from hyperdas.data import ravel
from hyperdas.data.ravel import RavelDataError, load_domain, resolve_ravel_dir

needs_shared = pytest.mark.skipif(not ravel._complete(ravel.SHARED_DIR), reason="../shared/data/ravel not present")


@needs_shared
@pytest.mark.parametrize("domain", ravel.DOMAINS)
def test_official_domains_load(domain):
    data = load_domain(domain, ravel.SHARED_DIR)
    assert data.entity_attributes and data.attribute_to_prompts
    assert set(data.entity_to_split.values()) <= set(ravel.SPLITS)


@needs_shared
def test_city_has_the_paper_attributes():
    city = load_domain("city")
    assert {"Country", "Continent", "Language"} <= set(city.attributes)
    assert len(city.entity_attributes) == 3552
    with pytest.raises(RavelDataError, match=r"unknown attribute\(s\) \['Capital'\] for domain 'city'; valid:"):
        city.check_attributes(["Country", "Capital"])


def _copy_domain(tmp_path: Path, domain: str = "city") -> Path:
    for name in ravel.domain_files(domain).values():
        shutil.copy(ravel.SHARED_DIR / name, tmp_path / name)
    return tmp_path


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_unknown_domain_lists_valid():
    with pytest.raises(RavelDataError, match="unknown RAVEL domain 'cities'; valid: city, nobel_prize_winner"):
        load_domain("cities")


def test_missing_folder(tmp_path):
    with pytest.raises(RavelDataError, match="does not exist"):
        resolve_ravel_dir(tmp_path / "nope")


@needs_shared
def test_missing_file_is_named(tmp_path):
    folder = _copy_domain(tmp_path)
    (folder / "ravel_city_prompt_to_split.json").unlink()
    with pytest.raises(RavelDataError, match="missing RAVEL file .*ravel_city_prompt_to_split.json"):
        load_domain("city", folder)


@needs_shared
def test_malformed_json_is_named(tmp_path):
    folder = _copy_domain(tmp_path)
    (folder / "ravel_city_entity_to_split.json").write_text("{not json")
    with pytest.raises(RavelDataError, match="ravel_city_entity_to_split.json is not valid JSON"):
        load_domain("city", folder)


@needs_shared
def test_template_without_placeholder_is_named(tmp_path):
    folder = _copy_domain(tmp_path)
    _edit(folder / "ravel_city_attribute_to_prompts.json", lambda d: d["Country"].append("no slot here"))
    with pytest.raises(RavelDataError, match=r"template 'no slot here' under 'Country' must contain exactly one %s"):
        load_domain("city", folder)


@needs_shared
def test_bad_split_is_named(tmp_path):
    folder = _copy_domain(tmp_path)
    _edit(folder / "ravel_city_entity_to_split.json", lambda d: d.update(Aalborg="dev"))
    with pytest.raises(RavelDataError, match="key 'Aalborg' has split 'dev'"):
        load_domain("city", folder)


@needs_shared
def test_a_value_that_is_not_a_string_is_named(tmp_path):
    folder = _copy_domain(tmp_path)
    _edit(folder / "ravel_city_entity_attributes.json", lambda d: d["Aalborg"].update(Country=45))
    with pytest.raises(
        RavelDataError, match=r"entity 'Aalborg' has Country=45 \(int\); attribute values must be strings"
    ):
        load_domain("city", folder)


@needs_shared
def test_entities_without_a_split_are_counted_with_examples(tmp_path):
    folder = _copy_domain(tmp_path)
    _edit(folder / "ravel_city_entity_to_split.json", lambda d: [d.pop(e) for e in ("Aalborg", "Aarhus")])
    with pytest.raises(RavelDataError, match=r"2 entities have no split \(e.g. \['Aalborg', 'Aarhus'\]\)"):
        load_domain("city", folder)


def test_a_cache_that_is_a_file_is_named(tmp_path, monkeypatch):
    from hyperdas.core.cache import cache_root
    from hyperdas.core.errors import HyperDASError

    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("HYPERDAS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(HyperDASError, match="is a file, not a folder"):
        cache_root()


@needs_shared
def test_attribute_without_prompts_is_named(tmp_path):
    folder = _copy_domain(tmp_path)
    _edit(folder / "ravel_city_entity_attributes.json", lambda d: d["Aalborg"].update(Mayor="x"))
    with pytest.raises(RavelDataError, match=r"entity 'Aalborg' has attribute\(s\) \['Mayor'\] with no prompts"):
        load_domain("city", folder)


def test_environment_variable_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERDAS_RAVEL_DIR", str(tmp_path))
    assert resolve_ravel_dir() == tmp_path


# --- the download path, against a server on loopback -------------------------------------------


def _fake_archive(tmp_path: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ravel.ALL_FILES:
            payload = b"{}"
            info = tarfile.TarInfo(f"data/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


@pytest.fixture()
def loopback_server():
    served = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = served.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.end_headers()
            if body is not None:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture()
def no_local_data(monkeypatch, fresh_cache, tmp_path):
    monkeypatch.delenv("HYPERDAS_RAVEL_DIR", raising=False)
    monkeypatch.setattr(ravel, "SHARED_DIR", tmp_path / "no-shared")


def test_download_checks_sha256_and_unpacks_once(loopback_server, no_local_data, monkeypatch, tmp_path):
    served, base = loopback_server
    archive = _fake_archive(tmp_path)
    served["/data.tgz"] = archive
    monkeypatch.setenv("HYPERDAS_RAVEL_URL", base + "/data.tgz")
    monkeypatch.setattr(ravel, "RAVEL_SHA256", hashlib.sha256(archive).hexdigest())
    folder = resolve_ravel_dir()
    assert ravel._complete(folder)
    served.clear()  # a second call must not download again
    assert resolve_ravel_dir() == folder


def test_download_with_wrong_sha256_is_refused(loopback_server, no_local_data, monkeypatch, tmp_path):
    served, base = loopback_server
    served["/data.tgz"] = _fake_archive(tmp_path)
    monkeypatch.setenv("HYPERDAS_RAVEL_URL", base + "/data.tgz")
    with pytest.raises(RavelDataError, match="sha256 .* expected b148f0ded1979cb0.*not unpacking"):
        resolve_ravel_dir()


def test_offline_without_files_says_where_to_put_them(loopback_server, no_local_data, monkeypatch):
    _, base = loopback_server
    monkeypatch.setenv("HYPERDAS_RAVEL_URL", base + "/missing.tgz")
    with pytest.raises(RavelDataError, match="RAVEL data not found .*download of .* failed.*HYPERDAS_RAVEL_DIR"):
        resolve_ravel_dir()


@needs_shared
def test_a_duplicate_key_is_named(tmp_path):
    folder = _copy_domain(tmp_path)
    path = folder / "ravel_city_entity_attributes.json"
    text = path.read_text()
    path.write_text(text.replace("{", '{"Aalborg": {"Country": "Spain"}, ', 1))  # Aalborg twice
    with pytest.raises(RavelDataError, match="ravel_city_entity_attributes.json: key 'Aalborg' appears twice"):
        load_domain("city", folder)


@needs_shared
def test_a_template_without_a_split_is_named(tmp_path):
    folder = _copy_domain(tmp_path)
    _edit(folder / "ravel_city_attribute_to_prompts.json", lambda d: d["Country"].append("%s lies in the country of"))
    with pytest.raises(RavelDataError, match=r"1 template\(s\) .* have no split \(e.g. '%s lies in the country of'\)"):
        load_domain("city", folder)


def test_entities_without_a_value_are_never_drawn_for_that_attribute(synthetic_data, synthetic_target, fresh_cache):
    import dataclasses

    from hyperdas.data.filter import FilterConfig, filter_domain
    from hyperdas.data.pairs import PairConfig, build_pairs

    values = {e: dict(v) for e, v in synthetic_data.entity_attributes.items()}
    emptied = sorted(values)[::3]
    for entity in emptied:  # an empty value (as some nobel_prize_winner entities have), or none at all
        values[entity]["Country"] = ""
        values[entity].pop("Climate", None)
    data = dataclasses.replace(synthetic_data, entity_attributes=values)
    known = filter_domain(synthetic_target, data, FilterConfig(templates_per_attribute=None), progress=False)
    pairs = build_pairs(data, known, synthetic_target.tokenizer, PairConfig(max_pairs={"train": 200}))
    rows = pairs["train"]
    assert len(rows) and all(r["target"] and r["counterfactual_target"] for r in rows)
    used = {(r["counterfactual_entity"], r["attribute"]) for r in rows} | {(r["entity"], r["attribute"]) for r in rows}
    assert not any((e, a) in used for e in emptied for a in ("Country", "Climate"))
