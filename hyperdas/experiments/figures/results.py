"""The files of one results folder, read with the checks every figure needs; the errors a figure
raises when its input is missing or unreadable."""

from __future__ import annotations

import json
import math
from pathlib import Path

from hyperdas.core.errors import HyperDASError
from hyperdas.core.results import REPO
from hyperdas.experiments.figures import style as look

METRICS = ("cause", "iso", "disentangle")
SCHEMA = 1  # results files written by this package's notebooks
REFERENCE_DIR = REPO / "results" / "reference"
PAPER = "paper, Llama3-8B"


class Missing(LookupError):
    """A figure's input is absent: the message says which."""


class SchemaError(HyperDASError, ValueError):
    """A results file from an older or foreign layout."""


def _non_numeric_scores(data, where: str = "") -> str | None:
    """The first score field (cause / iso / disentangle) anywhere in `data` that holds no number."""
    if isinstance(data, dict):
        for key, value in data.items():
            here = f"{where}.{key}" if where else str(key)
            if key in METRICS and isinstance(value, float) and not math.isfinite(value):
                return f"{here}={value!r} (a run that diverged or scored no pairs)"
            if key in METRICS and not (
                value is None or isinstance(value, (int, float)) and not isinstance(value, bool)
            ):
                if not isinstance(value, (dict, list)):
                    return f"{here}={value!r}"
            found = _non_numeric_scores(value, here)
            if found:
                return found
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found = _non_numeric_scores(value, f"{where}[{i}]")
            if found:
                return found
    return None


def faithfulness_blocks(hyper_file: dict, domain: str) -> list[dict]:
    """The faithfulness blocks (one per seed) of the HyperDAS that served `domain`: its own when the
    domains were trained apart, the all-domain one when together, else the file's only model's."""
    groups = hyper_file.get("by_group", {}).get("groups", {})
    mine = groups.get(domain) or groups.get("all")
    if mine:
        return [entry["faithfulness"] for entry in mine.values()]
    return list(hyper_file.get("faithfulness_by_seed", {}).values()) or [hyper_file["faithfulness"]]


class Results:
    """The files of one `results/<model>/` folder, with the checks the figures need."""

    REQUIRED = {
        "baselines.json": ("records",),
        "hyperdas.json": ("records",),
        "ablations.json": ("records",),
        "das_sweep.json": ("runs",),
    }

    # written into results/<model>/ by commands (make benchmarks, make das-sweep) whatever the profile:
    # a profile's own folder (results/<profile>/<model>/) reads them from there when it has none
    SHARED = ("benchmarks.json", "das_sweep.json", "patch_layers.json")

    def __init__(
        self, folder: str | Path, reference: str | Path | None = REFERENCE_DIR, shared: str | Path | None = None
    ):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"no results folder {self.folder}: run the notebooks first (make reproduce)")
        self.shared = Path(shared) if shared is not None else REPO / "results" / self.folder.name
        self.reference_dir = Path(reference) if reference is not None else None
        self.read: list[str] = []  # the files read since the last reset (make_all names them on a failure)
        self.models: dict[str, str] = {}  # the model each main results file names: one per folder

    def path(self, name: str, folder: Path | None = None) -> Path:
        """`name` in the folder; for a command's file (`SHARED`) absent there, the model's shared one."""
        here = (folder or self.folder) / name
        if folder is None and not here.is_file() and name in self.SHARED and (self.shared / name).is_file():
            return self.shared / name
        return here

    def apart(self) -> bool:
        """Whether this is a profile's own folder (results/<profile>/<model>/) beside the model's shared one."""
        return self.shared.is_dir() and self.shared.resolve() != self.folder.resolve()

    def json(self, name: str, folder: Path | None = None) -> dict:
        path = self.path(name, folder)
        if not path.is_file():
            raise Missing(f"{name} is missing in {folder or self.folder}")
        self.read.append(name)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise SchemaError(f"{path} is not valid JSON ({err}): rerun the notebook that writes it") from None
        bad = _non_numeric_scores(data)
        if bad:
            raise SchemaError(f"{path}: {bad} must be a number: rerun the notebook that writes it")
        model = data.get("model") if name in self.REQUIRED else None
        if isinstance(model, str):
            others = {n: m for n, m in self.models.items() if m != model}
            if others:
                other, theirs = next(iter(others.items()))
                raise SchemaError(
                    f"{path} holds results of {model}, {other} beside it those of {theirs}: one folder holds one "
                    f"model's results (results/<model>/); move the stray file or rerun its notebook"
                )
            self.models[name] = model
        missing = [k for k in self.REQUIRED.get(name, ()) if k not in data]
        if missing:
            raise SchemaError(
                f"{path} lacks {missing}: written by an older version of hyperdas? rerun the notebook that writes it"
            )
        return data

    def jsonl(self, name: str) -> list[dict]:
        path = self.folder / name
        if not path.is_file():
            raise Missing(f"{name} is missing in {self.folder}")
        self.read.append(name)
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise SchemaError(f"{path} line {n} is not JSON: rerun the notebook that writes it") from None
        return rows

    def records(self, name: str) -> list[dict]:
        return self.json(name)["records"]

    def ablation(self, name: str) -> list[dict]:
        found = [r for r in self.records("ablations.json") if r["ablation"] == name]
        if not found:
            raise Missing(f"ablations.json holds no '{name}' records (notebook 04's `ablations` parameter)")
        return found

    def reference(self) -> dict:
        if self.reference_dir is None or not (self.reference_dir / "llama3-8b.json").is_file():
            return {}
        return json.loads((self.reference_dir / "llama3-8b.json").read_text())

    def model_name(self) -> str:
        for name in ("hyperdas.json", "baselines.json", "model_summary.json"):
            try:
                return self.json(name)["model"]
            except (Missing, KeyError):
                continue
        return self.folder.name


def style() -> None:
    look.apply()


ORDER = list(look.COLOURS)  # the methods in the order every figure and table lists them
