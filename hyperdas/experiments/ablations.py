"""The leakage ablations of notebook 04 (method doc section 4), one function each.

Every function takes an `AblationRunner` (`hyperdas.experiments.ablation_runner`: target, pairs, the
base HyperDAS configuration, the ablation settings) and returns records for `ablations.json`:
``{"ablation", "variant", "overall": {cause, iso, disentangle}, "per_attribute": {attribute: {...}},
"seed", "config", ...}``, scored on the same test pairs through `hyperdas.target.evaluate.evaluate`.
Variants that train are trained by the runner once per configuration (shared between ablations,
checkpointed and resumable under its folder) for `steps` steps each; `inference_mode` and `controls`
score a given trained model (notebook 04: notebook 03's). `run(name, runner, ...)` runs one by name;
`describe(name, records)` turns its numbers into sentences.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from hyperdas.core.results import portable_path, write_json
from hyperdas.experiments import diagnosis
from hyperdas.experiments.ablation_runner import (
    CONTROLS,
    CROSS_ATTENTION,
    SPARSITY,
    AblationRunner,
)
from hyperdas.experiments.ablation_text import describe
from hyperdas.experiments.leakage import (
    BLANKED_INSTRUCTION,
    LOOKUP_INSTRUCTION,
    FixedSelection,
    FixedSubspace,
    LookupTable,
    conflict_outcomes,
    random_orthonormal,
    swapped,
)
from hyperdas.experiments.selection_analysis import saved_selections, selection_stats, subtoken_picks
from hyperdas.hyper.model import HyperDAS, Inference
from hyperdas.hyper.selection import MODES
from hyperdas.hyper.training import encoded_pairs

# --- the ablations -------------------------------------------------------------------------------


def blocks_cross_attention(runner: AblationRunner, n_blocks=None, cross_attention=None) -> list[dict]:
    """1. N decoder blocks x {both cross-attentions, no source, no base, neither} (N=0: no blocks,
    so no cross-attention either: one run)."""
    n_blocks = list(n_blocks if n_blocks is not None else runner.settings.n_blocks)
    cross = list(cross_attention if cross_attention is not None else runner.settings.cross_attention)
    if not n_blocks or not cross:
        raise ValueError("blocks_cross_attention: the grid is empty (no block counts or no cross-attention settings)")
    unknown = [c for c in cross if c not in CROSS_ATTENTION]
    if unknown:
        raise ValueError(f"unknown cross-attention setting(s) {unknown}; use {tuple(CROSS_ATTENTION)}")
    too_many = [n for n in n_blocks if not 0 <= n <= runner.target.n_layers]
    if too_many:
        raise ValueError(
            f"block counts {too_many} out of range: {runner.target.name} has {runner.target.n_layers} blocks"
        )
    records = []
    for n in n_blocks:
        for c in cross if n > 0 else ["n/a"]:
            source_ca, base_ca = CROSS_ATTENTION.get(c, (True, True))
            config = runner.config.replace(n_blocks=n, source_ca=source_ca, base_ca=base_ca)
            result = runner.trained(config)
            records.append(
                runner.record(
                    "blocks_cross_attention",
                    f"N={n}, {c}",
                    runner.score(Inference(result.model, runner.settings.mode)),
                    config,
                    n_blocks=n,
                    cross_attention=c,
                    train_seconds=result.seconds,
                )
            )
    return records


def sparsity(runner: AblationRunner, settings=None) -> list[dict]:
    """2. Sparsity penalty on (default schedule) / off / too strong: scores, selection entropy, mass on
    the entity's last token, and the selection matrices of a few test examples."""
    settings = list(settings if settings is not None else runner.settings.sparsity)
    if not settings or any(s not in SPARSITY for s in settings):
        raise ValueError(f"sparsity settings {settings}: give one or more of {SPARSITY}")
    base, records = runner.train_config, []
    for s in settings:
        factor = {"default": 1.0, "off": 0.0, "strong": runner.settings.strong_factor}[s]
        train = base.replace(sparsity_from=base.sparsity_from * factor, sparsity_to=base.sparsity_to * factor)
        result = runner.trained(runner.config, train)
        records.append(
            runner.record(
                "sparsity",
                s,
                runner.score(Inference(result.model, runner.settings.mode)),
                sparsity_from=train.sparsity_from,
                sparsity_to=train.sparsity_to,
                **selection_stats(runner, result.model),
                selections=saved_selections(runner, result.model),
            )
        )
    return records


