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

from hyperdas.core.config import ConfigError, FrozenConfig, check_ranges
from hyperdas.core.errors import CheckpointError
from hyperdas.core.files import (
    atomic_paths,
    check_checksums,
    checked_path,
    file_checksums,
    one_writer,
    read_checked,
    read_or_explain,
)
from hyperdas.das.interventions import RotatedSpaceInterchange
from hyperdas.data.ravel import RavelDataError
from hyperdas.target.distributed import SINGLE, DistributedError, Runtime, weighted_step
from hyperdas.target.evaluate import check_rows, encode, evaluate_sharded, intervened_logits, source_vectors
from hyperdas.target.hooks import can_start_after, check_layer
from hyperdas.target.layer_states import LayerStates, with_states
from hyperdas.target.memory import check_fits, estimate_das
from hyperdas.target.provenance import check_provenance, provenance

METHODS = ("das", "mdas")


@dataclasses.dataclass(frozen=True)
class DASConfig(FrozenConfig):
    method: str = "das"
    target_attribute: str = "Country"
    # the embedded model's defaults, chosen on val by benchmarks/das_sweep.py (layers 9/12/15 x k 32/128):
    # k=128 for both methods; layer 15 for MDAS, and for DAS within 0.003 of its best (layer 9), so
    # both share HyperDAS's layer (CHANGELOG.md); notebook 02 repeats them
    layer: int = 15
    k: int = 128
    lr: float = 3e-3
    batch_size: int = 16
    # up to as many examples per attribute as HyperDAS's 600 x 16 over three attributes; early stopping ends it sooner
    steps: int = 200
    eval_every: int = 20
    patience: int = 2  # evaluations without a better val Disentangle before stopping
    causal_weight: float = 1.0
    iso_weight: float = 1.0
    max_val_pairs: int | None = 100
    seed: int = 0
    domain: str | None = None  # pairs of several domains: the one whose rows it trains on (None: any)

    def __post_init__(self) -> None:
        check_ranges(
            self,
            non_negative=("lr", "steps", "causal_weight", "iso_weight"),
            at_least_one=("k", "batch_size", "eval_every", "patience", "max_val_pairs"),
        )
        if self.method not in METHODS:
            raise ConfigError(f"DASConfig.method={self.method!r}: use one of {METHODS}")
        if self.k < 1 or self.batch_size < 1 or self.steps < 0:
            raise ConfigError("DASConfig: k and batch_size must be >= 1 and steps >= 0")


def selected_indices(split, config: DASConfig) -> list[int]:
    """Indices in `split` of the rows `select_rows` keeps (before its `limit`)."""
    check_rows(split, "pairs split")
    kinds = ("causal",) if config.method == "das" else ("causal", "isolate")
    domains = split["domain"] if config.domain is not None else [None] * len(split)
    return [
        i
        for i, (a, k, d) in enumerate(zip(split["target_attribute"], split["attribute_type"], domains))
        if a == config.target_attribute and k in kinds and d == config.domain
    ]


def select_rows(split, config: DASConfig, limit: int | None = None):
    """The rows a method trains or is validated on: its attribute's causal (+ isolate for MDAS)."""
    keep = selected_indices(split, config)
    if not any(split["attribute_type"][i] == "causal" for i in keep):
        found = sorted(set(split["target_attribute"]))
        raise RavelDataError(
            f"no causal rows for attribute {config.target_attribute!r}"
            + (f" of domain {config.domain!r}" if config.domain else "")
            + f" in this split (attributes present: {found})"
        )
    if limit is not None and len(keep) > limit:
        keep = sorted(random.Random(config.seed).sample(keep, limit))
    return split.select(keep)


WEIGHTS = "intervention.safetensors"


def save_checkpoint(
    folder: str | Path, intervention: RotatedSpaceInterchange, config: DASConfig, extra: dict | None = None
) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # the three files are written whole before any replaces its predecessor: a failure (a full disk)
    # leaves the previous checkpoint; the weights' checksums in the meta catch a damaged file on load
    with atomic_paths(folder / WEIGHTS, folder / "config.json", folder / "meta.json") as (weights, saved, meta):
        state = {k: v.detach().contiguous() for k, v in intervention.state_dict().items()}
        save_file(state, str(weights))
        saved.write_text(config.to_json())
        record = {"hidden_size": intervention.hidden_size, **(extra or {})}
        meta.write_text(json.dumps({**record, "weights_checksums": file_checksums(weights)}))
    return folder


