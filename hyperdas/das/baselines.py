"""The baselines HyperDAS must beat, run the same way for every (method, attribute, layer).

`run_baselines` trains DAS / MDAS for each instructed attribute and layer, evaluates every
trained intervention and plain activation patching ("full") on the same test pairs through
`hyperdas.target.evaluate.evaluate`, and returns one flat list of records that `baselines.json` holds
and the figures read. Source vectors of the test pairs are computed once per (attribute, layer).
Given HyperDAS's conflict set, each record also holds its conflict outcome on the same pairs: DAS,
MDAS and patching cannot read an instruction, so their share following the activations is what an
edit at that layer achieves on those pairs, the reference for HyperDAS's.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm

from hyperdas.core.intervals import hit_string
from hyperdas.das.interventions import FullInterchange, pca_subspace, random_subspace
from hyperdas.das.training import METHODS, DASConfig, select_rows, selected_indices, train_das
from hyperdas.target.conflict import conflict_outcomes
from hyperdas.target.evaluate import encode, evaluate, source_vectors
from hyperdas.target.hooks import can_start_after, check_layer
from hyperdas.target.layer_states import LayerStates, with_states

FULL = "full"
RANDOM, PCA = "random", "pca"  # untrained subspaces at the same k (RAVEL's reference points)
UNTRAINED = (FULL, RANDOM, PCA)
PCA_STATES = 512  # training pairs whose source entity states the PCA reads


def target_attributes(split) -> list[str]:
    """Instructed attributes with causal rows, sorted."""
    return sorted({a for a, kind in zip(split["target_attribute"], split["attribute_type"]) if kind == "causal"})


def attribute_jobs(split, attributes) -> list[tuple[str | None, str]]:
    """(domain, attribute) per baseline to train: one per attribute; with several domains, one per
    domain that has causal rows of it (domain None when the pairs hold one domain)."""
    domains = sorted(set(split["domain"]))
    if len(domains) == 1:
        return [(None, a) for a in attributes]
    causal = {
        (d, a) for d, a, k in zip(split["domain"], split["target_attribute"], split["attribute_type"]) if k == "causal"
    }
    return [(d, a) for d in domains for a in attributes if (d, a) in causal]


def _check_request(target, pairs, methods, attributes, layers) -> None:
    unknown = [m for m in methods if m not in (*METHODS, *UNTRAINED)]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; use any of {(*METHODS, *UNTRAINED)}")
    if not layers:
        raise ValueError("no layers given")
    for layer in layers:
        check_layer(target.n_layers, layer)
    if "test" not in pairs:
        raise ValueError(f"the pairs have no 'test' split (splits: {list(pairs)})")
    known = target_attributes(pairs["train"])
    missing = [a for a in attributes if a not in known]
    if missing:
        raise ValueError(f"no causal training pairs for attribute(s) {missing}; the dataset has {known}")


def _record(method, attribute, layer, config, scores, generation, **extra) -> dict:
    ((domain, per_attribute),) = ((d, a[attribute]) for d, a in scores["per_attribute"].items())
    out = {
        "method": method,
        "domain": domain,
        "attribute": attribute,
        "layer": layer,
        "k": config.k if method != FULL else None,
        **{m: per_attribute[m] for m in ("cause", "iso", "disentangle", "n_causal", "n_isolate")},
    }
    if generation is not None:
        out["generation"] = {m: generation["overall"][m] for m in ("cause", "iso", "disentangle")}
    return {**out, "seed": config.seed, "config": config.to_dict() if method in METHODS else None, **extra}


def untrained(method: str, target, pairs, config: DASConfig):
    """Patching, or a random or PCA subspace of rank `config.k` (the PCA of the source entity's
    states over up to PCA_STATES of the attribute's training pairs, seeded)."""
    if method == FULL:
        return FullInterchange()
    if method == RANDOM:
        return random_subspace(target.hidden_size, config.k, config.seed)
    rows = select_rows(pairs["train"], config.replace(method="mdas"), limit=PCA_STATES)
    return pca_subspace(source_vectors(target, config.layer, encode(target.tokenizer, rows)), config.k)


def _query_blind(target, pairs, config: DASConfig):
    """(encoded pairs, source vectors or None) of the attribute's `query_blind` rows, or None when the
    pairs have none (`hyperdas.data.pairs.PairConfig.query_blind_pairs`)."""
    split = pairs.get("query_blind")
    if split is None or config.target_attribute not in target_attributes(split):
        return None
    return encode(target.tokenizer, select_rows(split, config.replace(method="mdas"))), None


def run_baselines(
    target,
    pairs,
    base: DASConfig,
    methods=("das", "mdas", FULL),
    attributes=None,
    layers=None,
    generation: bool = True,
    checkpoint_root: str | Path | None = None,
    progress: bool = True,
    resume: bool = True,
    conflict: list[dict] | None = None,
) -> list[dict]:
    """Train and evaluate every (method, attribute, layer); one record each (see module doc).
    `resume=False` trains again what the checkpoints hold. `conflict`: conflict rows
    (`hyperdas.experiments.faithfulness.conflict_set`), scored per attribute into `record["conflict"]`."""
    attributes = list(attributes or target_attributes(pairs["train"]))
    layers = list(layers if layers is not None else [base.layer])
    _check_request(target, pairs, methods, attributes, layers)
    records = []
    jobs = [(d, a, layer) for d, a in attribute_jobs(pairs["train"], attributes) for layer in layers]
    for domain, attribute, layer in tqdm(jobs, desc="baselines", disable=not progress):
        config = base.replace(target_attribute=attribute, layer=layer, domain=domain)
        test_rows = selected_indices(pairs["test"], config.replace(method="mdas"))
        test = encode(target.tokenizer, pairs["test"].select(test_rows))
        # DAS and MDAS of one attribute read many of the same rows: their states are computed once
        states = LayerStates(target, layer) if can_start_after(target) else None
        sources = source_vectors(target, layer, test) if states is None else None
        blind = _query_blind(target, pairs, config)
        for method in methods:
            start = time.perf_counter()
            extra = {}
            if method in UNTRAINED:
                intervention = untrained(method, target, pairs, config)
            else:
                config = config.replace(method=method)
                name = f"{method}-{f'{domain}-' if domain else ''}{attribute}-L{layer}-k{config.k}-s{config.seed}"
                folder = None if checkpoint_root is None else Path(checkpoint_root) / name.replace(" ", "_")
                result = train_das(
                    target, pairs, config, checkpoint_dir=folder, progress=progress, resume=resume, states=states
                )
                intervention = result.intervention
                extra = {
                    "best_step": result.best_step,
                    "steps_run": len(result.history),
                    "val": result.best_val,
                    "train_seconds": round(result.seconds, 2),
                    "resumed_from": result.resumed_from,
                    "history": result.history,
                }
            scored = with_states(intervention, states)
            scores, rows = evaluate(target, layer, scored, test, sources)
            # per-pair outcomes, placed by their index in the test split / the conflict set, for intervals
            extra["outcomes"] = {"rows": test_rows, "hits": hit_string(rows)}
            generated = evaluate(target, layer, scored, test, sources, mode="generation")[0] if generation else None
            if blind is not None:  # does the method edit prompts that do not show the question?
                found = evaluate(target, layer, scored, *blind)[0]["overall"]
                extra["query_blind"] = {m: found[m] for m in ("cause", "iso", "disentangle")}
            mine = [
                i
                for i, r in enumerate(conflict or ())
                if r["target_attribute"] == attribute and domain in (None, r["domain"])
            ]
            if mine:
                extra["conflict"] = conflict_outcomes(target, layer, scored, [conflict[i] for i in mine])
                extra["conflict"]["rows"] = mine
            records.append(
                _record(
                    method,
                    attribute,
                    layer,
                    config,
                    scores,
                    generated,
                    wall_seconds=round(time.perf_counter() - start, 2),
                    **extra,
                )
            )
    return records


def table(records: list[dict], layer: int | None = None, metric_source: str = "teacher_forced") -> list[dict]:
    """Rows for printing: one per (domain, attribute, method) at `layer` (default: each record's)."""
    rows = []
    for r in records:
        if layer is not None and r["layer"] != layer:
            continue
        values = r if metric_source == "teacher_forced" else r.get("generation") or {}
        rows.append(
            {
                "domain": r["domain"],
                "attribute": r["attribute"],
                "method": r["method"],
                "layer": r["layer"],
                **{m: None if values.get(m) is None else round(values[m], 3) for m in ("cause", "iso", "disentangle")},
            }
        )
    return rows
