"""The `jaxlab` command line: train, eval, show.

Bad input (a missing file, a bad config, an unwritable output directory) is
reported as one line on stderr with exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxlab.errors import JaxlabError

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxlab", description="Train and evaluate JAX models from configs."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (or resume) a run from a config")
    train.add_argument("config", help="a YAML or JSON experiment config")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set optimizer.learning_rate=3e-4",
    )
    train.add_argument(
        "--output-dir",
        help="run directory (default: runs/<name>); resumed if it exists",
    )
    train.add_argument(
        "--quiet", action="store_true", help="no progress bar; only the final result"
    )

    ev = sub.add_parser("eval", help="evaluate the newest checkpoint of a run")
    ev.add_argument("run_dir")
    ev.add_argument("--split", default="test", choices=["train", "validation", "test"])
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    show = sub.add_parser("show", help="print a run's config and latest metrics")
    show.add_argument("run_dir")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _train(args: argparse.Namespace) -> int:
    from jaxlab import config as config_lib
    from jaxlab import experiment

    config = config_lib.load_config(args.config, args.overrides)
    config = experiment.replace_data_path(config, Path(args.config).resolve().parent)
    run_dir = Path(args.output_dir or Path("runs") / config.name)
    experiment.train(config, run_dir, quiet=args.quiet)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from jaxlab import experiment

    results = experiment.evaluate_run(args.run_dir, split=args.split)
    if args.json:
        print(json.dumps(results))
    else:
        print(experiment.results_table(results))
    return 0


def _show(args: argparse.Namespace) -> int:
    from jaxlab import config as config_lib
    from jaxlab import logger, run_dir

    config = config_lib.config_to_dict(run_dir.load_run_config(args.run_dir))
    latest: dict[str, dict] = {}
    for row in logger.read_metrics(args.run_dir):
        for key, value in row.items():
            if "/" in key:
                prefix = key.split("/", 1)[0]
                latest.setdefault(prefix, {"step": row["step"]})
                if latest[prefix]["step"] != row["step"]:
                    latest[prefix] = {"step": row["step"]}
                latest[prefix][key] = value
    if args.json:
        print(json.dumps({"config": config, "latest": latest}))
        return 0
    print(config_lib.dump_yaml(config).rstrip())
    for prefix, row in latest.items():
        print(f"\n# latest {prefix} (step {row['step']})")
        for key, value in row.items():
            if key != "step":
                print(f"{key}: {value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"train": _train, "eval": _eval, "show": _show}
    try:
        return commands[args.command](args)
    except JaxlabError as e:
        if args.debug:
            raise
        print(f"jaxlab: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jaxlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
