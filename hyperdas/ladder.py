"""The budget ladder from the command line (`hyperdas.experiments.ladder` holds what it runs):

    python -m hyperdas.ladder --profile cpu --steps 4000 --rungs 300 600 1200 2400 4000
    python -m hyperdas.ladder --profile cpu --steps 600 --rungs 300 600 --set seed=1
    python -m hyperdas.ladder --profile cpu --baselines --seeds 0 1 2 [--examples 19200]
    python -m hyperdas.ladder --profile cpu --steps 300 --rungs 300 --pilot [--set tie_attention=true]

Overrides as for the batch runner; `--steps` and `--rungs` set `hyper_steps` and
`snapshot_steps`, and an override the ladder would ignore is refused. Writes
``<results>/<model>/ladder/hyperdas_steps<steps>_seed<seed>.json`` and ``<results>/ladder.json``;
overrides other than `seed` name the file (`_<key>-<value>`), so a variant never overwrites the
plain run. `--pilot` writes to ``<model>/pilots/`` and also scores every val pair: one option per
run, the plain run (no `--set`) beside them, compared on val in ``ladder.json``'s `pilots`.
`--baselines` trains DAS and MDAS beside it instead (`hyperdas.experiments.ladder_baselines`).
"""

from __future__ import annotations

import argparse
import os
import sys

from hyperdas.experiments.ladder import run_ladder


def main(argv: list[str] | None = None) -> int:
    from hyperdas.batch import tune_malloc
    from hyperdas.cli import check_used, one_line
    from hyperdas.core.config import ConfigError
    from hyperdas.core.errors import HyperDASError
    from hyperdas.profiles import chain, check_names, load_profile, parse_overrides, results_root

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", help="profile name in configs/ or a YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, help="the longest budget (training steps)")
    parser.add_argument("--rungs", type=int, nargs="+", help="steps scored on test")
    parser.add_argument(
        "--score-only", action="store_true", help="train no further: score the rungs whose weights exist so far"
    )
    parser.add_argument(
        "--pilot", action="store_true", help="a pilot of the --set options (or, with none, the plain run beside them)"
    )
    parser.add_argument("--val", action="store_true", help="also score every val pair (kept rungs too)")
    parser.add_argument("--baselines", action="store_true", help="train DAS and MDAS beside the ladder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="--baselines: their seeds")
    parser.add_argument("--examples", type=int, help="--baselines: a budget without early stopping")
    parser.add_argument("--results", default=None, help="results root (default: the profile's or ./results)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
        params = {**load_profile(args.profile), **overrides}
        check_names(params, chain())
        if args.baselines == (args.steps is not None or args.rungs is not None):
            raise ConfigError("give --steps and --rungs (the HyperDAS ladder), or --baselines, not both")
        if not args.baselines and (args.steps is None or args.rungs is None):
            raise ConfigError("the ladder needs --steps and --rungs")
        if args.pilot and args.baselines:
            raise ConfigError("--pilot runs HyperDAS with the --set options: leave out --baselines")
        check_used(overrides, "mdas" if args.baselines else "hyperdas", "the ladder")
        if "results_root" in overrides:
            raise ConfigError("results_root is set by --results FOLDER (default: the profile's, else results/)")
        if {"hyper_steps", "snapshot_steps"} & set(overrides):
            raise ConfigError("the ladder sets hyper_steps and snapshot_steps itself: use --steps and --rungs")
        # the batch runner's malloc settings (`hyperdas.batch.MALLOC`): glibc reads them at start, so a
        # command-line run starts once more with them set
        if argv is None and tune_malloc(params):
            os.execv(sys.executable, [sys.executable, "-m", "hyperdas.ladder", *sys.argv[1:]])
        root = results_root(args.profile, args.results)
        if args.baselines:
            from hyperdas.experiments.ladder_baselines import run_ladder_baselines
            from hyperdas.experiments.ladder_summary import write_summary

            print("wrote", *run_ladder_baselines(params, args.seeds, root, args.examples, args.progress))
            print("wrote", write_summary(root))
        else:
            print(
                "wrote",
                run_ladder(
                    params,
                    args.steps,
                    args.rungs,
                    root,
                    args.progress,
                    args.score_only,
                    overrides,
                    args.pilot,
                    args.val,
                ),
            )
    except (HyperDASError, OSError, MemoryError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
