"""Run the notebook chain through papermill for one or more profiles.

    python -m hyperdas.batch --profile cpu                      # what `make reproduce` runs
    python -m hyperdas.batch --profile smoke --set seed=1       # overrides, YAML-typed
    python -m hyperdas.batch --profile cpu --notebooks 00 02    # a subset, by number prefix

Each notebook receives only the parameters its `parameters` cell declares; an override that no
notebook of the chain declares is refused. Executed copies go to ``<results>/<model>/runs/``;
``<results>/<model>/reproduce.json`` records each notebook's status and wall time with the
environment. A failed notebook is reported and the chain goes on; the summary at the end gives
each run's status, wall time and headline numbers; the exit status is non-zero when anything failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hyperdas.core.errors import HyperDASError
from hyperdas.core.results import model_dir_name, read_json, write_json
from hyperdas.profiles import (
    chain,
    check_built_pairs,
    check_overrides,
    load_profile,
    parse_overrides,
    preflight,
    results_root,
)


@dataclass
class RunRecord:
    profile: str
    notebook: str
    status: str
    seconds: float
    output: Path | None
    error: str = ""


def run_notebook(book: Path, params: dict, out_dir: Path, profile: str) -> RunRecord:
    import papermill

    declared = papermill.inspect_notebook(str(book))
    given = {k: v for k, v in params.items() if k in declared}
    output = out_dir / book.name
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(book), str(output), parameters=given, cwd=str(book.parent), progress_bar=False)
        status, error = "ok", ""
    except Exception as err:  # keep going: the summary reports it
        status, error = "failed", str(err).strip().splitlines()[-1][:300] if str(err).strip() else type(err).__name__
    seconds = time.perf_counter() - start
    if output.is_file():
        strip_volatile(output)
    return RunRecord(profile, book.name, status, seconds, output, error)


# what changes from run to run without changing what a notebook shows: papermill's timings, kernel state
VOLATILE = ("metadata.papermill", "cell.metadata.papermill", "cell.metadata.execution", "metadata.widgets")


def strip_volatile(path: Path) -> None:
    """An executed notebook kept with its outputs, less the metadata of `VOLATILE` (nbstripout), so
    that the executed copies committed beside the results differ only where their outputs do."""
    import nbformat
    from nbstripout import strip_output

    notebook = nbformat.read(path, as_version=4)
    strip_output(notebook, keep_output=True, keep_count=True, keep_id=True, extra_keys=list(VOLATILE))
    nbformat.write(notebook, path)


def headline(model_dir: Path) -> str:
    """Mean test Disentangle per method at HyperDAS's layer, from the results files (if any)."""
    parts = []
    for name, key in (("hyperdas.json", "mode"), ("baselines.json", "method")):
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            records = read_json(path).get("records", [])
            layer = records[0]["layer"] if records else None
        except (HyperDASError, KeyError, TypeError, AttributeError) as err:  # a damaged file: named, not raised
            why = " ".join(str(err).split()) or type(err).__name__
            parts.append(
                f"{name} unreadable ({why if isinstance(err, HyperDASError) else type(err).__name__ + ': ' + why})"
            )
            continue
        groups: dict[str, list[float]] = {}
        for r in records:
            if r.get("layer") == layer and r.get("disentangle") is not None:
                groups.setdefault(f"{'hyperdas ' if key == 'mode' else ''}{r[key]}", []).append(r["disentangle"])
        parts += [f"{k} {sum(v) / len(v):.3f}" for k, v in groups.items()]
    return ("Disentangle: " + ", ".join(parts)) if parts else ""


# glibc: large blocks from the heap, freed memory kept for reuse, instead of a fresh mmap (page faults
# on every touch) per block. HyperDAS's copied embedding gets a new 113 MB dense gradient each step:
# a step went from 1.64 to 1.46 s (SmolLM2, batch 16, 2-core CPU; DAS steps unchanged).
MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def tune_malloc(params: dict) -> dict:
    """Set `MALLOC` for the notebook kernels of a CPU run on Linux (values already set are kept);
    returns what was set."""
    if not sys.platform.startswith("linux") or str(params.get("device", "cpu")) != "cpu":
        return {}
    chosen = {k: v for k, v in MALLOC.items() if k not in os.environ}
    os.environ.update(chosen)
    return chosen


