"""Why HyperDAS trails MDAS on the embedded model: longer training, and the selection taken away.

Scores one HyperDAS model on the test pairs in all three inference modes (the evaluation of
notebooks 02/03) and writes it as one named section of results/<model>/diagnostics.json, with its
configuration, training log summary and timings. The model is either
  - a checkpoint trained elsewhere (`--checkpoint DIR`, e.g. `python -m hyperdas.train --config cpu
    --set hyper_steps=600 --set hyper_eval_every=100`), or
  - trained here for `--steps` steps, with `--fixed-selection`: the selection is replaced during
    training and scoring by control (d)'s FixedSelection (source's last entity token into the
    base's last entity token, nothing else), so only the instruction-built subspace learns.
    python benchmarks/hyperdas_diagnostics.py --name steps600 --checkpoint results/.../checkpoints/hyperdas
    python benchmarks/hyperdas_diagnostics.py --name fixed_selection --fixed-selection --steps 150
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hyperdas.data.dataset import load_pairs, pairs_dir
from hyperdas.editor import HyperDAS, HyperDASConfig, Inference
from hyperdas.evaluate import evaluate
from hyperdas.hypertrain import LOG, HyperTrainConfig, encoded_pairs, load_hyperdas, train_hyperdas
from hyperdas.leakage import FixedSelection
from hyperdas.models import load_target
from hyperdas.results import results_dir, write_section
from hyperdas.selection import MODES


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True, help="section name in diagnostics.json")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--checkpoint", default=None, help="score this trained HyperDAS folder")
    parser.add_argument("--fixed-selection", action="store_true", help="train and score with FixedSelection")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=1e-3, help="notebook 03's CPU default")
    parser.add_argument("--lr-rotation", type=float, default=1e-2, help="notebook 03's CPU default")
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"))
    args = parser.parse_args()
    if (args.checkpoint is None) == (not args.fixed_selection):
        parser.error("give either --checkpoint or --fixed-selection")
    torch.manual_seed(0)
    target = load_target(args.model)
    pairs = load_pairs(pairs_dir(args.results, target.name))
    start = time.perf_counter()
    if args.checkpoint:
        model, _ = load_hyperdas(args.checkpoint, target)
        config = model.config
        log = [json.loads(line) for line in (Path(args.checkpoint) / LOG).read_text().splitlines()]
        saved = json.loads((Path(args.checkpoint) / "config.json").read_text())
        trained = {"checkpoint": str(args.checkpoint), "steps_run": len(log), "train": saved.get("train")}
    else:
        config = HyperDASConfig(layer=15, k=32, n_blocks=2)
        train = HyperTrainConfig(steps=args.steps, lr=args.lr, lr_rotation=args.lr_rotation, eval_every=50,
                                 max_val_pairs=60, eval_modes=("soft",))
        model = HyperDAS(target, config)
        model.selection = FixedSelection()
        result = train_hyperdas(target, pairs, config, train, model=model, check_memory=False)
        model, log = result.model, result.history
        trained = {"train": train.to_dict(), "selection": "FixedSelection (last entity token)",
                   "train_seconds": result.seconds, "best_step": result.best_step}
    model.eval()
    test = encoded_pairs(target, pairs["test"], config.instruction)
    scores = {}
    for mode in (MODES if not args.fixed_selection else ("soft",)):  # a fixed selection has no modes
        s = evaluate(target, config.layer, Inference(model, mode), test)[0]
        scores[mode] = {"overall": s["overall"], "per_attribute": s["per_attribute"]}
        print(mode, {k: round(v, 3) for k, v in s["overall"].items() if isinstance(v, float)}, flush=True)
    windows = [log[i:i + 50] for i in range(0, len(log), 50)]
    section = {
        "model": target.name, "config": config.to_dict(), "seed": 0, **trained, "test": scores,
        "ce_per_50_steps": [sum(e["ce"] for e in w) / len(w) for w in windows],
        "val": [{"step": e["step"], **e["val"]} for e in log if "val" in e],
        "seconds": time.perf_counter() - start,
    }
    path = results_dir(args.results, target.name) / "diagnostics.json"
    write_section(path, args.name, section)
    print("wrote", path)


if __name__ == "__main__":
    main()
