"""A HyperDAS run's files: the trainable weights (safetensors) with both configs, where each run keeps
them, and loading them back checked against the target and the expected configuration."""

from __future__ import annotations

import json
from pathlib import Path

from hyperdas.core.errors import CheckpointError
from hyperdas.core.files import (
    atomic_paths,
    check_checksums,
    file_checksums,
    read_or_explain,
)
from hyperdas.hyper.legacy import MODEL_BEFORE_FIELDS
from hyperdas.hyper.model import HyperDAS, HyperDASConfig
from hyperdas.hyper.train_config import HyperTrainConfig
from hyperdas.target.provenance import check_provenance, provenance

WEIGHTS, CONFIG, RESUME, LOG = "hyperdas.safetensors", "config.json", "resume.pt", "train_log.jsonl"


def snapshot_folder(out_dir: str | Path, step: int) -> Path:
    """Where a run keeps its weights at `step` of `HyperTrainConfig.snapshot_steps`."""
    return Path(out_dir) / "snapshots" / f"step-{step}"


def checkpoint_folder(out_dir: str | Path, layer: int, seed: int | None = None, group: str | None = None) -> Path:
    """Where notebook 03 keeps its model for `layer` (and notebook 04 finds it): one per layer; the
    runs of further seeds (`seed`) beside it; with several domains, one per `group` (a domain, or
    "all" for one HyperDAS over every domain)."""
    name = f"hyperdas-layer{layer}" + (f"-{group}" if group else "") + (f"-seed{seed}" if seed is not None else "")
    return Path(out_dir) / "checkpoints" / name


def save_hyperdas(
    folder: str | Path,
    model: HyperDAS,
    train_config: HyperTrainConfig | None = None,
    extra: dict | None = None,
    state: dict | None = None,
) -> Path:
    """Trainable weights (safetensors) + configs; `state`: weights gathered elsewhere (FSDP)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = state if state is not None else model.state_dict()
    # both files are written whole before either replaces its predecessor: a failure (a full disk)
    # leaves the previous checkpoint; the weights' checksums in the config catch a damaged file on load
    with atomic_paths(folder / WEIGHTS, folder / CONFIG) as (tmp, config_tmp):
        save_file(_unshared(state), str(tmp))
        payload = {
            "model": model.config.to_dict(),
            "train": train_config.to_dict() if train_config else None,
            "hidden_size": model.subspace.hidden,
            "target": model.target_name,
            **(extra or {}),
            "weights_checksums": file_checksums(tmp),
        }
        config_tmp.write_text(json.dumps(payload, indent=1, default=list))
    return folder


def _unshared(state: dict) -> dict:
    """`state` as safetensors takes it: contiguous, and a tensor seen under two names (tied weights,
    `HyperDASConfig.tie_attention`) stored twice; loading writes the same values into it twice."""
    seen, out = set(), {}
    for name, value in state.items():
        value = value.detach().contiguous()
        if value.data_ptr() in seen:
            value = value.clone()
        seen.add(value.data_ptr())
        out[name] = value
    return out


def load_hyperdas(
    folder: str | Path, target, expect: HyperDASConfig | None = None, pairs=None
) -> tuple[HyperDAS, dict]:
    """Rebuild a saved HyperDAS model around `target`; refuses a checkpoint trained on another
    target, (when `expect` is given) one saved with another configuration, and (given the `pairs`
    it is about to be scored on) one trained from other pairs, another target or package version
    (`hyperdas.target.provenance`)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"no HyperDAS checkpoint ({WEIGHTS}) in {folder}")
    fix = f"delete {folder} to train again, or pass another results folder"
    saved = read_or_explain(folder / CONFIG, lambda p: json.loads(p.read_text()), fix)
    if saved["hidden_size"] != target.hidden_size or saved.get("target", target.name) != target.name:
        raise CheckpointError(
            f"checkpoint {folder} was trained on {saved.get('target', '?')} (hidden size "
            f"{saved['hidden_size']}), not on {target.name} (hidden size {target.hidden_size})"
        )
    # a field the checkpoint predates: what runs were made with before it, else its default
    saved["model"] = {**HyperDASConfig().to_dict(), **MODEL_BEFORE_FIELDS, **saved["model"]}
    wanted = json.loads(json.dumps(expect.to_dict())) if expect is not None else saved["model"]  # JSON's types
    differ = sorted(k for k, v in wanted.items() if saved["model"].get(k) != v)
    if differ:
        raise CheckpointError(
            f"checkpoint {folder} was saved with another HyperDAS configuration (differs in {differ})"
        )
    if pairs is not None:
        check_provenance(
            saved.get("provenance"),
            provenance(target, pairs),
            folder,
            "train it again on these pairs (notebook 03; fresh=True) or score it on the pairs it was trained on",
        )
    check_checksums(folder / WEIGHTS, saved.get("weights_checksums"), fix)
    model = HyperDAS(target, HyperDASConfig.from_dict(saved["model"])).to(target.device)
    model.load_state_dict(read_or_explain(folder / WEIGHTS, lambda p: load_file(str(p)), fix))
    return model, saved
