"""The batch runner's glibc malloc settings (`hyperdas.batch.MALLOC`) against the default allocator.

The same HyperDAS training step (activation store, batch 16, the embedded model) is timed in two
fresh processes, one started with `MALLOC`, one without; glibc reads them only at process start,
hence the processes. Also the DAS step from cached layer states. Medians after warm-up.
    python benchmarks/malloc_tuning.py [--results <folder with notebook 01's pairs>]
Writes the section "malloc_tuning" of results/<model>/benchmarks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from hyperdas.batch import MALLOC

CHILD = r"""
import json, statistics, sys, time, torch
from hyperdas.data.dataset import load_pairs, pairs_dir
from hyperdas.das.interventions import RotatedSpaceInterchange
from hyperdas.hyper.model import HyperDAS, HyperDASConfig
from hyperdas.hyper.store import ActivationStore
from hyperdas.hyper.training import HyperTrainConfig, encoded_pairs, example_weights, make_optimizer, train_step
from hyperdas.target.evaluate import intervened_logits
from hyperdas.target.layer_states import FromStates, LayerStates
from hyperdas.target.models import load_target

results, repeats = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
target = load_target("smollm2-135m")
enc = encoded_pairs(target, load_pairs(pairs_dir(results, target.name))["train"].select(range(64)))
config, train = HyperDASConfig(), HyperTrainConfig()
model = HyperDAS(target, config).train()
store = ActivationStore(target, enc, config.layer, model.read_rule, progress=False)
optimizer, weights = make_optimizer(model, train), example_weights(enc, train)
rotation = RotatedSpaceInterchange(target.hidden_size, 32)
das_optimizer = torch.optim.AdamW(rotation.parameters(), lr=3e-3)
das = FromStates(rotation, LayerStates(target, config.layer))


def das_step(index):
    logits, labels = intervened_logits(target, config.layer, das, enc, index, None)
    das_optimizer.zero_grad()
    torch.nn.functional.cross_entropy(logits, labels).backward()
    das_optimizer.step()


steps = {"hyperdas": lambda i: train_step(target, model, enc, i, weights, optimizer, train, 300, store=store),
         "das_from_states": das_step}
out = {}
for name, step in steps.items():
    times = []
    for r in range(repeats + 2):
        index = [(16 * r + j) % 64 for j in range(16)]
        start = time.perf_counter()
        step(index)
        times.append(time.perf_counter() - start)
    out[name] = {"median": statistics.median(times[2:]), "all": times[2:]}
print(json.dumps(out))
"""


def run(results: str, repeats: int, tuned: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in MALLOC}
    if tuned:
        env.update(MALLOC)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, results, str(repeats)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    from hyperdas.core.results import results_dir, write_section

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"))
    args = parser.parse_args()
    default, tuned = run(args.results, args.repeats, False), run(args.results, args.repeats, True)
    section = {
        "model": "smollm2-135m",
        "malloc": MALLOC,
        "batch_size": 16,
        "default_allocator_seconds": default,
        "tuned_allocator_seconds": tuned,
        "speedup": {name: default[name]["median"] / tuned[name]["median"] for name in default},
    }
    path = results_dir(args.results, "smollm2-135m") / "benchmarks.json"
    write_section(path, "malloc_tuning", section)
    print(json.dumps(section["speedup"], indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
