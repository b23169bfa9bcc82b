"""Run the notebook chain through papermill for one or more profiles.

    python -m hyperdas.batch --profile cpu                      # what `make reproduce` runs
    python -m hyperdas.batch --profile smoke --set seed=1       # overrides, YAML-typed
    python -m hyperdas.batch --profile cpu --notebooks 00 02    # a subset, by number prefix

Each notebook receives only the parameters its `parameters` cell declares. Executed copies go
to ``<results>/<model>/runs/``. A failed notebook is reported and the chain goes on; the exit
status is non-zero when anything failed.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from hyperdas.results import model_dir_name

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
CONFIGS = REPO / "configs"


class ProfileError(ValueError):
    pass


@dataclass
class RunRecord:
    profile: str
    notebook: str
    status: str
    seconds: float
    output: Path | None
    error: str = ""


def load_profile(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIGS / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
        raise ProfileError(f"no profile {name_or_path!r} ({path}); known profiles: {known}")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ProfileError(f"{path} must hold a mapping of parameter names to values")
    return params


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ProfileError(f"override {item!r} is not of the form key=value")
        out[key] = yaml.safe_load(value)
    return out


def chain(selected: list[str] | None = None) -> list[Path]:
    books = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if selected:
        books = [b for b in books if b.name[:2] in selected or b.stem in selected]
        if not books:
            raise ProfileError(f"no notebook matches {selected} in {NOTEBOOKS}")
    return books


def run_notebook(book: Path, params: dict, out_dir: Path, profile: str) -> RunRecord:
    import papermill

    declared = papermill.inspect_notebook(str(book))
    given = {k: v for k, v in params.items() if k in declared}
    output = out_dir / book.name
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(book), str(output), parameters=given, cwd=str(book.parent), progress_bar=False
        )
        status, error = "ok", ""
    except Exception as err:  # keep going: the summary reports it
        status, error = "failed", str(err).strip().splitlines()[-1][:300] if str(err).strip() else type(err).__name__
    return RunRecord(profile, book.name, status, time.perf_counter() - start, output, error)


def run_profile(profile: str, overrides: dict, results: Path, selected: list[str] | None) -> list[RunRecord]:
    params = {**load_profile(profile), **overrides}
    params["results_root"] = str(results.resolve())
    out_dir = results / model_dir_name(str(params.get("model", "model"))) / "runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for book in chain(selected):
        print(f"[{profile}] running {book.name} ...", flush=True)
        record = run_notebook(book, params, out_dir, profile)
        print(f"[{profile}] {book.name}: {record.status} in {record.seconds:.1f} s {record.error}", flush=True)
        records.append(record)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", action="append", default=None, help="profile name in configs/ or a YAML path (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--results", default=str(REPO / "results"), help="results root folder")
    parser.add_argument("--notebooks", nargs="*", default=None, help="number prefixes or stems to run")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
        records = []
        for profile in args.profile or ["cpu"]:
            records += run_profile(profile, overrides, Path(args.results), args.notebooks)
    except ProfileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\nsummary")
    for r in records:
        print(f"  {r.profile:<16} {r.notebook:<32} {r.status:<7} {r.seconds:8.1f} s  {r.error}")
    return 0 if all(r.status == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
