"""What notebook 03 writes after training HyperDAS: test records per attribute and inference mode,
the training log, saved selections and Householder vectors, and the results files.

The schema of `hyperdas.json` (read by `hyperdas.experiments.plots` and `hyperdas.batch.headline`):
`records` is a list of {method, mode, domain, attribute, layer, cause, iso, disentangle, n_causal,
n_isolate[, generation]}; `config` holds the model, hyperdas and train configs and the pairs folder;
`faithfulness` the conflict outcomes and held-out-entity scores per mode
(`hyperdas.experiments.faithfulness`), with `follows_activations` / `follows_instruction` {mode: share}.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hyperdas.core.config import ConfigError
from hyperdas.core.files import write_text
from hyperdas.core.intervals import hit_string, row_keys
from hyperdas.core.results import portable_path, read_json, write_json, write_section
from hyperdas.hyper.model import Inference, householder_vectors, selection_matrices, selection_record
from hyperdas.hyper.selection import MODES
from hyperdas.hyper.store import store_if_it_fits
from hyperdas.hyper.training import LOG, checkpoint_folder
from hyperdas.target.evaluate import evaluate

METRICS = ("cause", "iso", "disentangle")
RESULTS, LAYERS, TRAIN_LOG = "hyperdas.json", "hyperdas_layers.json", "train_log.jsonl"
TRAIN_DOMAINS = ("each", "together")
ALL_DOMAINS = "all"


def domains_of(pairs) -> list[str]:
    """The pairs' domains, in the order they first appear in the training split."""
    return list(dict.fromkeys(pairs["train"]["domain"]))


def domain_pairs(pairs, domain: str):
    """Every split's pairs of one domain."""
    from datasets import DatasetDict

    return DatasetDict({split: rows.filter(lambda r: r["domain"] == domain) for split, rows in pairs.items()})


def training_groups(pairs, train_domains: str = "each") -> dict[str, object]:
    """{group: its pairs}. "each": one HyperDAS per domain over all its attributes (the official
    code's); "together": one over every domain (`ALL_DOMAINS`), trained with balanced sampling. Pairs
    of one domain give one group either way, named by the domain."""
    if train_domains not in TRAIN_DOMAINS:
        raise ConfigError(f"train_domains={train_domains!r}: use one of {TRAIN_DOMAINS}")
    domains = domains_of(pairs)
    if len(domains) == 1:
        return {domains[0]: pairs}
    if train_domains == "together":
        return {ALL_DOMAINS: pairs}
    return {d: domain_pairs(pairs, d) for d in domains}


def studied_group(groups: dict, domain: str | None = None) -> str:
    """The group notebook 04 studies: `domain`'s (None: the first), or the all-domain model's."""
    if ALL_DOMAINS in groups and domain is not None:
        raise ConfigError(
            f"ablation_domain={domain!r}: the domains were trained together (train_domains='together'), one model "
            "serves them all: leave ablation_domain unset"
        )
    if domain is None:
        return next(iter(groups))
    if domain not in groups:
        raise ConfigError(f"ablation_domain={domain!r} is not among the pairs' domains {list(groups)}")
    return domain


def group_rows(test, group: str) -> list[int]:
    """Where a group's test pairs sit in the whole test split (a domain's pairs keep their order;
    the all-domain model's are all of them): what places its per-pair outcomes beside notebook 02's."""
    if group == ALL_DOMAINS:
        return list(range(len(test)))
    return [i for i, d in enumerate(test["domain"]) if d == group]


def group_checkpoint(out_dir: str | Path, layer: int, groups, group: str, seed: int | None = None) -> Path:
    """A group's checkpoint folder; with one domain the single-domain name (`hyperdas-layer<L>`)."""
    return checkpoint_folder(out_dir, layer, seed, group if len(groups) > 1 or group == ALL_DOMAINS else None)


