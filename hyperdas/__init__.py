"""HyperDAS on RAVEL: DAS, MDAS and a hypernetwork that finds where, and in which subspace, a concept
lives in a frozen language model's residual stream.

The names below are the public API; each is imported on first use, so `import hyperdas` (and the
command lines' `--help`) loads no torch. The layers, lowest first: `core` (configs, cache, results
files, metrics), `data` (RAVEL, pairs), `target` (the frozen model, hooks, evaluation), `das` and
`hyper` (the methods), `experiments` (what the notebooks run); `cli` and `batch` sit on top.

    import hyperdas as hd
    target = hd.load_target("smollm2-135m")
    pairs = hd.load_pairs("results/smollm2-135m/datasets/ravel_pairs")
    result = hd.train_hyperdas(target, pairs, hd.HyperDASConfig(), hd.HyperTrainConfig(steps=50))
    scores, _ = hd.evaluate(target, 15, hd.Inference(result.model, "one_to_one"),
                            hd.encoded_pairs(target, pairs["test"]))
"""

from __future__ import annotations

import importlib

_WHERE = {
    # the frozen target
    "ModelConfig": "hyperdas.core.config",
    "load_target": "hyperdas.target.models",
    "Target": "hyperdas.target.models",
    "record_residual": "hyperdas.target.hooks",
    "edit_residual": "hyperdas.target.hooks",
    "patch_residual": "hyperdas.target.hooks",
    "encode": "hyperdas.target.evaluate",
    "evaluate": "hyperdas.target.evaluate",
    # data
    "load_pairs": "hyperdas.data.dataset",
    # DAS / MDAS
    "DASConfig": "hyperdas.das.training",
    "train_das": "hyperdas.das.training",
    "run_baselines": "hyperdas.das.baselines",
    # HyperDAS
    "HyperDAS": "hyperdas.hyper.model",
    "HyperDASConfig": "hyperdas.hyper.model",
    "Inference": "hyperdas.hyper.model",
    "HyperTrainConfig": "hyperdas.hyper.training",
    "train_hyperdas": "hyperdas.hyper.training",
    "load_hyperdas": "hyperdas.hyper.training",
    "encoded_pairs": "hyperdas.hyper.training",
}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'hyperdas' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