DERIVED = ("05_figures.ipynb",)  # reads results files, writes figures and tables only
RUN_LOG = "run_log.jsonl"
# everything a chain run writes, relative to its model folder (results[/<profile>]/<model>/): what
# `git status` may show after `make reproduce` (checkpoints/ and datasets/ are git-ignored); `make
# figures` writes figures/ and runs/05_figures.ipynb of each figure profile, and the report README.md
# and docs/results.md
CHAIN_WRITES = (
    "model_summary.json",
    "data_summary.json",
    "baselines.json",
    "hyperdas.json",
    "hyperdas_layers.json",
    "ablations.json",
    "train_log.jsonl",
    "reproduce.json",
    RUN_LOG,
    "selections/*",
    "figures/*",
    "runs/*.ipynb",
    "checkpoints/*",
    "datasets/*",
    "filter_verdicts/*",
)


def written_by_chain(relative: str | Path) -> bool:
    """Whether a path relative to a model folder is one the chain is meant to write (a pattern's `*`
    spans folders, as `fnmatch`'s does)."""
    return any(fnmatch.fnmatch(Path(relative).as_posix(), pattern) for pattern in CHAIN_WRITES)


def append_run_log(model_dir: Path, profile: str, overrides: dict, records: list) -> None:
    """One line per run of the batch runner (`run_log.jsonl`, never rewritten): the profile, the
    overrides, each notebook's status and seconds, the commit and the machine."""
    from hyperdas.core.files import append_line
    from hyperdas.core.results import _jsonable, environment

    entry = {
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "profile": profile,
        "overrides": overrides,
        "notebooks": {
            r.notebook: {"status": r.status, "seconds": round(r.seconds, 1), "error": r.error} for r in records
        },
        "status": "ok" if all(r.status == "ok" for r in records) else "failed",
        "environment": environment(),
    }
    append_line(model_dir / RUN_LOG, json.dumps(entry, default=_jsonable))


def run_profile(profile: str, overrides: dict, results: Path, selected: list[str] | None) -> list[RunRecord]:
    params = {**load_profile(profile), **overrides}
    tune_malloc(params)  # read by each kernel's C library when it starts
    params["results_root"] = str(results.resolve())
    model_dir = results / model_dir_name(str(params.get("model", "model")))
    out_dir = model_dir / "runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for book in chain(selected):
        print(f"[{profile}] running {book.name} ...", flush=True)
        record = run_notebook(book, params, out_dir, profile)
        print(f"[{profile}] {book.name}: {record.status} in {record.seconds:.1f} s {record.error}", flush=True)
        records.append(record)
    if all(r.notebook in DERIVED for r in records):  # figures and tables only: no run record changes
        return records
    append_run_log(model_dir, profile, overrides, records)
    log = model_dir / "reproduce.json"  # notebooks run alone later update their entry
    notebooks = read_json(log).get("notebooks", {}) if log.is_file() else {}
    notebooks.update(
        {r.notebook: {"status": r.status, "seconds": round(r.seconds, 1), "error": r.error} for r in records}
    )
    write_json(
        log,
        {
            "profile": profile,
            "overrides": overrides,
            "notebooks": notebooks,
            "total_seconds": round(sum(v["seconds"] for v in notebooks.values()), 1),
        },
    )
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--profile", action="append", default=None, help="profile name in configs/ or a YAML path (repeatable)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--results", default=None, help="results root folder (default: the profile's results_root, else results/)"
    )
    parser.add_argument("--notebooks", nargs="*", default=None, help="number prefixes or stems to run")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, not one line")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
        check_overrides(overrides, chain(args.notebooks))
        for profile in args.profile or ["cpu"]:  # every profile checked before anything runs
            preflight({**load_profile(profile), **overrides})
            check_built_pairs(
                {**load_profile(profile), **overrides}, results_root(profile, args.results), chain(args.notebooks)
            )
        records = []
        for profile in args.profile or ["cpu"]:
            records += run_profile(profile, overrides, results_root(profile, args.results), args.notebooks)
    except HyperDASError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\nsummary")
    for r in records:
        print(f"  {r.profile:<16} {r.notebook:<32} {r.status:<7} {r.seconds:8.1f} s  {r.error}")
    for profile in args.profile or ["cpu"]:
        params = {**load_profile(profile), **overrides}
        line = headline(results_root(profile, args.results) / model_dir_name(str(params.get("model", "model"))))
        if line:
            print(f"  {profile}: {line}")
    print(f"  total {sum(r.seconds for r in records):.1f} s")
    return 0 if all(r.status == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
