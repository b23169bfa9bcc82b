"""Training HyperDAS: weighted cross-entropy + scheduled sparsity penalty, resumable, logged.

One model serves every attribute of the dataset. Loss: teacher-forced CE on the first <= 3
answer tokens, causal rows weighted 3.5 and isolate rows 0.5 (official), plus the selection's
sparsity penalty, off for the first half of training, then rising linearly 0.15 -> 1.5, and (ours,
weight 0.1; 0 in the paper) each base column's selection entropy. AdamW
with its own learning rate for the shared rotation R; gradient clipping. Every `eval_every` steps
the val pairs are scored in each inference mode through `hyperdas.target.evaluate.evaluate`; the step
with the best Disentangle in the trained selection's mode is kept (`ranked_scores`). A JSONL log (one
line per step) feeds the convergence figure.
Checkpoints hold the trainable weights only (safetensors) plus both configs; `resume.pt` adds the
optimizer and RNG state so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hyperdas.core.config import FrozenConfig
from hyperdas.core.errors import CheckpointError, TrainingDiverged
from hyperdas.core.files import (
    append_line,
    check_checksums,
    checked_path,
    one_writer,
    read_checked,
    read_or_explain,
    write_text,
)
from hyperdas.core.metrics import MAX_ANSWER_TOKENS
from hyperdas.data.ravel import RavelDataError
from hyperdas.hyper.checkpoints import (  # noqa: F401 (imported from here by notebooks and tests)
    CONFIG,
    LOG,
    RESUME,
    WEIGHTS,
    checkpoint_folder,
    load_hyperdas,
    save_hyperdas,
    snapshot_folder,
)
from hyperdas.hyper.legacy import MODEL_BEFORE_FIELDS, TRAIN_BEFORE_FIELDS
from hyperdas.hyper.model import DEFAULT_INSTRUCTION, HyperDAS, HyperDASConfig, Inference, add_instructions
from hyperdas.hyper.selection import MODES, column_entropy, sparsity_penalty
from hyperdas.hyper.store_plan import _store_bytes, make_store, planned_store  # noqa: F401
from hyperdas.hyper.train_config import (  # noqa: F401
    LR_SCHEDULES,
    SAMPLINGS,
    HyperTrainConfig,
    draw_batch,
    sampling_groups,
)
from hyperdas.target.distributed import SINGLE, Runtime, weighted_step
from hyperdas.target.evaluate import check_rows, encode, evaluate_sharded, intervened_logits
from hyperdas.target.hooks import check_layer, checkpointed
from hyperdas.target.memory import check_fits, estimate_for
from hyperdas.target.provenance import check_provenance, provenance


@dataclasses.dataclass
class HyperTrainResult:
    model: HyperDAS
    history: list[dict]
    best_step: int
    best_val: dict | None
    seconds: float
    resumed_from: int = 0
    provenance: dict | None = None  # what the checkpoint was built from (`hyperdas.target.provenance`)


def encoded_pairs(target, rows, template: str = DEFAULT_INSTRUCTION, answer_tokens: int | None = MAX_ANSWER_TOKENS):
    """Encoded pairs with their instructions (`template`: the model's `config.instruction`)."""
    check_rows(rows)
    return add_instructions(encode(target.tokenizer, rows, answer_tokens), target.tokenizer, rows, template)


def make_optimizer(model: HyperDAS, config: HyperTrainConfig) -> torch.optim.Optimizer:
    rotation = [p for n, p in model.named_parameters() if n.startswith("subspace.rotation.")]
    ids = {id(p) for p in rotation}
    rest = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]  # frozen parts: no state
    groups = [{"params": rest, "lr": config.lr, "weight_decay": config.weight_decay}]
    if rotation:
        groups.append({"params": rotation, "lr": config.lr_rotation, "weight_decay": 0.0})
    try:  # one fused kernel (CPU since torch 2.4, CUDA); the per-tensor loop took 0.4 s of a 3.9 s SmolLM step
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups)


