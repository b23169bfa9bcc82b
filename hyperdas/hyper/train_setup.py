"""What a HyperDAS run prepares before its first step: the encoded pairs (after the checks that they
can train what the run asks), each pair's loss weight, and the memory estimate that refuses a run the
device cannot hold."""

from __future__ import annotations

import dataclasses
import random

import torch

from hyperdas.core.metrics import MAX_ANSWER_TOKENS
from hyperdas.data.ravel import RavelDataError
from hyperdas.hyper.model import DEFAULT_INSTRUCTION, HyperDASConfig, add_instructions
from hyperdas.hyper.store_plan import _store_bytes
from hyperdas.hyper.train_config import HyperTrainConfig
from hyperdas.target.distributed import Runtime
from hyperdas.target.evaluate import check_rows, encode
from hyperdas.target.memory import check_fits, estimate_for


def encoded_pairs(target, rows, template: str = DEFAULT_INSTRUCTION, answer_tokens: int | None = MAX_ANSWER_TOKENS):
    """Encoded pairs with their instructions (`template`: the model's `config.instruction`)."""
    check_rows(rows)
    return add_instructions(encode(target.tokenizer, rows, answer_tokens), target.tokenizer, rows, template)


def example_weights(enc, train: HyperTrainConfig) -> torch.Tensor:
    """The loss weight of each encoded pair: causal_weight or iso_weight by its kind."""
    return torch.tensor(
        [train.causal_weight if r["attribute_type"] == "causal" else train.iso_weight for r in enc.records]
    )


def training_pairs(target, pairs, config: HyperDASConfig, train: HyperTrainConfig):
    """The encoded training pairs, after the checks that they can train what `train` asks, and the
    encoded val pairs (a seeded sample of `max_val_pairs`), or None without a val split."""
    rows = pairs["train"]
    enc = encoded_pairs(target, rows, config.instruction, train.answer_tokens)
    kinds = set(rows["attribute_type"])
    if "causal" not in kinds:
        raise RavelDataError("the training pairs hold no causal rows")
    if train.iso_weight > 0 and "isolate" not in kinds:
        raise RavelDataError(
            f"iso_weight={train.iso_weight} but the training pairs hold no isolate rows: "
            f"build pairs with isolate rows (notebook 01) or set iso_weight=0"
        )
    if "val" not in pairs or not len(pairs["val"]):
        return enc, None
    keep = list(range(len(pairs["val"])))
    if train.max_val_pairs is not None and len(keep) > train.max_val_pairs:
        keep = sorted(random.Random(train.seed).sample(keep, train.max_val_pairs))
    return enc, encoded_pairs(target, pairs["val"].select(keep), config.instruction)


def check_run_fits(target, config, train, parts, store_kind, runtime: Runtime, progress: bool) -> None:
    """Print the memory estimate and refuse a run the device cannot hold."""
    per_process = -(-train.batch_size // runtime.world)  # each process holds its share only
    need = estimate_for(
        target, config, parts[0], min(per_process, runtime.micro_batch or per_process), train.checkpoint_target
    )
    if store_kind == "memory" and target.device.type == "cpu":  # a GPU's store is in host memory
        need = dataclasses.replace(need, activation_store=_store_bytes(target, parts, config, train))
    if progress and runtime.is_main:
        print(need.describe())
    check_fits(need)
