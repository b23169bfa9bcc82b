"""DAS training-step overhead and evaluation throughput on the embedded model.

One DAS step (intervened forward from the base prompts, CE on the answer tokens, backward into
the rotation, AdamW step) against one bare frozen forward+backward of the target on the same batch
(gradient only to the residual stream after the same layer, which is what any intervention needs).
Both run from the same precomputed source vectors, interleaved, after warm-up; medians reported.
Goal: ratio <= 1.3. Also the step as training runs it, from the target's states after the layer
computed once (`hyperdas.target.layer_states`: only the blocks above the layer run), and the
largest logit difference between the two. Also evaluation examples/s (teacher-forced and generation) and peak RSS.
    python benchmarks/das_step.py [--model smollm2-135m] [--layer 15] [--k 32] [--batch-size 16]
Writes the section "das_step" of results/<model>/benchmarks.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch

from hyperdas.core.results import results_dir, write_section
from hyperdas.das.interventions import RotatedSpaceInterchange
from hyperdas.das.training import DASConfig, select_rows
from hyperdas.data.dataset import load_pairs, pairs_dir
from hyperdas.target.evaluate import encode, evaluate, intervened_logits, source_vectors
from hyperdas.target.hooks import edit_residual
from hyperdas.target.layer_states import FromStates, LayerStates
from hyperdas.target.models import load_target


def bare_step(target, layer, enc, index) -> None:
    """Frozen forward+backward of the same base rows, the gradient stopping at the layer's output."""
    from hyperdas.core.scoring import answer_logits

    rows = [enc.base[i] for i in index]
    wanted = [(r, enc.first[i] + t) for r, i in enumerate(index) for t in range(len(enc.answers[i]))]
    leaf = {}

    def grad_here(hidden):
        leaf["h"] = hidden.detach().requires_grad_(True)
        return leaf["h"]

    with edit_residual(target, layer, grad_here):
        logits = answer_logits(target.model, rows, wanted, target.tokenizer.pad_token_id or 0)
    labels = torch.tensor([t for i in index for t in enc.answers[i]], device=logits.device)
    torch.nn.functional.cross_entropy(logits.float(), labels).backward()


def das_step(target, layer, enc, index, sources, intervention, optimizer) -> None:
    logits, labels = intervened_logits(target, layer, intervention, enc, index, sources)
    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--eval-pairs", type=int, default=192)
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"))
    args = parser.parse_args()
    torch.manual_seed(0)
    target = load_target(args.model)
    pairs = load_pairs(pairs_dir(args.results, target.name))
    config = DASConfig(method="mdas", target_attribute="Country", layer=args.layer, k=args.k)
    train = encode(target.tokenizer, select_rows(pairs["train"], config))
    index = list(range(args.batch_size))
    start = time.perf_counter()
    sources = source_vectors(target, args.layer, train)
    source_seconds = time.perf_counter() - start
    intervention = RotatedSpaceInterchange(target.hidden_size, args.k)
    optimizer = torch.optim.AdamW(intervention.parameters(), lr=1e-2)
    run_das = lambda: das_step(target, args.layer, train, index, sources, intervention, optimizer)  # noqa: E731
    run_bare = lambda: bare_step(target, args.layer, train, index)  # noqa: E731
    states = LayerStates(target, args.layer)
    start = time.perf_counter()
    states.fill_pairs(train)
    states_seconds = time.perf_counter() - start
    cached = FromStates(intervention, states)
    run_cached = lambda: das_step(target, args.layer, train, index, None, cached, optimizer)  # noqa: E731
    for _ in range(2):  # warm-up
        run_das(), run_bare(), run_cached()
    das, bare, from_states = [], [], []
    for _ in range(args.repeats):  # interleaved, so drifts in machine load hit all
        das += timed(run_das, 1)
        bare += timed(run_bare, 1)
        from_states += timed(run_cached, 1)
    with torch.no_grad():
        plain = intervened_logits(target, args.layer, intervention, train, index, sources)[0]
        differ = (plain - intervened_logits(target, args.layer, cached, train, index, None)[0]).abs().max().item()

    test = encode(target.tokenizer, select_rows(pairs["test"], config, args.eval_pairs))
    test_sources = source_vectors(target, args.layer, test)
    throughput = {}
    for mode in ("teacher_forced", "generation"):
        start = time.perf_counter()
        evaluate(target, args.layer, intervention, test, test_sources, mode=mode)
        throughput[mode] = len(test) / (time.perf_counter() - start)
    lengths = [len(train.base[i]) for i in index]
    section = {
        "model": target.name,
        "layer": args.layer,
        "k": args.k,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "base_tokens": {"min": min(lengths), "max": max(lengths)},
        "das_step_seconds": {"median": statistics.median(das), "all": das},
        "bare_forward_backward_seconds": {"median": statistics.median(bare), "all": bare},
        "ratio": statistics.median(das) / statistics.median(bare),
        "goal_ratio": 1.3,
        "from_states_step_seconds": {"median": statistics.median(from_states), "all": from_states},
        "from_states_ratio": statistics.median(from_states) / statistics.median(bare),
        "from_states_max_logit_difference": differ,
        "states_pairs_per_second": len(train) / states_seconds,
        "source_vectors_per_second": len(train) / source_seconds,
        "eval_examples_per_second": throughput,
        "eval_pairs": len(test),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    path = results_dir(args.results, target.name) / "benchmarks.json"
    write_section(path, "das_step", section)
    print(
        json.dumps(
            {k: v for k, v in section.items() if not k.endswith("_seconds")},
            indent=2,
        )
    )
    print("wrote", path)


if __name__ == "__main__":
    main()
