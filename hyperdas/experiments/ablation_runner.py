"""The shared state of notebook 04's ablations: the settings (`AblationConfig`), the runner that
trains each variant once (memoised, checkpointed, resumable) and scores it with its conflict shares,
and `main_model`, the notebook 03 checkpoint that the scoring-only ablations read."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path

import torch

from hyperdas.core.config import ConfigError, FrozenConfig
from hyperdas.core.errors import ProvenanceError
from hyperdas.experiments.leakage import conflict_outcomes, conflict_rows
from hyperdas.hyper.model import HyperDAS, HyperDASConfig
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
