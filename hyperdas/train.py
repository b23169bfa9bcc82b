"""DAS and MDAS: train a rotated-space interchange for one instructed attribute.

DAS trains on the causal pairs of the attribute; MDAS adds its isolate pairs (optionally
weighted), which is what keeps the other attributes out of the subspace. Teacher-forced
cross-entropy on the expected answer's first <= 3 tokens, AdamW, seeded; source vectors are
computed once per split. Early stopping on validation Disentangle; the best weights are kept.
Checkpoints: the intervention's weights (safetensors) + config JSON, plus optimizer/RNG state
for resuming an interrupted run.
"""
from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyperdas.config import ConfigError, FrozenConfig
from hyperdas.evaluate import check_rows, encode, evaluate, intervened_logits, source_vectors
from hyperdas.hooks import check_layer
from hyperdas.interventions import RotatedSpaceInterchange

METHODS = ("das", "mdas")


@dataclasses.dataclass(frozen=True)
class DASConfig(FrozenConfig):
    method: str = "das"
    target_attribute: str = "Country"
    layer: int = 9
    k: int = 128
    lr: float = 1e-2
    batch_size: int = 16
    steps: int = 200
    eval_every: int = 50
    patience: int = 3            # evaluations without a better val Disentangle before stopping
    causal_weight: float = 1.0
    iso_weight: float = 1.0
    max_val_pairs: int | None = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"DASConfig.method={self.method!r}: use one of {METHODS}")
        if self.k < 1 or self.batch_size < 1 or self.steps < 0:
            raise ConfigError("DASConfig: k and batch_size must be >= 1 and steps >= 0")


def select_rows(split, config: DASConfig, limit: int | None = None):
    """The rows a method trains or is validated on: its attribute's causal (+ isolate for MDAS)."""
    check_rows(split, "pairs split")
    kinds = ("causal",) if config.method == "das" else ("causal", "isolate")
    keep = [i for i, (a, k) in enumerate(zip(split["target_attribute"], split["attribute_type"]))
            if a == config.target_attribute and k in kinds]
    if not any(split["attribute_type"][i] == "causal" for i in keep):
        found = sorted(set(split["target_attribute"]))
        raise ValueError(f"no causal rows for attribute {config.target_attribute!r} in this split "
                         f"(attributes present: {found})")
    if limit is not None and len(keep) > limit:
        keep = sorted(random.Random(config.seed).sample(keep, limit))
    return split.select(keep)


def save_checkpoint(folder: str | Path, intervention: RotatedSpaceInterchange, config: DASConfig,
                    extra: dict | None = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in intervention.state_dict().items()},
              str(folder / "intervention.safetensors"))
    config.save(folder / "config.json")
    (folder / "meta.json").write_text(json.dumps({"hidden_size": intervention.hidden_size, **(extra or {})}))
    return folder


def load_checkpoint(folder: str | Path, hidden_size: int) -> tuple[RotatedSpaceInterchange, DASConfig]:
    """Rebuild a saved intervention; refuses one trained on a model of another hidden size."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "intervention.safetensors").is_file():
        raise FileNotFoundError(f"no intervention checkpoint in {folder}")
    config = DASConfig.load(folder / "config.json")
    saved = json.loads((folder / "meta.json").read_text())["hidden_size"]
    if saved != hidden_size:
        raise ValueError(f"checkpoint {folder} was trained on a model with hidden size {saved}, not {hidden_size}")
    intervention = RotatedSpaceInterchange(hidden_size, config.k)
    intervention.load_state_dict(load_file(str(folder / "intervention.safetensors")))
    return intervention, config


@dataclasses.dataclass
class TrainResult:
    intervention: RotatedSpaceInterchange
    config: DASConfig
    history: list[dict]
    best_step: int
    best_val: dict | None
    seconds: float


def train_das(target, pairs, config: DASConfig, checkpoint_dir: str | Path | None = None,
              progress: bool = True) -> TrainResult:
    """Train DAS or MDAS on pairs["train"], early-stopping on pairs["val"] when it has rows."""
    layer = check_layer(target.n_layers, config.layer)
    if config.k > target.hidden_size:
        raise ValueError(f"k={config.k} exceeds the hidden size {target.hidden_size} of {target.name}")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    train = encode(target.tokenizer, select_rows(pairs["train"], config))
    val = None
    if "val" in pairs and len(pairs["val"]):
        # both kinds for either method: early stopping reads Disentangle, which needs Iso
        val = encode(target.tokenizer, select_rows(pairs["val"], config.replace(method="mdas"), config.max_val_pairs))
    train_src = source_vectors(target, layer, train, progress=progress)
    val_src = source_vectors(target, layer, val) if val is not None else None

    intervention = RotatedSpaceInterchange(target.hidden_size, config.k).to(target.device)
    optimizer = torch.optim.AdamW(intervention.parameters(), lr=config.lr)
    weights = torch.tensor([config.causal_weight if r["attribute_type"] == "causal" else config.iso_weight
                            for r in train.records])
    rng = random.Random(config.seed)
    history, best_val, best_step, best_state, bad = [], None, 0, None, 0
    bar = tqdm(range(1, config.steps + 1), desc=f"{config.method} {config.target_attribute}", disable=not progress)
    for step in bar:
        index = rng.sample(range(len(train)), min(config.batch_size, len(train)))
        logits, labels = intervened_logits(target, layer, intervention, train, index, train_src)
        token_weights = torch.cat([weights[i].expand(len(train.answers[i])) for i in index]).to(logits.device)
        losses = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")
        loss = (losses * token_weights).sum() / token_weights.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        entry = {"step": step, "loss": loss.item()}
        if val is not None and (step % config.eval_every == 0 or step == config.steps):
            scores, _ = evaluate(target, layer, intervention, val, val_src)
            entry["val"] = scores["overall"]
            score = scores["overall"]["disentangle"]
            if best_val is None or score > best_val["disentangle"]:
                best_val, best_step, bad = scores["overall"], step, 0
                best_state = {k: v.detach().clone() for k, v in intervention.state_dict().items()}
                if checkpoint_dir is not None:
                    save_checkpoint(checkpoint_dir, intervention, config, {"step": step, "val": best_val})
            else:
                bad += 1
            bar.set_postfix(loss=f"{entry['loss']:.3f}", val=f"{score:.3f}")
        history.append(entry)
        if bad >= config.patience:
            break
    if best_state is not None:
        intervention.load_state_dict(best_state)
    elif checkpoint_dir is not None:
        save_checkpoint(checkpoint_dir, intervention, config, {"step": config.steps})
    return TrainResult(intervention, config, history, best_step, best_val, time.perf_counter() - started)