def validate(target, model: HyperDAS, enc, modes=MODES, runtime: Runtime = SINGLE, store=None) -> dict:
    model.eval()
    out = {
        mode: evaluate_sharded(runtime, target, model.config.layer, Inference(model, mode, store=store), enc)[0][
            "overall"
        ]
        for mode in modes
    }
    model.train()
    return out


def _differs(saved: dict, current: FrozenConfig, before: dict) -> bool:
    """Whether a resumable run was saved with another configuration than `current`. A field the
    run predates counts as what runs were made with before it (`before`), else as its default."""
    filled = {**type(current)().to_dict(), **before, **saved}
    return json.loads(json.dumps(filled)) != json.loads(json.dumps(current.to_dict()))


def ranked_scores(val: dict, train: HyperTrainConfig) -> dict:
    """The val scores that pick the kept step: the trained selection's mode where it was scored
    (a model trained for one-to-one is kept for its one-to-one Disentangle), else soft, else the first."""
    for mode in (train.train_selection, "soft"):
        if mode in val:
            return val[mode]
    return next(iter(val.values()))


def example_weights(enc, train: HyperTrainConfig) -> torch.Tensor:
    """The loss weight of each encoded pair: causal_weight or iso_weight by its kind."""
    return torch.tensor(
        [train.causal_weight if r["attribute_type"] == "causal" else train.iso_weight for r in enc.records]
    )