def symmetric(runner: AblationRunner, offsets: int = 8) -> list[dict]:
    """3. Symmetric vs asymmetric pair features: which entity sub-token is picked, per attribute.
    A third variant toggles our position-offset features on the asymmetric head (`offsets`
    buckets when the configuration has none, none when it has them)."""
    own = runner.config.position_offsets
    toggled = 0 if own else offsets
    variants = [
        ("asymmetric", False, own),
        ("symmetric", True, own),
        (f"asymmetric, offsets {toggled}" if toggled else "asymmetric, no offsets", False, toggled),
    ]
    records = []
    for name, sym, n in variants:
        config = runner.config.replace(symmetric_features=sym, position_offsets=n)
        model = runner.trained(config).model
        records.append(
            runner.record(
                "symmetric",
                name,
                runner.score(Inference(model, runner.settings.mode)),
                config,
                picks=subtoken_picks(runner, model),
            )
        )
    return records


def _lookup_model(keys):
    def build(target, config):
        model = HyperDAS(target, config)
        model.hypernetwork = LookupTable(keys, target.hidden_size)
        return model

    return build


def _subset(enc, index: list[int]):
    return type(enc)(**{f.name: [getattr(enc, f.name)[i] for i in index] for f in dataclasses.fields(enc)})


def lookup_table(runner: AblationRunner) -> list[dict]:
    """4. The hypernetwork replaced by one free vector per (source entity, attribute), scored apart
    on pairs whose key was seen in training and pairs whose key was not (a memorised table has
    nothing to look up there), on `test` and, when the pairs have it, `test_entity`; the HyperDAS
    variant on the same pairs beside it."""
    config = runner.config.replace(n_blocks=0, instruction=LOOKUP_INSTRUCTION)
    keys = encoded_pairs(runner.target, runner.pairs["train"], LOOKUP_INSTRUCTION).instructions
    lookup = runner.trained(config, build=_lookup_model(keys), tag="lookup").model
    hyper = runner.trained(runner.config).model
    records = []
    for split in ["test"] + (["test_entity"] if "test_entity" in runner.pairs else []):
        seen = [tuple(k) in lookup.hypernetwork.index for k in runner.encoded(split, LOOKUP_INSTRUCTION).instructions]
        for keys_seen in (True, False):
            index = [i for i, s in enumerate(seen) if s == keys_seen]
            if not index:
                continue
            for name, model in (("lookup table", lookup), ("hyperdas", hyper)):
                enc = _subset(runner.encoded(split, model.config.instruction), index)
                which = "seen" if keys_seen else "unseen"
                records.append(
                    runner.record(
                        "lookup_table",
                        f"{name} / {split} / {which} keys",
                        runner.score(Inference(model, runner.settings.mode), enc),
                        model.config,
                        split=split,
                        keys=which,
                        n_pairs=len(index),
                        n_keys=len(lookup.hypernetwork.index),
                    )
                )
    return records


def initialisation(runner: AblationRunner) -> list[dict]:
    """5. Hypernetwork from the target's weights vs from scratch: scores and loss curves."""
    records = []
    for init in ("target", "scratch"):
        config = runner.config.replace(init=init)
        result = runner.trained(config)
        records.append(
            runner.record(
                "initialisation",
                init,
                runner.score(Inference(result.model, runner.settings.mode)),
                config,
                loss_curve=[[e["step"], e["loss"]] for e in result.history],
            )
        )
    return records


def inference_mode(runner: AblationRunner, model: HyperDAS | None = None) -> list[dict]:
    """6. One trained model scored in soft / one-to-many / one-to-one mode."""
    model = model or runner.trained(runner.config).model
    enc = runner.encoded(template=model.config.instruction)
    return [
        runner.record("inference_mode", mode, runner.score(Inference(model, mode), enc), model.config) for mode in MODES
    ]


