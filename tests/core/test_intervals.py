import random

import pytest

from hyperdas.core.intervals import conflict_string, hit_string, interval, row_keys
from hyperdas.core.metrics import scores


def _rows(n_seed: int, accuracy: float = 0.6, n: int = 240) -> list[dict]:
    """Rows over two domains, unequal cells and a missing kind, with random hits."""
    rng, rows = random.Random(n_seed), []
    for i in range(n):
        domain = "city" if i % 3 else "verb"
        target = ["A", "B"][i % 2] if domain == "city" else "Past"
        kind = "isolate" if (i % 5 == 0 and domain == "city") else "causal"
        rows.append(
            {
                "domain": domain,
                "target_attribute": target,
                "attribute": target if kind == "causal" else "Q" + str(i % 4),
                "base_template": f"t{i % 7}",
                "attribute_type": kind,
                "correct": rng.random() < accuracy,
            }
        )
    return rows


def test_the_interval_estimate_is_the_metric_of_the_results_table():
    rows = _rows(0)
    found = interval([hit_string(rows)], keys=row_keys(rows), resamples=50)
    assert found["estimate"] == pytest.approx(scores(rows)["overall"]["disentangle"])
    assert found["low"] <= found["estimate"] <= found["high"]


def test_a_difference_is_distinguishable_only_when_its_interval_excludes_zero():
    strong, weak, weak_again = _rows(1, 0.9), _rows(2, 0.3), _rows(3, 0.3)
    keys = row_keys(strong)
    clear = interval([hit_string(strong)], [hit_string(weak)], keys=keys, resamples=300)
    assert clear["distinguishable"] and clear["low"] > 0
    same = interval([hit_string(weak)], [hit_string(weak_again)], keys=keys, resamples=300)
    assert same["low"] < same["estimate"] < same["high"]
    assert same["distinguishable"] == (same["low"] > 0 or same["high"] < 0)


def test_seeds_widen_the_interval_and_shares_read_their_symbol():
    outcomes = ["activations"] * 60 + ["instruction"] * 30 + ["neither"] * 10
    share = interval([conflict_string(outcomes)], symbol="a", resamples=400)
    assert share["estimate"] == pytest.approx(0.6)
    assert 0.45 < share["low"] < 0.6 < share["high"] < 0.75
    one = interval([hit_string(_rows(4))], keys=row_keys(_rows(4)), resamples=400)
    seeds = interval([hit_string(_rows(4)), hit_string(_rows(5, 0.9))], keys=row_keys(_rows(4)), resamples=400)
    assert seeds["high"] - seeds["low"] > one["high"] - one["low"]


def test_outcomes_over_other_rows_are_refused():
    with pytest.raises(ValueError, match="same rows"):
        interval(["0101", "010"])


def test_outcomes_of_models_per_attribute_are_placed_by_row():
    from hyperdas.core.intervals import placed

    assert placed([([0, 2], "10"), ([1, 3], "a1")], 4) == "1a01"
    with pytest.raises(ValueError, match="row 2 has two outcomes"):
        placed([([0, 2], "10"), ([2], "1")], 3)
    with pytest.raises(ValueError, match="1 of 3 rows have no outcome"):
        placed([([0, 2], "10")], 3)


def test_row_keys_are_kept_compactly_and_read_back():
    from hyperdas.core.intervals import KEYS, columns

    rows = _rows(6)
    keys = row_keys(rows)
    assert all(len(keys[k]["codes"]) == len(rows) for k in KEYS)
    assert columns(keys) == {k: [r[k] for r in rows] for k in KEYS}
