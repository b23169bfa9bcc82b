"""README.md's generated sections and docs/results.md (`hyperdas.experiments.report`) from the
results files:

python -m hyperdas.report           # rewrite them
python -m hyperdas.report --check   # exit 1 and name each section that differs from its render
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from hyperdas.core.results import REPO
    from hyperdas.experiments import results_doc

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; fail when a section is stale")
    parser.add_argument("--results", default=str(REPO / "results"), help="results root (default: the repository's)")
    args = parser.parse_args(argv)
    if args.check:
        stale = results_doc.stale_documents(Path(args.results))
        for name in stale:
            print(f"{name} differs from the results files: run python -m hyperdas.report")
        return 1 if stale else 0
    for path in results_doc.write(args.results):
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