def controls(runner: AblationRunner, model: HyperDAS | None = None, which=None) -> list[dict]:
    """7. Leakage controls on one trained model (see `hyperdas.experiments.leakage`): (a) conflict, (b) blanked
    entity names, (c) random subspace, (d) fixed positions; plus the unchanged model as reference."""
    which = list(which if which is not None else runner.settings.controls)
    unknown = [w for w in which if w not in CONTROLS]
    if not which or unknown:
        raise ValueError(f"controls {which}: give one or more of {CONTROLS}")
    model = model or runner.trained(runner.config).model
    mode, config = runner.settings.mode, model.config
    method = Inference(model, mode)
    records = [
        runner.record(
            "controls", "reference", runner.score(method, runner.encoded(template=config.instruction)), config
        )
    ]
    for name in which:
        if name == "conflict":
            found = conflict_outcomes(
                runner.target,
                config.layer,
                method,
                runner.conflict(),
                lambda r: encoded_pairs(runner.target, r, config.instruction),
            )
            records.append(
                {
                    "ablation": "controls",
                    "variant": name,
                    **found,
                    "seed": runner.settings.seed,
                    "config": config.to_dict(),
                }
            )
            continue
        if name == "blanked":
            scored = runner.score(method, runner.encoded(template=BLANKED_INSTRUCTION), BLANKED_INSTRUCTION)
        elif name == "random_subspace":
            if config.subspace == "none":
                continue  # no W to replace
            W = random_orthonormal(runner.target.hidden_size, config.k, runner.settings.seed).to(runner.target.device)
            with swapped(model, subspace=FixedSubspace(W)):
                scored = runner.score(method, runner.encoded(template=config.instruction))
        else:
            if config.include_suffix:
                raise ValueError("fixed_positions needs include_suffix=False (the masks then end at the entity)")
            with swapped(model, selection=FixedSelection()):
                scored = runner.score(method, runner.encoded(template=config.instruction))
        records.append(runner.record("controls", name, scored, config))
    return records


ABLATIONS = {
    "blocks_cross_attention": blocks_cross_attention,
    "sparsity": sparsity,
    "symmetric": symmetric,
    "lookup_table": lookup_table,
    "initialisation": initialisation,
    "inference_mode": inference_mode,
    "controls": controls,
    "diagnosis": diagnosis.diagnosis,
}
NEEDS_MODEL = ("inference_mode", "controls", "diagnosis")


def run(name: str, runner: AblationRunner, model: HyperDAS | None = None, **kwargs) -> list[dict]:
    """Run one ablation by name (`model`: the trained model that `inference_mode` / `controls` score)."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; known ablations: {sorted(ABLATIONS)}")
    if name in NEEDS_MODEL:
        kwargs["model"] = model
    return ABLATIONS[name](runner, **kwargs)


def check_names(names) -> None:
    unknown = [name for name in names if name not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; known: {sorted(ABLATIONS)}")


def run_each(names, runner: AblationRunner, model: HyperDAS | None = None):
    """Run the named ablations in turn; yield (name, records, seconds, sentences) after each, so a
    caller can write what it has before the next one starts."""
    check_names(names)
    for name in names:
        start = time.perf_counter()
        found = run(name, runner, model=model)
        yield name, found, time.perf_counter() - start, describe(name, found)


def write_results(
    path: str | Path,
    *,
    model_name: str,
    seed: int,
    records: list[dict],
    timings: dict,
    interpretation: dict,
    configs: dict,
    checkpoint: str | Path,
    pairs_folder: str | Path,
    results_root: str | Path,
    provenance: dict | None = None,
) -> Path:
    """`ablations.json` (read by `hyperdas.experiments.plots`): every record so far, the seconds and
    sentences per ablation, and the configs (`configs`: model, hyperdas, train, ablation, ablations)."""
    return write_json(
        path,
        {
            "model": model_name,
            "seed": seed,
            "records": records,
            "timings": timings,
            "interpretation": interpretation,
            "provenance": provenance,
            "config": {
                **configs,
                "checkpoint": portable_path(checkpoint, results_root),
                "pairs": portable_path(pairs_folder, results_root),
            },
        },
    )
