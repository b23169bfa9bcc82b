"""The notebooks' parameter names, mapped to the configs once: notebooks 02-04 and the training CLI
all build their configs here, and a parameter left out takes the config's own default.

The configs' defaults are the one source of defaults. A notebook's `parameters` cell repeats them
as literals (papermill needs literals), and a test checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Mapping

from hyperdas.core.config import ConfigError, ModelConfig
from hyperdas.das.training import DASConfig
from hyperdas.hyper.model import HyperDASConfig
from hyperdas.hyper.training import HyperTrainConfig

# notebook parameter -> config field
MODEL = {"model": "spec", "dtype": "dtype", "device": "device", "load_in_4bit": "load_in_4bit"}
HYPERDAS = {
    name: name
    for name in (
        "layer",
        "k",
        "n_blocks",
        "init",
        "subspace",
        "source_ca",
        "base_ca",
        "include_suffix",
        "base_read",
        "position_offsets",
        "selection_positions",
        "ca_positions",
        "sink",
        "instruction",
        "freeze_embedding",
        "selection_heads",
        "tie_attention",
        "rotation_map",
        "subspace_head",
        "head_width",
        "selection_query",
    )
}
HYPER_TRAIN = {
    "hyper_steps": "steps",
    "hyper_batch_size": "batch_size",
    "hyper_lr": "lr",
    "hyper_lr_rotation": "lr_rotation",
    "causal_weight": "causal_weight",
    "iso_weight": "iso_weight",
    "hyper_eval_every": "eval_every",
    "hyper_max_val_pairs": "max_val_pairs",
    "seed": "seed",
    "checkpoint_target": "checkpoint_target",
    "train_selection": "train_selection",
    "selection_entropy": "selection_entropy",
    "soft_warmup": "soft_warmup",
    "lr_schedule": "lr_schedule",
    "sparsity_start": "sparsity_start",
    "activation_store": "activation_store",
    "store_dtype": "store_dtype",
    "store_max_gib": "store_max_gib",
    "snapshot_steps": "snapshot_steps",
    "answer_tokens": "answer_tokens",
}
DAS = {
    name: name
    for name in (
        "layer",
        "k",
        "lr",
        "steps",
        "batch_size",
        "eval_every",
        "patience",
        "max_val_pairs",
        "iso_weight",
        "seed",
    )
}


def _fields(params: Mapping, mapping: dict[str, str]) -> dict:
    return {field: params[name] for name, field in mapping.items() if name in params}


def model_config(params: Mapping) -> ModelConfig:
    return ModelConfig(**_fields(params, MODEL))


def hyperdas_configs(params: Mapping) -> tuple[HyperDASConfig, HyperTrainConfig]:
    """HyperDAS's model and training configs from notebook 03/04 parameters (e.g. a notebook's globals())."""
    return HyperDASConfig(**_fields(params, HYPERDAS)), HyperTrainConfig(**_fields(params, HYPER_TRAIN))


def das_config(params: Mapping, **fixed) -> DASConfig:
    """A DAS/MDAS config from notebook 02 parameters; `fixed` sets fields directly (method, target_attribute)."""
    return DASConfig(**{**_fields(params, DAS), **fixed})


def seed_list(params: Mapping) -> list[int]:
    """The seeds notebooks 02 and 03 run: `seeds` (a list, for the mean ± sd table), else [`seed`]."""
    seeds = params.get("seeds")
    if seeds is None:
        return [params.get("seed", 0)]
    ok = (
        isinstance(seeds, list | tuple) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    )
    if not ok or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={seeds!r}: give a non-empty list of distinct integers, or None for [seed]")
    return list(seeds)
