"""The filter's verdicts as a committed record beside a run's results: for every prompt the filter
needed, whether the target answered it right, keyed by a hash of (template, entity, value). No RAVEL
text goes into the record, and a fresh machine rebuilds the same pairs without running the model on
a prompt again (the filter of all five domains costs about an hour on a 2-core CPU).

A record is used only for the weights it was made with (the filter's model fingerprint); for other
weights it is ignored and the prompts are run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from hyperdas.core.errors import ResultsError
from hyperdas.core.files import atomic_path

FOLDER = "filter_verdicts"
FORMAT = 1


def key_hash(key: str) -> str:
    """64 bits of sha256: a collision among a few million keys has a chance below 1e-6."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def record_path(folder: str | Path, domain: str) -> Path:
    return Path(folder) / f"{domain}.json.gz"


def read_record(path: str | Path, model_fingerprint: str) -> tuple[dict[str, bool], dict]:
    """({key hash: verdict}, timing) of the record at `path`; empty when there is none or it was made
    with other weights."""
    path = Path(path)
    if not path.is_file():
        return {}, {}
    try:
        payload = json.loads(gzip.decompress(path.read_bytes()))
        if payload.get("format") != FORMAT:
            raise ValueError(f"format {payload.get('format')!r}, not {FORMAT}")
        if payload["model_fingerprint"] != model_fingerprint:
            return {}, {}
        verdicts = {h: True for h in payload["right"]} | {h: False for h in payload["wrong"]}
        return verdicts, payload.get("timing") or {}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ResultsError(
            f"the filter's verdict record {path} cannot be read ({err}): restore it (git checkout -- {path}) "
            "or delete it, and the filter runs those prompts again"
        ) from err


def write_record(path: str | Path, verdicts: dict[str, bool], model_fingerprint: str, domain: str, timing: dict):
    """Write {key: verdict} as a record (hashed keys, sorted, gzip without a timestamp: the same verdicts
    give the same bytes, so a rerun leaves git with nothing to commit)."""
    hashed = {key_hash(k): v for k, v in verdicts.items()}
    payload = {
        "format": FORMAT,
        "domain": domain,
        "model_fingerprint": model_fingerprint,
        "key": "sha256 of template + TAB + entity + TAB + value, first 16 hex digits",
        "timing": timing,  # what computing these verdicts cost: {prompts, seconds}
        "right": sorted(h for h, ok in hashed.items() if ok),
        "wrong": sorted(h for h, ok in hashed.items() if not ok),
    }
    data = gzip.compress(json.dumps(payload, sort_keys=True).encode(), mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
