"""What a checkpoint was built from: the package version, the target (name, dtype, 4-bit, a
fingerprint of its weights) and the pairs (a fingerprint of their content). A run resumes from, or
counts as already done by, a checkpoint only when all of them match; otherwise it refuses by name."""

from __future__ import annotations

import hashlib
import importlib.metadata

import torch

from hyperdas.core.errors import ProvenanceError
from hyperdas.data.dataset import pairs_fingerprint

PARTS = {"package": "another version of hyperdas", "model": "another model", "pairs": "other pairs"}


def weights_fingerprint(target) -> str:
    """sha256 over the target's parameter names, shapes and a strided sample of their values (cheap
    for an 8B model, and any retrained or other checkpoint differs in it); cached on the target."""
    cached = getattr(target, "_weights_sha256", None)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in target.model.named_parameters():
            flat = param.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 4096)][:4096].to("cpu", torch.float32)
            digest.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
            digest.update(sample.numpy().tobytes())
    target._weights_sha256 = digest.hexdigest()
    return target._weights_sha256


def package_version() -> str | None:
    try:
        return importlib.metadata.version("hyperdas")
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(target, pairs) -> dict:
    return {
        "package": package_version(),
        "model": {"name": target.name, **target.config.to_dict(), "weights_sha256": weights_fingerprint(target)},
        "pairs": pairs_fingerprint(pairs),
    }


def check_provenance(saved: dict | None, now: dict, folder, fix: str | None = None) -> None:
    """Refuse to reuse `folder`'s checkpoint when it was built from anything else than `now`."""
    saved = saved or {}
    differ = [PARTS[part] for part in PARTS if saved.get(part) != now[part]]
    if differ:
        fix = fix or "rerun with --fresh (notebooks: fresh=True) to train it again, or write to another results folder"
        raise ProvenanceError(f"checkpoint {folder} was trained on {' and '.join(differ)}: {fix}")
