"""The leakage ablations of notebook 04 (method doc section 4), one function each.

Every function takes an `AblationRunner` (target, pairs, the base HyperDAS configuration, the
ablation settings) and returns records for `ablations.json`: ``{"ablation", "variant", "overall":
{cause, iso, disentangle}, "per_attribute": {attribute: {...}}, "seed", "config", ...}``, scored on
the same test pairs through `hyperdas.target.evaluate.evaluate`. Variants that train are trained by the
runner once per configuration (shared between ablations, checkpointed and resumable under its
folder) for `steps` steps each; `inference_mode` and `controls` score a given trained model
(notebook 04: notebook 03's). `run(name, runner, ...)` runs one by name; `describe(name, records)`
turns its numbers into sentences.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from pathlib import Path

import torch

from hyperdas.core.config import ConfigError, FrozenConfig
from hyperdas.core.errors import ProvenanceError
from hyperdas.core.results import portable_path, write_json
from hyperdas.experiments import diagnosis
from hyperdas.experiments.leakage import (
    BLANKED_INSTRUCTION,
    LOOKUP_INSTRUCTION,
    FixedSelection,
    FixedSubspace,
    LookupTable,
    conflict_outcomes,
    conflict_rows,
    random_orthonormal,
    swapped,
)
from hyperdas.hyper.model import HyperDAS, HyperDASConfig, Inference, selection_matrices, selection_record
from hyperdas.hyper.selection import MODES
from hyperdas.hyper.training import HyperTrainConfig, encoded_pairs, load_hyperdas, train_hyperdas
from hyperdas.target.evaluate import evaluate

CROSS_ATTENTION = {
    "both": (True, True),
    "no_source": (False, True),
    "no_base": (True, False),
    "neither": (False, False),
}
SPARSITY = ("default", "off", "strong")
CONTROLS = ("conflict", "blanked", "random_subspace", "fixed_positions")
METRICS = ("cause", "iso", "disentangle")


@dataclasses.dataclass(frozen=True)
class AblationConfig(FrozenConfig):
    steps: int = 30  # training steps of every trained variant
    max_test_pairs: int | None = 120  # test pairs scored per variant (a seeded sample)
    mode: str = "soft"  # inference mode that scores trained variants
    n_blocks: tuple[int, ...] = (0, 2)
    cross_attention: tuple[str, ...] = ("both", "neither")
    sparsity: tuple[str, ...] = SPARSITY
    strong_factor: float = 10.0  # "too strong": the default schedule times this
    controls: tuple[str, ...] = CONTROLS
    n_selections: int = 4  # test examples whose selection matrices are kept
    seed: int = 0

    def __post_init__(self) -> None:
        for field, values, known in (
            ("cross_attention", self.cross_attention, tuple(CROSS_ATTENTION)),
            ("sparsity", self.sparsity, SPARSITY),
            ("controls", self.controls, CONTROLS),
        ):
            if not values:
                raise ConfigError(f"AblationConfig.{field} is empty: give at least one of {known}")
            unknown = [v for v in values if v not in known]
            if unknown:
                raise ConfigError(f"AblationConfig.{field}: unknown value(s) {unknown}; use {known}")
        if not self.n_blocks:
            raise ConfigError("AblationConfig.n_blocks is empty: give at least one block count")
        if self.mode not in MODES:
            raise ConfigError(f"AblationConfig.mode={self.mode!r}: use one of {MODES}")
        if self.steps < 1:
            raise ConfigError("AblationConfig.steps must be >= 1")


def check_split(pairs, split: str) -> None:
    if split not in pairs or not len(pairs[split]):
        raise ValueError(f"the pairs have no (or an empty) {split!r} split; splits: {list(pairs)}")


def flat_scores(scores: dict) -> dict:
    """{"overall": {...}, "per_attribute": {attribute: {...}}} (domain/attribute when several domains)."""
    per = scores["per_attribute"]
    flat = {
        (a if len(per) == 1 else f"{d}/{a}"): {m: s[m] for m in METRICS}
        for d, attrs in per.items()
        for a, s in attrs.items()
    }
    return {"overall": {m: scores["overall"][m] for m in METRICS}, "per_attribute": flat}


class AblationRunner:
    """Shared state of the ablations: data, configurations, trained variants (memoised)."""

    def __init__(
        self,
        target,
        pairs,
        config: HyperDASConfig,
        train: HyperTrainConfig,
        settings: AblationConfig,
        folder: str | Path | None = None,
        progress: bool = True,
        resume: bool = True,
    ):
        for split in ("train", "test"):
            check_split(pairs, split)
        self.target, self.pairs, self.config, self.settings = target, pairs, config, settings
        self.train_config = train.replace(
            steps=settings.steps, eval_every=settings.steps, eval_modes=(settings.mode,), seed=settings.seed
        )
        self.folder = Path(folder) if folder is not None else None
        self.progress, self.resume = progress, resume  # resume=False: retrain every variant
        self._trained: dict[str, object] = {}
        self._encoded: dict[tuple, object] = {}
        self._conflicts: dict[tuple, dict] = {}

    def rows(self, split: str = "test"):
        check_split(self.pairs, split)
        rows = self.pairs[split]
        n = self.settings.max_test_pairs
        if n is not None and len(rows) > n:
            rows = rows.select(sorted(random.Random(self.settings.seed).sample(range(len(rows)), n)))
        return rows

    def encoded(self, split: str = "test", template: str | None = None):
        key = (split, template or self.config.instruction)
        if key not in self._encoded:
            self._encoded[key] = encoded_pairs(self.target, self.rows(split), key[1])
        return self._encoded[key]

    def trained(self, config: HyperDASConfig, train: HyperTrainConfig | None = None, build=None, tag: str = "variant"):
        """Train (or fetch) the variant; `build(target, config)` makes a swapped-part model."""
        train = train or self.train_config
        key = json.dumps([config.to_dict(), train.to_dict(), tag], sort_keys=True, default=list)
        if key not in self._trained:
            out = None
            if self.folder is not None:
                out = self.folder / f"{tag}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
            torch.manual_seed(train.seed)  # a built variant's initial weights do not depend on what ran before
            model = build(self.target, config) if build is not None else None
            self._trained[key] = train_hyperdas(
                self.target,
                self.pairs,
                config,
                train,
                out_dir=out,
                progress=self.progress,
                model=model,
                resume=self.resume,
            )
        return self._trained[key]

    def score(self, method, enc=None, template: str | None = None) -> dict:
        """Flat scores of `method` on `enc` (default: the test rows with the runner's instruction); a
        HyperDAS method (an `Inference`) also gets its conflict shares, `follows_activations` and
        `follows_instruction`, on the conflict pairs of the same test rows, its instructions written
        with `template` (default: its model's)."""
        enc = enc if enc is not None else self.encoded()
        scored = flat_scores(evaluate(self.target, self.config.layer, method, enc)[0])
        model = getattr(method, "model", None)
        if model is not None:
            template = template or model.config.instruction
            # the same model, parts, mode and instruction: the same conflict outcome (e.g. scored on several
            # subsets). Keyed by the modules themselves (identity hashing; the key keeps them alive, so a
            # swapped-in part that was freed cannot hand its id to another)
            key = (model, model.hypernetwork, model.selection, model.subspace, model.config, method.mode, template)
            if key not in self._conflicts:
                self._conflicts[key] = conflict_outcomes(
                    self.target,
                    self.config.layer,
                    method,
                    self.conflict(),
                    lambda r: encoded_pairs(self.target, r, template),
                )
            scored.update({k: self._conflicts[key][k] for k in ("follows_activations", "follows_instruction")})
        return scored

    def conflict(self) -> list[dict]:
        """The conflict pairs of the scored test rows (the same for every variant)."""
        if not hasattr(self, "_conflict"):
            self._conflict = conflict_rows(self.rows(), self.settings.seed)
        return self._conflict

    def record(self, ablation: str, variant: str, scored: dict, config=None, **extra) -> dict:
        return {
            "ablation": ablation,
            "variant": variant,
            **scored,
            "seed": self.settings.seed,
            "config": (config or self.config).to_dict(),
            **extra,
        }


def main_model(runner: AblationRunner, folder: str | Path) -> HyperDAS:
    """The trained model that `inference_mode` / `controls` score (notebook 03's checkpoint); refused
    when it was saved with another configuration than the runner's."""
    try:
        return load_hyperdas(folder, runner.target, expect=runner.config, pairs=runner.pairs)[0]
    except ProvenanceError:
        raise
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}: run notebooks/03_train_hyperdas.ipynb first (same model and results folder)"
        ) from None
    except ValueError as err:
        raise ValueError(
            f"{err}; the ablations' parameters (layer, k, n_blocks, subspace, ...) must match notebook 03's"
        ) from None


