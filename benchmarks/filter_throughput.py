"""Filtering throughput: teacher-forced answer checks per second, with and without prefix reuse.

A fixed sample (seeded; its sha256 is recorded) of city prompts spread over every Country,
Continent and Language template, so template lengths are mixed. The verdict cache is bypassed:
every prompt is run. Projects the time to filter the whole city domain for those attributes.
    python benchmarks/filter_throughput.py [--model smollm2-135m] [--prompts 10000] [--compare 2000]
Writes the section "filter_throughput" of results/<model>/benchmarks.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import statistics
import time
from pathlib import Path

import torch

from hyperdas.core.results import results_dir, write_section
from hyperdas.core.scoring import check_answers
from hyperdas.data.ravel import load_domain
from hyperdas.target.models import load_target

ATTRIBUTES = ("Country", "Continent", "Language")


def sample_items(data, n: int, seed: int) -> list[tuple[str, str, str]]:
    """About n (template, entity, value) items, the same number of entities for every template."""
    templates = [(a, t) for a in ATTRIBUTES for t in data.attribute_to_prompts[a]]
    per_template = -(-n // len(templates))
    rng = random.Random(seed)
    items = []
    for attribute, template in templates:
        entities = sorted(e for e, v in data.entity_attributes.items() if v.get(attribute))
        for entity in rng.sample(entities, per_template):
            items.append((template, entity, data.entity_attributes[entity][attribute]))
    return items


def timed(target, items, reuse_prefix: bool, batch_size: int) -> dict:
    start = time.perf_counter()
    verdicts = check_answers(target, items, batch_size=batch_size, reuse_prefix=reuse_prefix)
    seconds = time.perf_counter() - start
    return {
        "prompts": len(items),
        "seconds": seconds,
        "prompts_per_second": len(items) / seconds,
        "correct": sum(verdicts),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=10000)
    parser.add_argument(
        "--compare",
        type=int,
        default=1500,
        help="about this many prompts (whole templates) also run without prefix reuse",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"))
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    target = load_target(args.model)
    data = load_domain("city")
    items = sample_items(data, args.prompts, args.seed)
    lengths = [len(target.tokenizer(t % e)["input_ids"]) for t, e, _ in items]
    reused = timed(target, items, True, args.batch_size)
    # whole templates (every k-th), so batches look like real filtering rather than scattered prompts
    templates = list(dict.fromkeys(t for t, _, _ in items))
    step = max(1, round(len(items) / max(args.compare, 1)))
    subset = [item for item in items if item[0] in set(templates[::step])]
    compare = {
        "with_prefix_reuse": timed(target, subset, True, args.batch_size),
        "without_prefix_reuse": timed(target, subset, False, args.batch_size),
    }
    full = sum(
        len(data.attribute_to_prompts[a]) * sum(1 for v in data.entity_attributes.values() if v.get(a))
        for a in ATTRIBUTES
    )
    section = {
        "model": target.name,
        "sample": {
            "seed": args.seed,
            "prompts": len(items),
            "templates": len({t for t, _, _ in items}),
            "sha256": hashlib.sha256(json.dumps(items).encode()).hexdigest(),
            "prompt_tokens": {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)},
        },
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "with_prefix_reuse": reused,
        "same_subset": compare,
        "full_city_domain": {
            "attributes": ATTRIBUTES,
            "prompts": full,
            "projected_hours": full / reused["prompts_per_second"] / 3600,
        },
        "goal_prompts_per_second": 40,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    path = results_dir(args.results, target.name) / "benchmarks.json"
    write_section(path, "filter_throughput", section)
    print(json.dumps(section, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
