"""Profiles (configs/*.yaml) and the notebooks' parameters: loading a profile, typed overrides, the
notebook chain, and the checks that refuse a bad name, kind or value before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from hyperdas.core.errors import HyperDASError
from hyperdas.core.results import CONFIGS, REPO, model_dir_name, read_json

NOTEBOOKS = REPO / "notebooks"


class ProfileError(HyperDASError, ValueError):
    pass


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(f"line {key_node.start_mark.line + 1} gives {key!r} a second time")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_profile(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and len(path.parts) == 1:  # a name (which may hold dots: qwen2.5)
        path = CONFIGS / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
        raise ProfileError(f"no profile {name_or_path!r} ({path}); known profiles: {known}")
    try:
        params = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError as err:
        raise ProfileError(f"{path} is not UTF-8 text (byte {err.start}): save it as UTF-8") from None
    except _DuplicateKey as err:
        raise ProfileError(f"{path} {err}: keep one of them") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ProfileError(f"{path}{where} is not valid YAML: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(params, dict):
        raise ProfileError(f"{path} must hold a mapping of parameter names to values")
    return params


def results_root(profile: str, given: str | Path | None = None) -> Path:
    """Where a profile's results go: the folder given on the command line; else the profile's own
    `results_root` (relative to the repository), so that profiles of one model never overwrite each
    other's files (`cpu-seeds`: results/cpu-seeds/); else results/ (the cpu profile and the
    notebooks run by hand)."""
    if given is not None:
        return Path(given)
    own = load_profile(profile).get("results_root")
    return REPO / own if own else REPO / "results"


def _typed(text: str):
    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string; a number was meant
        try:
            return float(value)
        except ValueError:
            pass
    return value


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ProfileError(f"override {item!r} is not of the form key=value")
        out[key] = _typed(value)
    return out


def chain(selected: list[str] | None = None) -> list[Path]:
    books = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if selected:
        books = [b for b in books if b.name[:2] in selected or b.stem in selected]
        if not books:
            raise ProfileError(f"no notebook matches {selected} in {NOTEBOOKS}")
    return books


def notebook_defaults(book: str | Path, skip: tuple[str, ...] = ("results_root", "pairs_in")) -> dict:
    """A notebook's `parameters` cell as values (literal assignments), e.g. to check them against the
    configs' defaults; `skip`: paths relative to notebooks/. Read from the notebook's JSON, so no
    notebook package is needed (papermill is an extra)."""
    import ast

    book = Path(book) if Path(book).suffix else NOTEBOOKS / f"{book}.ipynb"
    if not book.is_file():
        raise ProfileError(f"no notebook {book}: the CLI takes its defaults from the repository's notebooks/")
    cells = [c for c in json.loads(book.read_text())["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ProfileError(f"{book.name} has {len(cells)} cells tagged 'parameters'; expected exactly one")
    values = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if name in skip:
            continue
        try:
            values[name] = ast.literal_eval(node.value)
        except ValueError as err:
            raise ProfileError(f"{book.name}: parameter {name} = {ast.unparse(node.value)} is not a literal") from err
    return values


def declared_parameters(books: list[Path]) -> set[str]:
    """Every name the notebooks' `parameters` cells declare (read from their JSON: no papermill needed)."""
    return {name for book in books for name in notebook_defaults(book, skip=())}


def check_names(params: dict, books: list[Path], what: str = "parameter") -> None:
    """papermill only warns about a parameter a notebook lacks, and the CLI would ignore it; a typo would
    then run the defaults. Refuse it by name, with the nearest known name."""
    import difflib

    known = declared_parameters(books)
    unknown = sorted(set(params) - known)
    if unknown:
        hints = [
            f"{name} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(name, known, 1)) else name
            for name in unknown
        ]
        raise ProfileError(
            f"unknown {what}(s) {', '.join(hints)}: no notebook of {[b.name for b in books]} declares it"
        )