def score_test_pairs(
    target, model, test, layer: int, generation: bool = False, seed: int | None = None, outcomes: dict | None = None
) -> tuple[list[dict], float]:
    """One record per (inference mode, domain, attribute) of the encoded test pairs (tagged with the
    training `seed` when given); and the seconds taken. The read passes are computed once for the
    three modes (an activation store, when it fits). A dict passed as `outcomes` receives the
    per-pair outcomes for intervals (`hyperdas.core.intervals`): the rows' keys and one hit string
    per mode."""
    records, start = [], time.perf_counter()
    store = store_if_it_fits(target, test, layer, model.read_rule)
    for mode in MODES:
        method = Inference(model, mode, store=store)
        scores, rows = evaluate(target, layer, method, test)
        if outcomes is not None:
            outcomes.setdefault("keys", row_keys(rows))
            outcomes[mode] = hit_string(rows)
        generated = evaluate(target, layer, method, test, mode="generation")[0] if generation else None
        for domain, attributes in scores["per_attribute"].items():
            for attribute, s in attributes.items():
                record = {
                    "method": "hyperdas",
                    "mode": mode,
                    "domain": domain,
                    "attribute": attribute,
                    "layer": layer,
                    **({"seed": seed} if seed is not None else {}),
                    **{m: s[m] for m in (*METRICS, "n_causal", "n_isolate")},
                }
                if generated:
                    g = generated["per_attribute"][domain][attribute]
                    record["generation"] = {m: g[m] for m in METRICS}
                records.append(record)
    return records, time.perf_counter() - start


def copy_train_log(checkpoint: str | Path, out_dir: str | Path) -> list[dict]:
    """The checkpoint's training log, tagged with the method, as `<out_dir>/train_log.jsonl`."""
    log = [json.loads(line) for line in (Path(checkpoint) / LOG).read_text().splitlines()]
    lines = "".join(json.dumps({"method": "hyperdas", **entry}) + "\n" for entry in log)
    write_text(Path(out_dir) / TRAIN_LOG, lines)
    return log


def comparison_rows(records: list[dict], baselines: str | Path, layer: int) -> list[dict]:
    """Test scores per method and attribute: HyperDAS's modes, and notebook 02's methods at `layer` if
    its `baselines.json` exists."""
    fields = ("attribute", *METRICS)
    rows = [{"method": f"hyperdas ({r['mode']})", **{m: r[m] for m in fields}} for r in records]
    if Path(baselines).is_file():
        rows += [
            {"method": b["method"], **{m: b[m] for m in fields}}
            for b in read_json(baselines)["records"]
            if b["layer"] == layer
        ]
    return rows


