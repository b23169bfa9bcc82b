"""Every relative link in README.md and docs/ resolves: the file exists, and a #anchor names one of
its headings (GitHub's rule: lower case, punctuation dropped, spaces to hyphens)."""

import re
from pathlib import Path

import pytest

from hyperdas.core.results import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    found = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return found


def links():
    for doc in DOCUMENTS:
        for target in LINK.findall(doc.read_text()):
            if not re.match(r"[a-z]+:", target):
                yield pytest.param(doc, target, id=f"{doc.name}:{target}")


@pytest.mark.parametrize("doc, target", list(links()))
def test_relative_links_resolve(doc, target):
    path, _, anchor = target.partition("#")
    resolved = (doc.parent / path).resolve() if path else doc
    assert resolved.exists(), f"{doc.name} links to {target}: no {resolved}"
    if anchor:
        assert anchor in anchors(resolved), f"{doc.name} links to {target}: no heading #{anchor} in {resolved.name}"
