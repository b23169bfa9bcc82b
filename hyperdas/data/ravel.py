"""RAVEL's official files: find them, check their schema, load one domain.

Where the files come from, in order: a folder the caller names; the environment variable
HYPERDAS_RAVEL_DIR; ``../shared/data/ravel`` beside this repository when it exists; else the
pinned ``data.tgz`` of explanare/ravel, downloaded once into the cache and checked by sha256.
The name "synthetic" instead selects the made-up test world of ``hyperdas.data.synthetic``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tarfile
import urllib.request
from pathlib import Path

from hyperdas.core.cache import cache_root, convert_once, file_sha256
from hyperdas.core.errors import HyperDASError

DOMAINS = ("city", "nobel_prize_winner", "occupation", "physical_object", "verb")
SPLITS = ("train", "val", "test")
RAVEL_COMMIT = "e421fc9e132b3613b1d0020f856d539217fb30ca"
RAVEL_SHA256 = "b148f0ded1979cb0e17e301cfda41cb120517a109d3c758cc768e376946d96bc"
RAVEL_URL = f"https://github.com/explanare/ravel/raw/{RAVEL_COMMIT}/data.tgz"
SYNTHETIC = "synthetic"  # ravel_dir value naming the made-up test world of hyperdas.data.synthetic
SHARED_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ravel"


class RavelDataError(HyperDASError, ValueError):
    """Missing or malformed RAVEL data; the message names the file and key."""


def domain_files(domain: str) -> dict[str, str]:
    return {
        "entity_attributes": f"ravel_{domain}_entity_attributes.json",
        "attribute_to_prompts": f"ravel_{domain}_attribute_to_prompts.json",
        "entity_to_split": f"ravel_{domain}_entity_to_split.json",
        "prompt_to_split": f"ravel_{domain}_prompt_to_split.json",
        "wikipedia_prompts": f"wikipedia_{domain}_entity_prompts.json",
    }


ALL_FILES = tuple(name for domain in DOMAINS for name in domain_files(domain).values())


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ALL_FILES)


def _download(url: str, out: Path) -> None:
    archive = out / "data.tgz"
    with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as sink:
        while block := response.read(1 << 20):
            sink.write(block)
    actual = file_sha256([archive])
    if actual != RAVEL_SHA256:
        raise RavelDataError(
            f"RAVEL data.tgz from {url} has sha256 {actual[:16]}…, expected {RAVEL_SHA256[:16]}…: "
            "corrupt or a different version; not unpacking it"
        )
    with tarfile.open(archive) as tar:
        tar.extractall(out / "unpacked", filter="data")
    archive.unlink()
    found = {p.name: p for p in (out / "unpacked").rglob("*.json")}
    missing = [name for name in ALL_FILES if name not in found]
    if missing:
        raise RavelDataError(f"RAVEL data.tgz lacks {len(missing)} expected file(s), e.g. {missing[0]}")
    for name in ALL_FILES:
        found[name].rename(out / name)


def resolve_ravel_dir(ravel_dir: str | Path | None = None, download: bool = True) -> Path:
    """The folder holding RAVEL's 25 JSON files (see the module docstring for the search order)."""
    named = ravel_dir or os.environ.get("HYPERDAS_RAVEL_DIR")
    if named == SYNTHETIC:
        from hyperdas.data.synthetic import synthetic_ravel_dir

        return synthetic_ravel_dir()
    if named:
        folder = Path(named).expanduser()
        if not folder.is_dir():
            raise RavelDataError(f"RAVEL folder {folder} does not exist")
        return folder
    if _complete(SHARED_DIR):
        return SHARED_DIR
    cached = cache_root() / "ravel" / RAVEL_COMMIT[:12]
    if _complete(cached):
        return cached
    url = os.environ.get("HYPERDAS_RAVEL_URL", RAVEL_URL)
    if not download:
        raise RavelDataError(_where_to_put_them(cached, "download disabled"))
    try:
        return convert_once(cached, lambda out: _download(url, out))
    except OSError as err:  # URLError, timeouts, refused connections
        raise RavelDataError(_where_to_put_them(cached, f"download of {url} failed: {err}")) from None