# notebook parameters outside the configs whose values have a floor (the configs check their own)
FLOORS = {
    "n_conflict": 1,
    "n_saved_selections": 0,
    "n_householder": 0,
    "ablation_steps": 0,
    "ablation_test_pairs": 1,
    "query_blind_entities": 0,
    "chance_entities": 0,
    "query_blind_pairs": 0,
    "templates_per_attribute": 1,
    "selection_entities": 1,
    "max_entities": 1,
    "batch_size": 1,
    "max_new_tokens": 1,
}
_KINDS = {bool: (bool,), int: (int,), float: (int, float), str: (str,), list: (list, tuple), dict: (dict,)}


def _kind_problem(value, default) -> str | None:
    """Why `value` cannot stand where a notebook's default is `default` (None: it can)."""
    if value is None or default is None:  # None: the notebook's own "not set"; a None default takes anything
        return None
    allowed = _KINDS.get(type(default), (type(default),))
    if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, allowed):
        return f"must be {type(default).__name__} like the notebook's default {default!r}, not {value!r}"
    return None


# lists of layers, ranks, steps, seeds
INT_LISTS = ("sweep_layers", "hyper_sweep_layers", "sweep_ks", "ablation_blocks", "snapshot_steps", "seeds")


def check_values(params: dict, books: list[Path]) -> None:
    """Refuse a value whose kind differs from every notebook default of that name (e.g. a word where a
    list of layers is meant), or below its floor (`FLOORS`), before anything runs."""
    defaults: dict[str, list] = {}
    for book in books:
        for name, value in notebook_defaults(book, skip=()).items():
            defaults.setdefault(name, []).append(value)
    for name, value in params.items():
        problems = [_kind_problem(value, d) for d in defaults.get(name, [None])]
        if all(problems):
            raise ProfileError(f"parameter {name}={value!r}: {problems[0]}")
        if name in INT_LISTS and isinstance(value, list | tuple) and not all(type(v) is int for v in value):
            raise ProfileError(f"parameter {name}={value!r}: must be a list of integers")
        floor = FLOORS.get(name)
        if floor is not None and isinstance(value, int) and not isinstance(value, bool) and value < floor:
            raise ProfileError(f"parameter {name}={value!r}: must be >= {floor}")


def check_overrides(overrides: dict, books: list[Path]) -> None:
    if "results_root" in overrides:  # the runner sets it for every notebook from --results
        raise ProfileError("results_root is set by the runner: use --results FOLDER")
    check_names(overrides, books, what="override")


def preflight(params: dict) -> None:
    """A profile's names, types and ranges, checked the way the notebooks and the CLI check them
    (`hyperdas.experiments.params`), before the first notebook starts."""
    from hyperdas.experiments import params as P
    from hyperdas.target.models import check_device

    check_names(params, chain(), what="profile parameter")
    check_device(P.model_config(params).device)
    P.hyperdas_configs(params)
    P.das_config(params)
    P.seed_list(params)
    check_values(params, chain())  # the parameters outside the configs (which name their own fields)


def check_built_pairs(params: dict, results: Path, books: list[Path]) -> None:
    """A chain that reads notebook 01's pairs without building them (02-04 alone): the profile's
    `attributes` must be ones those pairs were built for, else it would train other domains than
    the profile names, silently."""
    names = [b.name[:3] for b in books]
    if "attributes" not in params or params.get("pairs_in") or "01_" in names:
        return
    summary = results / model_dir_name(str(params.get("model", "model"))) / "data_summary.json"
    if not {"02_", "03_", "04_"} & set(names) or not summary.is_file():
        return  # no pairs read, or none built: the notebooks name missing pairs themselves
    built = read_json(summary).get("config", {}).get("attributes") or {}
    missing = [f"{d}/{a}" for d, attrs in params["attributes"].items() for a in attrs if a not in built.get(d, ())]
    if missing:
        raise ProfileError(
            f"the profile names {', '.join(missing)}, which the pairs in {summary.parent} were not built for "
            f"(notebook 01 built {', '.join(sorted(built)) or 'none'}): run notebook 01 with this profile first"
        )
