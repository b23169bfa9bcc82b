"""What a HyperDAS run trains with (`HyperTrainConfig`: steps, learning rates, loss weights, schedules,
the activation store) and how its batches are drawn."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

from hyperdas.core.config import ConfigError, FrozenConfig, check_ranges
from hyperdas.core.metrics import MAX_ANSWER_TOKENS
from hyperdas.hyper.selection import MODES
from hyperdas.hyper.store import DTYPES as STORE_DTYPES
from hyperdas.hyper.store import KINDS as STORE_KINDS

LR_SCHEDULES = ("constant", "linear")


SAMPLINGS = ("uniform", "balanced")


@dataclasses.dataclass(frozen=True)
class HyperTrainConfig(FrozenConfig):
    # the CPU defaults of the embedded model; notebook 03 repeats them (600 steps: ~4.8 epochs of 2,000 pairs)
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-4  # hypernetwork, selection head, subspace head
    lr_rotation: float = 1e-3  # the shared R
    weight_decay: float = 0.01
    clip: float = 4.0
    causal_weight: float = 3.5
    iso_weight: float = 0.5
    sparsity_start: float = 0.5  # fraction of the steps before the penalty starts (1: never)
    sparsity_from: float = 0.15
    sparsity_to: float = 1.5
    temperature_from: float = 50.0  # the mask subspace's sigmoid temperature, annealed
    temperature_to: float = 0.1
    eval_every: int = 100
    max_val_pairs: int | None = 60
    eval_modes: tuple[str, ...] = MODES
    seed: int = 0
    checkpoint_target: bool = False  # gradient checkpointing of the target's blocks above the layer
    # the selection the training forward uses: a hard mode with the soft gradient (straight-through), or
    # soft. one_to_one trains the headline mode to edit (CHANGELOG.md)
    train_selection: str = "one_to_one"
    lr_schedule: str = "constant"  # "constant" (the paper's); "linear": both learning rates fall linearly toward 0
    # fraction of the steps trained with the soft selection before `train_selection` takes over
    soft_warmup: float = 0.0
    # weight of each base column's selection entropy in the loss: sharpens A toward the hard selection
    # trained (CHANGELOG.md); 0: the paper's loss
    selection_entropy: float = 0.1
    # the frozen target's read passes, computed once (`hyperdas.hyper.store`): auto | none | memory | disk;
    # auto: in memory on a CPU when it fits its limit, else none (not measured on a GPU: ask for it there)
    activation_store: str = "auto"
    store_dtype: str = "auto"  # auto (the hypernetwork's dtype: exact) | float32 | float16 | bfloat16
    store_max_gib: float | None = None  # None: half the available memory / the free disk less 1 GiB
    # steps whose weights are also kept, under <out_dir>/snapshots/step-<N> (a budget ladder from one
    # run: each scored on val as it trains, on test afterwards); multiples of eval_every, at most steps
    snapshot_steps: tuple[int, ...] = ()
    # answer tokens in the training loss: this package's first 3 (what scoring reads), or None: all of
    # them, the official loss (a mean over every answer token of the batch)
    answer_tokens: int | None = MAX_ANSWER_TOKENS
    # how a batch is drawn: "uniform" over the training rows (the official code); "balanced": each place
    # to a (domain, instructed attribute) group drawn uniformly (one HyperDAS over several domains)
    sampling: str = "uniform"

    def __post_init__(self) -> None:
        check_ranges(
            self,
            # a learning rate of 0 is allowed: it freezes (e.g. to compare gradients)
            positive=("clip", "store_max_gib"),
            non_negative=("lr", "lr_rotation", "steps", "weight_decay", "causal_weight", "iso_weight")
            + ("sparsity_from", "sparsity_to", "selection_entropy"),
            at_least_one=("batch_size", "eval_every", "max_val_pairs", "answer_tokens"),
        )
        unknown = [m for m in self.eval_modes if m not in MODES]
        if unknown:
            raise ConfigError(f"HyperTrainConfig.eval_modes: unknown mode(s) {unknown}; use {MODES}")
        for field, value, allowed in (
            ("train_selection", self.train_selection, MODES),
            ("activation_store", self.activation_store, ("auto", *STORE_KINDS)),
            ("store_dtype", self.store_dtype, tuple(STORE_DTYPES)),
            ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
            ("sampling", self.sampling, SAMPLINGS),
        ):
            if value not in allowed:
                raise ConfigError(f"HyperTrainConfig.{field}={value!r}: use one of {allowed}")
        for field in ("soft_warmup", "sparsity_start"):
            value = getattr(self, field)
            if not 0 <= value <= 1:
                raise ConfigError(f"HyperTrainConfig.{field}={value!r}: a fraction of the steps, in [0, 1]")
        if self.steps < 0 or self.batch_size < 1 or self.eval_every < 1:
            raise ConfigError("HyperTrainConfig: steps >= 0, batch_size >= 1 and eval_every >= 1 are required")
        object.__setattr__(self, "snapshot_steps", tuple(self.snapshot_steps))
        wrong = [
            n
            for n in self.snapshot_steps
            if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > self.steps or n % self.eval_every
        ]
        if wrong or len(set(self.snapshot_steps)) != len(self.snapshot_steps):
            raise ConfigError(
                f"HyperTrainConfig.snapshot_steps={list(self.snapshot_steps)}: each a distinct multiple of "
                f"eval_every={self.eval_every} (where val is scored) and at most steps={self.steps}; wrong: {wrong}"
            )

    def sparsity_weight(self, step: int) -> float:
        start = self.sparsity_start * self.steps
        if step <= start or self.steps <= start:
            return 0.0
        return self.sparsity_from + (self.sparsity_to - self.sparsity_from) * (step - start) / (self.steps - start)

    def selection_at(self, step: int) -> str:
        """The selection training uses at `step`: soft during the warm-up, then `train_selection`."""
        return "soft" if step <= self.soft_warmup * self.steps else self.train_selection

    def lr_factor(self, step: int) -> float:
        """The learning rates' multiplier at `step` (1..steps)."""
        if self.lr_schedule == "constant":
            return 1.0
        return max(0.0, 1 - (step - 1) / max(self.steps, 1))

    def temperature(self, step: int) -> float:
        return self.temperature_from + (self.temperature_to - self.temperature_from) * step / max(self.steps, 1)


def sampling_groups(records: list[dict]) -> list[list[int]]:
    """The training rows' indices grouped by (domain, instructed attribute), for balanced batches."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.get("domain", ""), r["target_attribute"]), []).append(i)
    return [groups[key] for key in sorted(groups)]


def draw_batch(rng: random.Random, groups: list[list[int]] | None, n_rows: int, batch_size: int) -> list[int]:
    """A batch of distinct row indices: uniform over the rows (`groups` None), or balanced: each
    place goes to a (domain, attribute) group drawn uniformly, then to a row of that group."""
    if groups is None:
        return rng.sample(range(n_rows), min(batch_size, n_rows))
    places = Counter(rng.randrange(len(groups)) for _ in range(batch_size))
    return [i for g, k in sorted(places.items()) for i in rng.sample(groups[g], min(k, len(groups[g])))]