def _where_to_put_them(cached: Path, why: str) -> str:
    return (
        f"RAVEL data not found ({why}). Put the 25 JSON files of explanare/ravel's data.tgz "
        f"(commit {RAVEL_COMMIT[:7]}) in a folder and pass it as ravel_dir or set HYPERDAS_RAVEL_DIR, "
        f"or unpack them into {cached}"
    )


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise RavelDataError(f"missing RAVEL file {path}")

    def unique(pairs):  # json keeps the last of two equal keys without a word
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise RavelDataError(f"{path.name}: key {key!r} appears twice; keep one (its values would be lost)")
            seen.add(key)
        return dict(pairs)

    try:
        data = json.loads(path.read_text(), object_pairs_hook=unique)
    except json.JSONDecodeError as err:
        raise RavelDataError(f"{path.name} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise RavelDataError(f"{path.name} must hold a JSON object at the top level")
    return data


@dataclasses.dataclass(frozen=True)
class RavelDomain:
    domain: str
    entity_attributes: dict[str, dict[str, str]]
    attribute_to_prompts: dict[str, list[str]]
    entity_to_split: dict[str, str]
    prompt_to_split: dict[str, str]
    wikipedia_prompts: dict[str, dict]

    @property
    def attributes(self) -> list[str]:
        return list(self.attribute_to_prompts)

    def check_attributes(self, attributes: list[str]) -> None:
        unknown = [a for a in attributes if a not in self.attribute_to_prompts]
        if unknown:
            raise RavelDataError(f"unknown attribute(s) {unknown} for domain {self.domain!r}; valid: {self.attributes}")


def _check_split(name: str, mapping: dict) -> None:
    for key, split in mapping.items():
        if split not in SPLITS:
            raise RavelDataError(f"{name}: key {key!r} has split {split!r}; expected one of {SPLITS}")


def _check_template(name: str, key: str, template: str) -> None:
    if not isinstance(template, str) or template.count("%s") != 1:
        raise RavelDataError(f"{name}: template {template!r} under {key!r} must contain exactly one %s")


def load_domain(domain: str, ravel_dir: str | Path | None = None) -> RavelDomain:
    """Load and validate one RAVEL domain, or a domain of one's own: any name whose five files (named
    as RAVEL's, `domain_files`) are in the folder (docs/own-model.md)."""
    files = domain_files(domain)
    named = ravel_dir or os.environ.get("HYPERDAS_RAVEL_DIR")  # one's own domain lives in a named folder
    folder = resolve_ravel_dir(ravel_dir) if domain in DOMAINS or named else None
    if folder is None or not all((folder / name).is_file() for name in files.values()):
        if domain not in DOMAINS:
            raise RavelDataError(
                f"unknown RAVEL domain {domain!r}; valid: {', '.join(DOMAINS)}, or a domain of your own whose "
                f"files ({', '.join(files.values())}) are in the folder named by ravel_dir"
            )
    raw = {field: _read_json(folder / name) for field, name in files.items()}

    prompts = raw["attribute_to_prompts"]
    for attribute, templates in prompts.items():
        if not isinstance(templates, list) or not templates:
            raise RavelDataError(f"{files['attribute_to_prompts']}: {attribute!r} must map to a non-empty list")
        for template in templates:
            _check_template(files["attribute_to_prompts"], attribute, template)
    for entity, values in raw["entity_attributes"].items():
        if not isinstance(values, dict):
            raise RavelDataError(f"{files['entity_attributes']}: entity {entity!r} must map to an object")
        unknown = set(values) - set(prompts)
        if unknown:
            raise RavelDataError(
                f"{files['entity_attributes']}: entity {entity!r} has attribute(s) {sorted(unknown)} "
                f"with no prompts in {files['attribute_to_prompts']}"
            )
        not_text = {a: v for a, v in values.items() if not isinstance(v, str)}
        if not_text:
            attribute, value = next(iter(not_text.items()))
            raise RavelDataError(
                f"{files['entity_attributes']}: entity {entity!r} has {attribute}={value!r} "
                f"({type(value).__name__}); attribute values must be strings"
            )
    unsplit = [e for e in raw["entity_attributes"] if e not in raw["entity_to_split"]]
    if unsplit:
        raise RavelDataError(
            f"{files['entity_to_split']}: {len(unsplit)} entit{'y has' if len(unsplit) == 1 else 'ies have'} no split "
            f"(e.g. {unsplit[:3]}); give every entity of {files['entity_attributes']} one of {SPLITS}"
        )
    _check_split(files["entity_to_split"], raw["entity_to_split"])
    _check_split(files["prompt_to_split"], raw["prompt_to_split"])
    unsplit = [t for ts in prompts.values() for t in ts if t not in raw["prompt_to_split"]]
    if unsplit:  # such a template would silently never be used
        raise RavelDataError(
            f"{files['prompt_to_split']}: {len(unsplit)} template(s) of {files['attribute_to_prompts']} have no split "
            f"(e.g. {unsplit[0]!r}); give each one of {SPLITS}"
        )
    for template, info in raw["wikipedia_prompts"].items():
        _check_template(files["wikipedia_prompts"], "(key)", template)
        if not isinstance(info, dict) or info.get("split") not in SPLITS:
            raise RavelDataError(f"{files['wikipedia_prompts']}: {template!r} needs a split in {SPLITS}")
    return RavelDomain(domain=domain, **raw)