def train_step(
    target,
    model: HyperDAS,
    enc,
    index: list[int],
    weights: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    train: HyperTrainConfig,
    step: int,
    runtime: Runtime = SINGLE,
    planner=None,
    store=None,
) -> dict:
    """One optimisation step on the global batch `index`; returns its log entry (loss, ce, sparsity).
    `planner`: the module the accelerator wrapped (`runtime.prepare`), through which the
    hypernetwork runs so that DDP sees it; by default `model` itself. `store`: the read passes of
    `enc`, computed once (`make_store`)."""
    model.subspace.temperature = train.temperature(step)
    planner = planner if planner is not None else model
    total = sum(float(weights[i]) * len(enc.answers[i]) for i in index)
    sparsity_weight, parts = train.sparsity_weight(step), {"ce": [], "sparsity": [], "entropy": []}
    # the soft A's read width for the whole batch (each part is padded to its own); the entropy's only
    width = max(len(row) for row in model.read_rule.base_rows(enc, index)[0]) if train.selection_entropy else None

    def part_loss(part: list[int]):
        context = (
            checkpointed(target, model.config.layer % target.n_layers + 1) if train.checkpoint_target else nullcontext()
        )
        with context:
            logits, labels = intervened_logits(
                target,
                model.config.layer,
                Inference(model, train.selection_at(step), planner, store, straight_through=True),
                enc,
                part,
                None,
            )
        token_weights = torch.cat([weights[i].expand(len(enc.answers[i])) for i in part]).to(logits.device)
        ce = (torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none") * token_weights).sum() / total
        # the penalties are batch means: this part's share of them; on the soft A whatever the mode
        share = len(part) / len(index)
        sparsity = sparsity_penalty(model.last_soft.float()) * share
        parts["ce"].append(ce.item()), parts["sparsity"].append(sparsity.item())
        loss = ce + sparsity_weight * sparsity
        if train.selection_entropy:
            entropy = column_entropy(model.last_soft.float(), width) * share
            parts["entropy"].append(entropy.item())
            loss = loss + train.selection_entropy * entropy
        return loss

    for group in optimizer.param_groups:  # stateless: a resumed run sets the same rates
        group["lr"] = group.setdefault("base_lr", group["lr"]) * train.lr_factor(step)
    optimizer.zero_grad()
    loss = weighted_step(runtime, planner, index, part_loss)
    norm = runtime.clip(planner, train.clip)  # the wrapped module: FSDP clips over its shards
    if not (math.isfinite(loss) and math.isfinite(norm)):  # stop before the weights take a NaN
        raise TrainingDiverged(
            f"training diverged at step {step}: loss {loss}, gradient norm {norm}; the likely cause is the "
            f"learning rate (lr={train.lr}, lr_rotation={train.lr_rotation}): lower hyper_lr / hyper_lr_rotation"
        )
    optimizer.step()
    return {
        "step": step,
        "loss": loss,
        "ce": runtime.total(sum(parts["ce"])),
        "sparsity": runtime.total(sum(parts["sparsity"])),
        "sparsity_weight": sparsity_weight,
        **({"entropy": runtime.total(sum(parts["entropy"]))} if parts["entropy"] else {}),
    }


@one_writer("out_dir")  # one writer per checkpoint folder
def train_hyperdas(
    target,
    pairs,
    config: HyperDASConfig,
    train: HyperTrainConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = True,
    model: HyperDAS | None = None,
    check_memory: bool = True,
    runtime: Runtime = SINGLE,
) -> HyperTrainResult:
    """Train one HyperDAS model on every attribute of pairs["train"] (see module doc).

    `model`: an already built variant to train (e.g. an ablation's, with a part swapped); its
    config must be `config`. By default a fresh `HyperDAS(target, config)`. `check_memory`: print
    the memory estimate first and refuse a run the device cannot hold (`hyperdas.target.memory`).
    `runtime`: several processes under `accelerate launch` (`hyperdas.target.distributed.runtime()`);
    the numbers equal one process's on the same global batch, only the main process writes."""
    check_layer(target.n_layers, config.layer)
    started = time.perf_counter()
    torch.manual_seed(train.seed)
    enc, val = _training_pairs(target, pairs, config, train)
    parts = [p for p in (enc, val) if p is not None]
    store_kind = planned_store(target, parts, config, train, out_dir, progress and runtime.is_main)
    if check_memory:  # before anything is built: a run that cannot fit stops here, with the numbers
        _check_memory(target, config, train, parts, store_kind, runtime, progress)
    if model is not None and model.config != config:
        raise ValueError("train_hyperdas: the given model was built with another config than `config`")
    model = (model if model is not None else HyperDAS(target, config)).to(target.device)
    model.train()
    optimizer = make_optimizer(model, train)
    rng = random.Random(train.seed)
    history, best_val, best_step, best_state, first = [], None, 0, None, 1
    folder = Path(out_dir) if out_dir is not None else None
    built_from = provenance(target, pairs) if folder is not None else None
    saved = _restore(folder, config, train, built_from, model, optimizer, rng) if folder and resume else None
    if saved is not None:
        history, best_val, best_step, best_state = (
            saved["history"],
            saved["best_val"],
            saved["best_step"],
            saved["best_state"],
        )
        first = saved["step"] + 1
    weights = example_weights(enc, train)
    groups = sampling_groups(enc.records) if train.sampling == "balanced" else None
    stores = {
        split: make_store(
            target,
            part,
            config,
            train,
            store_kind,
            folder / "activations" / split if folder is not None else None,
            progress and runtime.is_main,
        )
        for split, part in (("train", enc), ("val", val))
        if part is not None
    }
    planner, optimizer = runtime.prepare(model, optimizer)
    writes = folder is not None and runtime.is_main
    if writes:
        folder.mkdir(parents=True, exist_ok=True)
        # a resumed run rewrites the log up to its saved step: no step is logged twice
        write_text(folder / LOG, "".join(json.dumps(entry) + "\n" for entry in history))
    bar = tqdm(range(first, train.steps + 1), desc="HyperDAS", disable=not (progress and runtime.is_main))
    for step in bar:
        index = draw_batch(rng, groups, len(enc), train.batch_size)
        try:
            entry = train_step(
                target, model, enc, index, weights, optimizer, train, step, runtime, planner, stores.get("train")
            )
        except TrainingDiverged as err:
            kept = f"; the best checkpoint so far (step {best_step}) stays in {folder}" if best_state and folder else ""
            raise TrainingDiverged(f"{err}{kept}, and a rerun needs --fresh (notebooks: fresh=True)") from None
        evaluated = val is not None and (step % train.eval_every == 0 or step == train.steps)
        if evaluated:
            entry["val"] = validate(target, model, val, train.eval_modes, runtime, stores.get("val"))
            ranked = ranked_scores(entry["val"], train)
            score = ranked["disentangle"]
            if best_val is None or score > best_val["disentangle"]:  # the same on every process
                best_val, best_step = ranked, step
                best_state = {k: v.detach().clone() for k, v in runtime.state_dict(planner, model).items()}
                if writes:
                    save_hyperdas(
                        folder, model, train, {"step": step, "val": entry["val"], "provenance": built_from}, best_state
                    )
            bar.set_postfix(loss=f"{entry['loss']:.3f}", val=f"{score:.3f}")
            if step in train.snapshot_steps:
                state = runtime.state_dict(planner, model)
                if writes:
                    extra = {"step": step, "val": entry["val"], "provenance": built_from}
                    save_hyperdas(snapshot_folder(folder, step), model, train, extra, state)
        history.append(entry)
        if writes:
            append_line(folder / LOG, json.dumps(entry))
        if writes and not runtime.fsdp and (evaluated or step == train.steps):  # FSDP: no resume files
            best = {"best_val": best_val, "best_step": best_step, "best_state": best_state}
            _save_resume(folder, config, train, step, history, model, optimizer, rng, best, built_from)
    if best_state is not None and not runtime.fsdp:  # FSDP: the best weights are in the checkpoint
        model.load_state_dict(best_state)
    elif best_state is None and folder is not None:
        state = runtime.state_dict(planner, model)
        if writes:
            save_hyperdas(folder, model, train, {"step": train.steps, "provenance": built_from}, state)
    runtime.barrier()  # the checkpoint exists for every process from here on
    model.eval()
    return HyperTrainResult(
        model,
        history,
        best_step,
        best_val,
        time.perf_counter() - started,
        resumed_from=first - 1 if saved else 0,
        provenance=built_from,
    )


def _training_pairs(target, pairs, config: HyperDASConfig, train: HyperTrainConfig):
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


def _check_memory(target, config, train, parts, store_kind, runtime: Runtime, progress: bool) -> None:
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


def _restore(folder: Path, config, train, built_from, model, optimizer, rng) -> dict | None:
    """The state an interrupted run saved in `folder`, loaded into `model`, `optimizer` and `rng`;
    None when there is none. A run of another configuration or other pairs is refused, and so is a
    damaged "already done" checkpoint."""
    if not (folder / RESUME).is_file():
        return None
    fix = "delete it to start this run from step 0"
    saved = read_checked(folder / RESUME, lambda p: torch.load(p, weights_only=True), fix)
    if _differs(saved["config"], config, MODEL_BEFORE_FIELDS) or _differs(saved["train"], train, TRAIN_BEFORE_FIELDS):
        raise CheckpointError(
            f"{folder} holds a run with another configuration: rerun with --fresh (notebooks: fresh=True, "
            f"Python: resume=False) to train it again, or write to another results folder"
        )
    check_provenance(saved.get("provenance"), built_from, folder)
    if (folder / WEIGHTS).is_file():  # "already done" must not hide a damaged checkpoint
        from safetensors.torch import load_file

        fix = f"delete {folder} or rerun with --fresh"
        read_or_explain(folder / WEIGHTS, lambda p: load_file(str(p)), fix)
        if (folder / CONFIG).is_file():
            written = read_or_explain(folder / CONFIG, lambda p: json.loads(p.read_text()), fix)
            check_checksums(folder / WEIGHTS, written.get("weights_checksums"), fix)
    model.load_state_dict(saved["weights"])
    optimizer.load_state_dict(saved["optimizer"])
    rng.setstate((saved["rng"][0], tuple(saved["rng"][1]), saved["rng"][2]))
    return saved


def _save_resume(folder: Path, config, train, step, history, model, optimizer, rng, best: dict, built_from) -> None:
    """What `_restore` reads back: the run at `step`, written whole or not at all."""
    state = {
        "config": config.to_dict(),
        "train": json.loads(json.dumps(train.to_dict())),
        "step": step,
        "history": history,
        "weights": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng.getstate(),
        **best,
        "provenance": built_from,
    }
    with checked_path(folder / RESUME) as tmp:
        torch.save(state, tmp)
