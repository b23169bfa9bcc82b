"""Results files record paths that read the same on another machine."""

import pytest

from hyperdas.core.results import REPO, portable_path, resolve_path


def test_paths_under_the_results_root_the_cache_and_the_repository(tmp_path, fresh_cache):
    root = tmp_path / "results"
    pairs = root / "smollm2-135m" / "datasets" / "ravel_pairs"
    assert portable_path(pairs, root) == "<results>/smollm2-135m/datasets/ravel_pairs"
    assert portable_path(fresh_cache / "models" / "x", root) == "<cache>/models/x"
    assert portable_path(REPO / "results" / "reference", None) == "results/reference"
    for path in (pairs, fresh_cache / "models" / "x", REPO / "results" / "reference"):
        assert resolve_path(portable_path(path, root), root) == path


def test_a_hub_id_and_a_foreign_path_stay_as_given(tmp_path):
    assert portable_path("meta-llama/Meta-Llama-3-8B", tmp_path / "r") == "meta-llama/Meta-Llama-3-8B"
    assert portable_path("/nonexistent/folder", tmp_path / "r") == "/nonexistent/folder"


def test_a_results_relative_path_needs_its_root():
    with pytest.raises(ValueError, match="pass results_root"):
        resolve_path("<results>/m/x")
