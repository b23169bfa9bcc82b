"""The resume file of a HyperDAS training run (`resume.pt`): the run at its last saved step, written
whole or not at all, and read back only into a run of the same configuration and pairs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from hyperdas.core.config import FrozenConfig
from hyperdas.core.errors import CheckpointError
from hyperdas.core.files import check_checksums, checked_path, read_checked, read_or_explain
from hyperdas.hyper.checkpoints import CONFIG, RESUME, WEIGHTS
from hyperdas.hyper.legacy import MODEL_BEFORE_FIELDS, TRAIN_BEFORE_FIELDS
from hyperdas.target.provenance import check_provenance


def differs(saved: dict, current: FrozenConfig, before: dict) -> bool:
    """Whether a resumable run was saved with another configuration than `current`. A field the
    run predates counts as what runs were made with before it (`before`), else as its default."""
    filled = {**type(current)().to_dict(), **before, **saved}
    return json.loads(json.dumps(filled)) != json.loads(json.dumps(current.to_dict()))


def restore(folder: Path, config, train, built_from, model, optimizer, rng) -> dict | None:
    """The state an interrupted run saved in `folder`, loaded into `model`, `optimizer` and `rng`;
    None when there is none. A run of another configuration or other pairs is refused, and so is a
    damaged "already done" checkpoint."""
    if not (folder / RESUME).is_file():
        return None
    fix = "delete it to start this run from step 0"
    saved = read_checked(folder / RESUME, lambda p: torch.load(p, weights_only=True), fix)
    if differs(saved["config"], config, MODEL_BEFORE_FIELDS) or differs(saved["train"], train, TRAIN_BEFORE_FIELDS):
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


def save_resume(folder: Path, config, train, step, history, model, optimizer, rng, best: dict, built_from) -> None:
    """What `restore` reads back: the run at `step`, written whole or not at all."""
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
