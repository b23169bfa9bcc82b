from hyperdas.das.sweep import best_per_method, conflict_by_layer


def _run(kind, layer, k, dis):
    return {"kind": kind, "config": {"layer": layer, "k": k}, "val": {"disentangle": dis}}


def test_best_cell_per_method_averages_attributes_and_skips_full_patch():
    runs = [
        _run("full_patch", 9, 128, 0.99),
        _run("span_patch", 9, 128, 0.98),
        _run("das", 9, 32, 0.6),  # attribute 1
        _run("das", 9, 32, 0.2),  # attribute 2: mean 0.4
        _run("das", 15, 128, 0.5),
        _run("das", 15, 128, 0.5),
        _run("mdas", 9, 32, 0.7),
        _run("mdas", 15, 32, 0.3),
    ]
    best = best_per_method(runs)
    assert best == {
        "das": {"layer": 15, "k": 128, "val_disentangle": 0.5},
        "mdas": {"layer": 9, "k": 32, "val_disentangle": 0.7},
    }


def test_conflict_shares_are_averaged_per_method_and_layer():
    def run(kind, layer, share):
        return {**_run(kind, layer, 128, 0.5), "conflict": {"follows_activations": share}}

    runs = [
        run("full_patch", 9, 0.8),
        run("das", 9, 0.6),
        run("das", 9, 0.4),  # another attribute or k: averaged with the first
        run("das", 15, 0.7),
        {**_run("mdas", 15, 128, 0.5), "conflict": None},  # not scored: left out
    ]
    assert conflict_by_layer(runs) == {"das": {"15": 0.7, "9": 0.5}, "full_patch": {"9": 0.8}}
