"""Load time and peak memory of an embedded target: first load (GGUF conversion) and cached load.

Each measurement runs in a fresh Python process so peak RSS belongs to that load alone.
    python benchmarks/model_load.py [--model smollm2-135m] [--results results]
Writes the section "model_load" of results/<model>/benchmarks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from hyperdas.core.results import results_dir, write_section

CHILD = """
import json, resource, sys, time
start = time.perf_counter()
from hyperdas.target.models import load_target
import transformers.models.auto.modeling_auto, transformers.models.auto.tokenization_auto
imported = time.perf_counter()
target = load_target(sys.argv[1])
loaded = time.perf_counter()
peak_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import torch
with torch.no_grad():  # cached weights are memory-mapped: a forward pass makes them resident
    target.model(**target.tokenizer(["The capital of France is"], return_tensors="pt"))
print(json.dumps({"import_seconds": imported - start, "load_seconds": loaded - imported,
                  "peak_rss_mib": peak_after_load,
                  "peak_rss_after_one_forward_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(model: str, cache: str) -> dict:
    env = {**os.environ, "HYPERDAS_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, model], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--results", default=str(Path(__file__).resolve().parent.parent / "results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        first = measure(args.model, cache)
        cached = measure(args.model, cache)
    section = {
        "model": args.model,
        "first_load_with_conversion": first,
        "cached_load": cached,
        "note": "load_seconds exclude importing torch/transformers; peak RSS of the whole process",
    }
    path = results_dir(args.results, args.model) / "benchmarks.json"
    write_section(path, "model_load", section)
    print(json.dumps(section, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
