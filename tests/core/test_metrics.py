"""RAVEL metrics on hand-made rows: exact match, macro-averaging order, Disentangle."""

import pytest

from hyperdas.core.metrics import disentangle, exact_match, scores


def test_exact_match_reads_the_first_three_answer_tokens():
    assert exact_match([5, 6, 7, 9], [5, 6, 7, 8])  # the 4th token is not read
    assert not exact_match([5, 6, 0], [5, 6, 7])
    assert exact_match([5, 1, 1], [5])
    assert not exact_match([5], [])  # an empty answer is never correct


def row(kind, queried, template, correct, instructed="Country", domain="city"):
    return {
        "attribute_type": kind,
        "attribute": queried,
        "base_template": template,
        "correct": correct,
        "target_attribute": instructed,
        "domain": domain,
    }


def test_cause_is_a_mean_over_templates_not_over_rows():
    rows = [row("causal", "Country", "t1", True)] * 9 + [row("causal", "Country", "t2", False)]
    # micro-average would be 0.9; RAVEL averages templates: (1.0 + 0.0) / 2
    assert scores(rows)["per_attribute"]["city"]["Country"]["cause"] == pytest.approx(0.5)


def test_iso_averages_templates_then_queried_attributes():
    rows = (
        [row("isolate", "Continent", "c1", True)] * 3
        + [row("isolate", "Continent", "c2", False)]
        + [row("isolate", "Language", "l1", True)] * 1
    )
    # Continent: (1 + 0) / 2 = 0.5; Language: 1.0; Iso = 0.75 (row-level would be 4/5 = 0.8;
    # templates pooled across attributes would be 2/3)
    result = scores(rows)["per_attribute"]["city"]["Country"]
    assert result["iso"] == pytest.approx(0.75)
    assert result["cause"] is None and result["disentangle"] == pytest.approx(0.75)
    assert (result["n_causal"], result["n_isolate"]) == (0, 5)


def test_disentangle_and_domain_then_overall_averages():
    rows = [
        row("causal", "Country", "t", True),
        row("isolate", "Language", "l", False),  # city/Country: 1, 0
        row("causal", "Language", "l", True, instructed="Language"),
        row("isolate", "Country", "t", True, instructed="Language"),  # city/Language: 1, 1
        row("causal", "Field", "f", False, instructed="Field", domain="nobel"),
        row("isolate", "Gender", "g", True, instructed="Field", domain="nobel"),  # nobel/Field: 0, 1
    ]
    result = scores(rows)
    assert result["per_attribute"]["city"]["Country"]["disentangle"] == pytest.approx(0.5)
    assert result["per_domain"]["city"] == pytest.approx({"cause": 1.0, "iso": 0.5, "disentangle": 0.75})
    assert result["per_domain"]["nobel"] == pytest.approx({"cause": 0.0, "iso": 1.0, "disentangle": 0.5})
    # domains weigh equally although city has twice the attributes
    assert result["overall"] == pytest.approx({"cause": 0.5, "iso": 0.75, "disentangle": 0.625})


def test_disentangle_of_missing_parts_and_bad_kind():
    assert disentangle(None, None) is None and disentangle(0.4, None) == 0.4
    with pytest.raises(ValueError, match="causal or isolate"):
        scores([row("other", "Country", "t", True)])


def test_generation_match_needs_the_whole_value_at_the_start():
    from hyperdas.target.evaluate import generation_match

    assert generation_match(" North  Zent and more", "North Zent")
    assert not generation_match(" North Tavia", "North Zent")
    assert not generation_match(" the North Zent", "North Zent")
