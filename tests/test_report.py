"""The results sections of README.md are renders of the committed results files: a number edited
by hand, or a results file changed without regenerating them, fails here."""

import pytest

from hyperdas.core.results import REPO
from hyperdas.experiments import report
from hyperdas.report import main


def test_readme_sections_match_the_committed_results(capsys):
    assert main(["--check"]) == 0, capsys.readouterr().out


def test_a_number_edited_by_hand_is_caught(tmp_path):
    rendered = report.sections(REPO / "results")
    text = (REPO / "README.md").read_text()
    start = text.index("<!-- report:headline -->")
    number = text.index("0.", start)
    edited = text[:number] + "0.9" + text[number + 3 :]
    copy = tmp_path / "README.md"
    copy.write_text(edited)
    assert report.stale(copy, rendered) == ["headline"]
    copy.write_text(report.fill(edited, rendered))
    assert report.stale(copy, rendered) == [] and copy.read_text() == text


def test_an_unknown_section_is_refused():
    with pytest.raises(KeyError, match="no generated section 'nothing'"):
        report.fill("<!-- report:nothing -->\nx\n<!-- /report:nothing -->", {"headline": ""})


def test_comparisons_are_stated_only_with_their_intervals():
    def compared(steps, low, high, follows_low=0.01):
        return {
            "hyperdas": {"mode": "one_to_one", "steps": steps},
            "baseline": {"method": "mdas", "early_stopped": True},
            "disentangle_difference": {"estimate": (low + high) / 2, "low": low, "high": high, "seeds": [1, 1]},
            "follows_activations_difference": {"low": follows_low},
        }

    said = report.verdict([compared(600, 0.01, 0.09), compared(1200, -0.02, 0.05), compared(4000, -0.1, -0.03)])
    assert said.startswith("One-to-one HyperDAS beats early-stopped MDAS with faithful edits at step 600 (")
    assert "step 1,200 +0.015 [-0.020, 0.050], not distinguishable" in said
    assert "step 4,000 -0.065 [-0.100, -0.030], below" in said
    assert said.endswith("per-pair outcomes: HyperDAS 1 seed(s), MDAS 1.)")
    unfaithful = report.verdict([compared(600, 0.01, 0.09, follows_low=-0.2)])
    assert unfaithful.startswith("At no rung") and "above, but following the activations less often" in unfaithful


def test_an_edit_to_the_generated_results_page_is_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text((REPO / "README.md").read_text())
    page = (REPO / "docs" / "results.md").read_text()
    (tmp_path / "docs" / "results.md").write_text(page.replace("| 0.", "| 0.9", 1))
    from hyperdas.experiments import results_doc

    assert results_doc.stale_documents(REPO / "results", base=tmp_path) == ["docs/results.md"]
    assert results_doc.write(REPO / "results", base=tmp_path) == [tmp_path / "docs" / "results.md"]
    assert results_doc.stale_documents(REPO / "results", base=tmp_path) == []
