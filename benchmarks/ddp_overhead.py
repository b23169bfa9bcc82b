"""DDP overhead on a CPU: HyperDAS and MDAS training steps with 2 processes x 1 thread (accelerate
launch, gloo) against 1 process x 2 threads, on the same global batch of the embedded model.

Each configuration is a separate launch of this script in worker mode; a worker times `--repeats`
steps after warm-up (every process waits for the others before and after each step, so a step's
time is the slowest process's) and the main process writes its medians to a temporary file.
Overhead = median step time with 2 processes / with 1 process - 1; goal <= 0.15.
    python benchmarks/ddp_overhead.py [--model smollm2-135m] [--batch-size 16]
Writes the section "ddp_overhead" of results/<model>/benchmarks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def worker(args) -> None:
    from hyperdas.das.interventions import RotatedSpaceInterchange
    from hyperdas.das.training import DASConfig, select_rows
    from hyperdas.data.dataset import load_pairs, pairs_dir
    from hyperdas.hyper.model import HyperDAS, HyperDASConfig
    from hyperdas.hyper.training import HyperTrainConfig, encoded_pairs, example_weights, make_optimizer, train_step
    from hyperdas.target.distributed import runtime, weighted_step
    from hyperdas.target.evaluate import encode, intervened_logits, source_vectors
    from hyperdas.target.models import load_target

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    run = runtime("cpu")
    target = load_target(args.model)
    pairs = load_pairs(pairs_dir(args.results, target.name))
    rows = pairs["train"].select(range(args.batch_size))
    index = list(range(args.batch_size))

    def timed(step) -> list[float]:
        for _ in range(2):  # warm-up
            step()
        out = []
        for _ in range(args.repeats):
            run.barrier()
            start = time.perf_counter()
            step()
            run.barrier()
            out.append(time.perf_counter() - start)
        return out

    config = HyperDASConfig(layer=args.layer, k=args.k, n_blocks=args.n_blocks)
    train = HyperTrainConfig(batch_size=args.batch_size)
    enc = encoded_pairs(target, rows)
    model = HyperDAS(target, config).to(target.device).train()
    optimizer = make_optimizer(model, train)
    planner, optimizer = run.prepare(model, optimizer)
    weights = example_weights(enc, train)
    hyper = timed(lambda: train_step(target, model, enc, index, weights, optimizer, train, 1, run, planner))

    das_config = DASConfig(method="mdas", layer=args.layer, k=args.k)
    das_rows = select_rows(pairs["train"], das_config)
    das_enc = encode(target.tokenizer, das_rows.select(range(min(args.batch_size, len(das_rows)))))
    sources = source_vectors(target, args.layer, das_enc)
    intervention = RotatedSpaceInterchange(target.hidden_size, args.k)
    das_optimizer = torch.optim.AdamW(intervention.parameters(), lr=1e-2)
    wrapped, das_optimizer = run.prepare(intervention, das_optimizer)

    def das_step():
        das_optimizer.zero_grad()

        def part_loss(part):
            logits, labels = intervened_logits(target, args.layer, wrapped, das_enc, part, sources)
            return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum") / total

        weighted_step(run, wrapped, index, part_loss)
        das_optimizer.step()

    total = sum(len(das_enc.answers[i]) for i in index)
    das = timed(das_step)
    if run.is_main:
        Path(args.worker_out).write_text(
            json.dumps(
                {
                    "processes": run.world,
                    "threads_per_process": torch.get_num_threads(),
                    "hyperdas_step_seconds": hyper,
                    "mdas_step_seconds": das,
                }
            )
        )


def launch(args, processes: int, threads: int) -> dict:
    out = Path(tempfile.mkdtemp()) / "timings.json"
    script = [
        str(Path(__file__).resolve()),
        "--worker",
        "--worker-out",
        str(out),
        "--threads",
        str(threads),
        "--model",
        args.model,
        "--layer",
        str(args.layer),
        "--k",
        str(args.k),
        "--n-blocks",
        str(args.n_blocks),
        "--batch-size",
        str(args.batch_size),
        "--repeats",
        str(args.repeats),
        "--results",
        args.results,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    from hyperdas.target.distributed import launch_command

    command = [sys.executable, *script] if processes == 1 else launch_command(processes, script)
    subprocess.run(command, check=True, env=env, cwd=REPO)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--n-blocks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--results", default=str(REPO / "results"))
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--worker-out", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    from hyperdas.core.results import environment, results_dir, write_section

    runs = {"1x2": launch(args, 1, 2), "2x1": launch(args, 2, 1)}
    section = {
        "model": args.model,
        "batch_size": args.batch_size,
        "layer": args.layer,
        "k": args.k,
        "n_blocks": args.n_blocks,
        "goal_overhead": 0.15,
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "environment": environment(),
    }
    for method in ("hyperdas", "mdas"):
        one, two = (statistics.median(runs[r][f"{method}_step_seconds"]) for r in ("1x2", "2x1"))
        section[method] = {
            "one_process_two_threads_seconds": one,
            "two_processes_one_thread_seconds": two,
            "overhead": two / one - 1,
        }
    path = write_section(results_dir(args.results, args.model) / "benchmarks.json", "ddp_overhead", section)
    print(json.dumps({m: section[m] for m in ("hyperdas", "mdas")}, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
