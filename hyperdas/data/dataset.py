"""RAVEL-<model>: filter every requested domain, build its pairs, save one DatasetDict to disk."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from hyperdas.core.files import atomic_folder, write_text
from hyperdas.data.filter import FilterConfig, FilterResult, filter_domain
from hyperdas.data.pairs import PairConfig, build_pairs
from hyperdas.data.ravel import RavelDataError, load_domain

PAIRS_FOLDER = "datasets/ravel_pairs"
META = "pairs_meta.json"


def pairs_dir(results_root: str | Path, model_name: str) -> Path:
    """Where notebook 01 saves the pairs and later notebooks read them."""
    from hyperdas.core.results import results_dir

    return results_dir(results_root, model_name) / PAIRS_FOLDER


def filter_domains(
    target,
    attributes: dict[str, list[str]],
    ravel_dir=None,
    filter_config: FilterConfig = FilterConfig(),
    progress: bool = True,
    record_folder: str | Path | None = None,
):
    """Load and filter each requested domain: ({domain: RavelDomain}, {domain: FilterResult}). With
    `record_folder`, each domain's verdicts are read from and written to its committed record there."""
    if not attributes:
        raise RavelDataError("no domains requested: `attributes` maps a domain to its attribute list")
    datas, filtered = {}, {}
    for domain, names in attributes.items():
        datas[domain] = load_domain(domain, ravel_dir)
        datas[domain].check_attributes(list(names))
        config = filter_config.replace(domain=domain, attributes=tuple(names))
        filtered[domain] = filter_domain(target, datas[domain], config, progress=progress, record_folder=record_folder)
    return datas, filtered


def pairs_from(
    target,
    datas: dict,
    filtered: dict[str, FilterResult],
    pair_config: PairConfig = PairConfig(),
    attributes: dict[str, list[str]] | None = None,
):
    """Pairs of every filtered domain (or of the domains and attributes named in `attributes`),
    merged split by split into one DatasetDict."""
    from datasets import DatasetDict, concatenate_datasets

    chosen = attributes or {d: list(result.known) for d, result in filtered.items()}
    per_domain = [
        build_pairs(datas[d], filtered[d], target.tokenizer, pair_config.replace(target_attributes=tuple(names)))
        for d, names in chosen.items()
    ]
    return DatasetDict({s: concatenate_datasets([p[s] for p in per_domain]) for s in per_domain[0]})


def pairs_fingerprint(pairs) -> str:
    """sha256 of the pairs' content (every split, column and value)."""
    digest = hashlib.sha256()
    for split in sorted(pairs):
        for column in sorted(pairs[split].column_names):
            digest.update(json.dumps([split, column, pairs[split][column]], default=str).encode())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of a tokenizer's vocabulary: pairs store token positions, which only fit its tokens."""
    return hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest()


def save_pairs(pairs, folder: str | Path, meta: dict, tokenizer=None) -> Path:
    """Save the DatasetDict plus the configs that made it (pairs_meta.json), with the content's and
    (given the tokenizer that built them) the tokenizer's fingerprints."""
    folder = Path(folder)
    meta = {**meta, "content_sha256": pairs_fingerprint(pairs)}
    if tokenizer is not None:
        meta["tokenizer_sha256"] = tokenizer_fingerprint(tokenizer)
    with atomic_folder(folder) as tmp:  # the previous pairs stay loadable until the new ones are whole
        pairs.save_to_disk(str(tmp))
        write_text(tmp / META, json.dumps(meta, indent=1, sort_keys=True, default=str))
    return folder


def load_pairs(folder: str | Path, tokenizer=None):
    """Load pairs saved by `save_pairs` (clear error when notebook 01 has not run). Given the
    target's tokenizer, pairs built with another tokenizer are refused: their positions would not fit."""
    from datasets import load_from_disk

    folder = Path(folder)
    if not (folder / "dataset_dict.json").is_file():
        raise RavelDataError(f"no RAVEL pairs in {folder}: run notebooks/01_data.ipynb for this model first")
    meta_path = folder / META
    rebuild = "rebuild them with notebook 01 (its pairs_out parameter names the folder)"
    if not meta_path.is_file():  # without it nothing says which tokenizer the positions fit
        raise RavelDataError(f"the pairs in {folder} have no {META} (what built them, their fingerprints): {rebuild}")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RavelDataError(f"{meta_path} is damaged ({type(err).__name__}: {err}): {rebuild}") from None
    built_with = meta.get("tokenizer_sha256")
    if tokenizer is not None and built_with is not None and built_with != tokenizer_fingerprint(tokenizer):
        raise RavelDataError(
            f"the pairs in {folder} were built with the tokenizer of {meta.get('model', 'another model')}, whose "
            f"token positions do not fit this model's: build pairs for it (notebook 01, another pairs_out)"
        )
    try:
        pairs = load_from_disk(str(folder))
        found = pairs_fingerprint(pairs)  # reads every value: damaged bytes show here, not mid-training
    except Exception as err:  # a truncated .arrow file or a deleted split: name the folder and the fix
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise RavelDataError(f"the pairs in {folder} cannot be read ({first}): {rebuild}") from err
    if meta.get("content_sha256") not in (None, found):
        raise RavelDataError(
            f"the pairs in {folder} differ from the content fingerprint in {META} (damaged or edited): {rebuild}"
        )
    return pairs


def filter_table(filtered: dict[str, FilterResult]) -> list[dict]:
    """One row per (domain, attribute): prompts tried, accuracy, known entities per split."""
    rows = []
    for domain, result in filtered.items():
        for attribute in result.known:
            rows.append(
                {
                    "domain": domain,
                    "attribute": attribute,
                    "templates": len(result.selected[attribute]),
                    "prompts": result.n_prompts[attribute],
                    "accuracy": round(result.accuracy[attribute], 3),
                    **{f"known_{s}": n for s, n in result.known_entities_per_split[attribute].items()},
                }
            )
    return rows