# --- selection matrices -------------------------------------------------------------------------


def _matrices(runner: AblationRunner, model: HyperDAS, index: list[int], mode: str = "soft"):
    return selection_matrices(runner.target, model, runner.encoded(template=model.config.instruction), index, mode)


def selection_stats(runner: AblationRunner, model: HyperDAS, n: int | None = None) -> dict:
    """Soft selection's mean entropy (nats) over the selectable base columns, and the fraction of
    source mass placed on the source entity's last token."""
    enc = runner.encoded(template=model.config.instruction)
    index = list(range(len(enc) if n is None else min(n, len(enc))))
    entropies, on_last = [], []
    for start in range(0, len(index), 32):
        batch = index[start : start + 32]
        for i, A in zip(batch, _matrices(runner, model, batch)):
            columns = A[:, : enc.base_pos[i] + 1]
            entropies.append(float(-(columns * columns.clamp_min(1e-12).log()).sum(0).mean()))
            mass = A[:-1].sum()
            on_last.append(float(A[enc.source_pos[i]].sum() / mass) if mass > 0 else 0.0)
    return {"selection_entropy": sum(entropies) / len(entropies), "last_token_mass": sum(on_last) / len(on_last)}


def saved_selections(runner: AblationRunner, model: HyperDAS) -> list[dict]:
    enc = runner.encoded(template=model.config.instruction)
    index = list(range(min(runner.settings.n_selections, len(enc))))
    rows = runner.rows()
    return [
        selection_record(runner.target.tokenizer, enc, i, A, instruction=rows[i]["edit_instruction"])
        for i, A in zip(index, _matrices(runner, model, index))
    ]