def save_selections(
    target, model, test, instructions: list[str], folder: str | Path, n_examples: int, n_householder: int
) -> list[dict]:
    """Selection matrices of the first `n_examples` test pairs in every mode (`test_examples.json`),
    and the Householder vectors of the first `n_householder` test instructions per attribute
    (`householder.json`, projected by the figures). Returns the selection records."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = list(range(min(n_examples, len(test))))
    saved = [
        selection_record(target.tokenizer, test, i, A, mode=mode, instruction=instructions[i])
        for mode in MODES
        for i, A in zip(index, selection_matrices(target, model, test, index, mode))
    ]
    write_text(folder / "test_examples.json", json.dumps(saved))
    by_attribute: dict[str, list[int]] = {}
    for i, r in enumerate(test.records):
        by_attribute.setdefault(r["target_attribute"], []).append(i)
    chosen = sorted(i for ids in by_attribute.values() for i in ids[:n_householder])
    vectors = householder_vectors(target, model, test, chosen) if chosen else None
    if vectors is not None:
        write_text(
            folder / "householder.json",
            json.dumps(
                {
                    "attribute": [test.records[i]["target_attribute"] for i in chosen],
                    "attribute_type": [test.records[i]["attribute_type"] for i in chosen],
                    "instruction": [instructions[i] for i in chosen],
                    "vectors": [[round(x, 5) for x in v] for v in vectors.tolist()],
                }
            ),
        )
    return saved


def write_results(
    out_dir: str | Path,
    *,
    model_name: str,
    configs: dict,
    pairs_folder: str | Path,
    seed: int,
    records: list[dict],
    result,
    test_seconds: float,
    results_root: str | Path,
    faithfulness: dict | None = None,
    faithfulness_by_seed: dict | None = None,
    train_seconds_by_seed: dict | None = None,
    by_group: dict | None = None,
    outcomes: dict | None = None,
) -> tuple[Path, Path]:
    """`hyperdas.json` (this run) and this layer's section of `hyperdas_layers.json` (every layer run
    so far, for the layer-sweep figure). `configs`: {"model", "hyperdas", "train"} configs.
    `faithfulness`: `hyperdas.experiments.faithfulness.faithfulness`'s block; its conflict shares are
    also written flat, as `follows_activations` / `follows_instruction` per mode. Several seeds:
    `records` holds every seed's (each tagged), `result` and `faithfulness` are the first seed's, and
    `faithfulness_by_seed` maps each seed to its block, `train_seconds_by_seed` to its training time.
    Several domains trained apart (or together): `result`, `faithfulness` and the by-seed maps are the
    first group's, and `by_group` (`by_group()`) holds every group's. `outcomes`: per group, its rows
    in the whole test split (`group_rows`), their keys and each seed's per-pair hits per mode, for the
    per-domain intervals (`hyperdas.experiments.figures.domains`)."""
    out_dir = Path(out_dir)
    layer = configs["hyperdas"].layer
    path = write_json(
        out_dir / RESULTS,
        {
            "model": model_name,
            "config": {**configs, "pairs": portable_path(pairs_folder, results_root)},
            "seed": seed,
            "records": records,
            "best_step": result.best_step,
            "best_val": result.best_val,
            "steps_run": len(result.history),
            "trainable_parameters": sum(p.numel() for p in result.model.parameters()),
            "timings": {
                "train_seconds": result.seconds,  # this run's, from the step it resumed from
                "train_seconds_all_runs": result.seconds_all_runs,  # the runs it resumed too (None: not kept)
                "resumed_from": result.resumed_from,
                "test_seconds": test_seconds,
                **({"train_seconds_by_seed": train_seconds_by_seed} if train_seconds_by_seed else {}),
            },
            "provenance": result.provenance,
            **(faithful_fields(faithfulness) if faithfulness else {}),
            **({"faithfulness_by_seed": faithfulness_by_seed} if faithfulness_by_seed else {}),
            **({"by_group": by_group} if by_group else {}),
            **({"outcomes": outcomes} if outcomes else {}),
        },
    )
    layers = write_section(
        out_dir / LAYERS,
        f"layer{layer}",
        {
            "records": records,
            "config": {"hyperdas": configs["hyperdas"], "train": configs["train"]},
            "seed": seed,
            "best_step": result.best_step,
            "steps_run": len(result.history),
            **(faithful_fields(faithfulness) if faithfulness else {}),
        },
    )
    return path, layers


def by_group(trained: dict, faithful: dict, train_domains: str) -> dict:
    """Every group's training and faithfulness, keyed by group then seed: {train_domains, groups:
    {group: {seed: {best_step, steps_run, train_seconds, faithfulness}}}} (`trained` and
    `faithful` keyed by (group, seed))."""
    groups: dict[str, dict] = {}
    for (group, seed), r in trained.items():
        groups.setdefault(group, {})[str(seed)] = {
            "best_step": r.best_step,
            "steps_run": len(r.history),
            "train_seconds": r.seconds,
            "train_seconds_all_runs": r.seconds_all_runs,
            "resumed_from": r.resumed_from,
            "faithfulness": faithful[group, seed],
        }
    return {"train_domains": train_domains, "groups": groups}


def faithful_fields(block: dict) -> dict:
    """The faithfulness block with its conflict shares also written flat, per mode."""
    conflict = block["conflict"]
    return {
        "faithfulness": block,
        "follows_activations": {mode: c["follows_activations"] for mode, c in conflict.items()},
        "follows_instruction": {mode: c["follows_instruction"] for mode, c in conflict.items()},
    }