def load_checkpoint(
    folder: str | Path, hidden_size: int, target=None, pairs=None
) -> tuple[RotatedSpaceInterchange, DASConfig]:
    """Rebuild a saved intervention; refuses one trained on a model of another hidden size, one whose
    weights differ from their recorded checksums and (given the `target` and the `pairs` it is about
    to be scored on) one trained on another target or other pairs."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"no intervention checkpoint in {folder}")
    fix = f"delete {folder} to train again, or pass another checkpoint folder"
    config = read_or_explain(folder / "config.json", DASConfig.load, fix)
    meta = read_or_explain(folder / "meta.json", lambda p: json.loads(p.read_text()), fix)
    if meta["hidden_size"] != hidden_size:
        raise CheckpointError(
            f"checkpoint {folder} was trained on a model with hidden size {meta['hidden_size']}, not {hidden_size}"
        )
    if pairs is not None:
        check_provenance(meta.get("provenance"), provenance(target, pairs), folder, fix)
    check_checksums(folder / WEIGHTS, meta.get("weights_checksums"), fix)
    intervention = RotatedSpaceInterchange(hidden_size, config.k)
    intervention.load_state_dict(read_or_explain(folder / WEIGHTS, lambda p: load_file(str(p)), fix))
    return intervention, config


@dataclasses.dataclass
class TrainResult:
    intervention: RotatedSpaceInterchange
    config: DASConfig
    history: list[dict]
    best_step: int
    best_val: dict | None
    seconds: float
    resumed_from: int = 0  # the step an interrupted run was resumed after (0: fresh start)


RESUME_FILE = "resume.pt"


def _save_resume(folder: Path, state: dict) -> None:
    with checked_path(folder / RESUME_FILE) as tmp:  # an interruption never leaves half a file
        torch.save(state, tmp)


def _load_resume(folder: Path, config: DASConfig) -> dict | None:
    path = folder / RESUME_FILE
    if not path.is_file():
        return None
    state = read_checked(path, lambda p: torch.load(p, weights_only=True), "delete it to start this run from step 0")
    if {**DASConfig().to_dict(), **state["config"]} != config.to_dict():  # a field it predates: its default
        raise CheckpointError(
            f"{folder} holds a run with another configuration: rerun with --fresh (notebooks: fresh=True, "
            f"Python: resume=False) to train it again, or write to another results folder"
        )
    return state


@one_writer("checkpoint_dir")  # one writer per checkpoint folder
def train_das(
    target,
    pairs,
    config: DASConfig,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = True,
    runtime: Runtime = SINGLE,
    states: LayerStates | None = None,
) -> TrainResult:
    """Train DAS or MDAS on pairs["train"], early-stopping on pairs["val"] when it has rows.

    With a `checkpoint_dir`, the best weights are saved there and the whole training state at
    every evaluation; a later call with the same config resumes after the last saved step and
    gives the numbers an uninterrupted run gives. `runtime`: several processes under `accelerate
    launch` (`hyperdas.target.distributed.runtime()`); the numbers equal one process's, only the main
    process writes. `states`: the target's states after the layer (`hyperdas.target.layer_states`),
    shared with other runs at that layer; by default made here when the target's blocks allow
    starting after the layer, so a step runs only the blocks above it.
    """
    layer = check_layer(target.n_layers, config.layer)
    if runtime.fsdp:
        raise DistributedError("DAS/MDAS train one D x k rotation, which FSDP has nothing to shard: launch with DDP")
    if config.k > target.hidden_size:
        raise ConfigError(f"k={config.k} exceeds the hidden size {target.hidden_size} of {target.name}")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    train = encode(target.tokenizer, select_rows(pairs["train"], config))
    per_process = min(-(-config.batch_size // runtime.world), len(train))  # each process holds its share
    longest = lambda rows: max(len(r) for r in rows)  # noqa: E731
    need = estimate_das(target, layer, config.k, per_process, longest(train.base), longest(train.source))
    check_fits(need, what="DAS/MDAS training", fix="lower batch_size, or load the target in 4-bit (load_in_4bit=True)")
    val = None
    if "val" in pairs and len(pairs["val"]):
        # both kinds for either method: early stopping reads Disentangle, which needs Iso
        val = encode(target.tokenizer, select_rows(pairs["val"], config.replace(method="mdas"), config.max_val_pairs))
    intervention = RotatedSpaceInterchange(target.hidden_size, config.k).to(target.device)
    optimizer = torch.optim.AdamW(intervention.parameters(), lr=config.lr)
    rng = random.Random(config.seed)
    history, best_val, best_step, best_state, bad, first = [], None, 0, None, 0, 1
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    built_from = provenance(target, pairs) if folder is not None else None
    saved = _load_resume(folder, config) if folder is not None and resume else None
    if saved is not None:
        check_provenance(saved.get("provenance"), built_from, folder)
        intervention.load_state_dict(saved["weights"])
        optimizer.load_state_dict(saved["optimizer"])
        rng.setstate((saved["rng"][0], tuple(saved["rng"][1]), saved["rng"][2]))
        history, best_val, best_step, best_state, bad = (
            saved[k] for k in ("history", "best_val", "best_step", "best_state", "bad")
        )
        first = saved["step"] + 1 if not saved["done"] else config.steps + 1
    if states is None and can_start_after(target):
        states = LayerStates(target, layer)
    if states is not None and states.layer != layer:
        raise ValueError(f"the given states were computed after layer {states.layer}, not the config's {layer}")
    train_src = val_src = None
    if first <= config.steps and states is not None:  # read once: the steps run only the blocks above
        states.fill_pairs(train, progress=progress)
        if val is not None:
            states.fill_pairs(val)
    elif first <= config.steps:
        train_src = source_vectors(target, layer, train, progress=progress)
        val_src = source_vectors(target, layer, val) if val is not None else None
    wrapped, optimizer = runtime.prepare(intervention, optimizer)
    writes = folder is not None and runtime.is_main

    weights = torch.tensor(
        [config.causal_weight if r["attribute_type"] == "causal" else config.iso_weight for r in train.records]
    )

    def part_loss(total: float):
        def loss(part: list[int]):
            logits, labels = intervened_logits(target, layer, with_states(wrapped, states), train, part, train_src)
            token_weights = torch.cat([weights[i].expand(len(train.answers[i])) for i in part]).to(logits.device)
            losses = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")
            return (losses * token_weights).sum() / total

        return loss

    done = False
    bar = tqdm(
        range(first, config.steps + 1),
        desc=f"{config.method} {config.target_attribute}",
        disable=not (progress and runtime.is_main),
    )
    for step in bar:
        index = rng.sample(range(len(train)), min(config.batch_size, len(train)))
        total = sum(float(weights[i]) * len(train.answers[i]) for i in index)
        optimizer.zero_grad()
        entry = {"step": step, "loss": weighted_step(runtime, wrapped, index, part_loss(total))}
        optimizer.step()
        evaluated = val is not None and (step % config.eval_every == 0 or step == config.steps)
        if evaluated:
            scores, _ = evaluate_sharded(runtime, target, layer, with_states(intervention, states), val, val_src)
            entry["val"] = scores["overall"]
            score = scores["overall"]["disentangle"]
            if best_val is None or score > best_val["disentangle"]:
                best_val, best_step, bad = scores["overall"], step, 0
                best_state = {k: v.detach().clone() for k, v in intervention.state_dict().items()}
                if writes:
                    save_checkpoint(
                        folder, intervention, config, {"step": step, "val": best_val, "provenance": built_from}
                    )
            else:
                bad += 1
            bar.set_postfix(loss=f"{entry['loss']:.3f}", val=f"{score:.3f}")
        history.append(entry)
        done = bad >= config.patience or step == config.steps
        if writes and (evaluated or done):
            _save_resume(
                folder,
                {
                    "config": config.to_dict(),
                    "step": step,
                    "done": done,
                    "history": history,
                    "weights": intervention.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": rng.getstate(),
                    "best_val": best_val,
                    "best_step": best_step,
                    "best_state": best_state,
                    "bad": bad,
                    "provenance": built_from,
                },
            )
        if done:
            break
    if best_state is not None:
        intervention.load_state_dict(best_state)
    elif writes and saved is None:
        save_checkpoint(folder, intervention, config, {"step": config.steps, "provenance": built_from})
    runtime.barrier()  # the checkpoint exists for every process from here on
    return TrainResult(
        intervention,
        config,
        history,
        best_step,
        best_val,
        time.perf_counter() - started,
        resumed_from=first - 1 if saved is not None else 0,
    )