def entity_span(tokenizer, prefix: str, suffix: str, entity: str) -> tuple[int, int]:
    """(first, last) token index of the entity that ends `prefix` (special tokens counted)."""
    encoded = tokenizer(prefix + suffix, add_special_tokens=True, return_offsets_mapping=True)
    first_char, last_char = len(prefix) - len(entity), len(prefix) - 1
    hits = [i for i, (s, e) in enumerate(encoded["offset_mapping"]) if e > first_char and s <= last_char and e > s]
    return hits[0], hits[-1]


def token_role(t: int, span: tuple[int, int]) -> str:
    first, last = span
    return "last" if t == last else "first" if t == first else "middle" if first < t < last else "other"


def subtoken_picks(runner: AblationRunner, model: HyperDAS) -> dict:
    """One-to-many selection: per attribute, the fraction of examples whose most-used source token
    and most-fed base token is the entity's first / middle / last sub-token, another token, or none."""
    enc = runner.encoded(template=model.config.instruction)
    rows, tok = runner.rows(), runner.target.tokenizer
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for start in range(0, len(enc), 32):
        batch = list(range(start, min(start + 32, len(enc))))
        for i, A in zip(batch, _matrices(runner, model, batch, "one_to_many")):
            r = rows[i]
            used = A[:-1].sum(1)
            fed = 1 - A[-1]
            roles = {
                "source": "none"
                if used.sum() == 0
                else token_role(
                    int(used.argmax()),
                    entity_span(
                        tok,
                        r["counterfactual_input_prefix"],
                        r["counterfactual_input_suffix"],
                        r["counterfactual_entity"],
                    ),
                ),
                "base": "none"
                if fed.sum() == 0
                else token_role(int(fed.argmax()), entity_span(tok, r["input_prefix"], r["input_suffix"], r["entity"])),
            }
            per = counts.setdefault(r["target_attribute"], {"source": {}, "base": {}})
            for side, role in roles.items():
                per[side][role] = per[side].get(role, 0) + 1
    return {
        a: {side: {role: c / sum(d.values()) for role, c in sorted(d.items())} for side, d in per.items()}
        for a, per in counts.items()
    }


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


def _f(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _d(records, variant):
    found = [r for r in records if r["variant"] == variant]
    return found[0]["overall"]["disentangle"] if found and "overall" in found[0] else None


def describe(name: str, records: list[dict]) -> list[str]:
    """Sentences computed from an ablation's records (nothing here is written in advance)."""
    if not records:
        return [f"{name}: no records"]
    if name == "diagnosis":
        return diagnosis.describe(records)
    lines = []
    if name == "controls":
        ref = _d(records, "reference")
        for r in records:
            if r["variant"] == "conflict":
                lines.append(
                    f"conflict: the output follows the swapped-in activations in {r['follows_activations']:.0%} "
                    f"of {r['n']} pairs, the instruction's entity in {r['follows_instruction']:.0%}, neither in "
                    f"{r['follows_neither']:.0%} -> mostly {r['verdict']}"
                )
            elif r["variant"] != "reference" and ref is not None:
                d = r["overall"]["disentangle"]
                lines.append(
                    f"{r['variant']}: Disentangle {ref:.3f} -> {d:.3f} ({d - ref:+.3f}; Cause "
                    f"{_f(r['overall']['cause'])}, Iso {_f(r['overall']['iso'])})"
                )
        return lines
    scored = [r for r in records if "overall" in r]
    best = max(scored, key=lambda r: r["overall"]["disentangle"])
    worst = min(scored, key=lambda r: r["overall"]["disentangle"])
    if best["overall"]["disentangle"] == worst["overall"]["disentangle"]:
        lines.append(f"{name}: Disentangle is {best['overall']['disentangle']:.3f} for every variant")
    else:
        lines.append(
            f"{name}: Disentangle ranges from {worst['overall']['disentangle']:.3f} ({worst['variant']}) to "
            f"{best['overall']['disentangle']:.3f} ({best['variant']})"
        )
    for r in scored:
        extra = ""
        if "selection_entropy" in r:
            extra = (
                f", selection entropy {r['selection_entropy']:.2f} nats, "
                f"{r['last_token_mass']:.0%} of source mass on the entity's last token"
            )
        if "n_keys" in r:
            extra = f", {r['n_pairs']} pairs"
        if "loss_curve" in r and r["loss_curve"]:
            extra = f", final training loss {r['loss_curve'][-1][1]:.3f}"
        o = r["overall"]
        lines.append(
            f"  {r['variant']}: Cause {_f(o['cause'])}, Iso {_f(o['iso'])}, Disentangle {_f(o['disentangle'])}{extra}"
        )
    return lines


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
