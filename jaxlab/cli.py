"""The `jaxlab` command line: train, eval, show.

Bad input (a missing file, a bad config, an unwritable output directory) is
reported as one line on stderr with exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
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
    train.add_argument(
        "--seeds",
        type=_positive_int,
        metavar="N",
        help="train N seeds (seed, seed+1, ...); kind: rl on the jax backend runs "
        "them as one vmapped program (see docs/population.md)",
    )
    train.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="train one run per value (repeatable: the Cartesian product, times "
        "--seeds); float hyperparameters are vmapped, others run sequentially",
    )

    ev = sub.add_parser("eval", help="evaluate the newest checkpoint of a run")
    ev.add_argument("run_dir")
    ev.add_argument("--split", default="test", choices=["train", "validation", "test"])
    ev.add_argument("--json", action="store_true", help="print one JSON object")

    show = sub.add_parser("show", help="print a run's config and latest metrics")
    show.add_argument("run_dir")
    show.add_argument("--json", action="store_true", help="print one JSON object")

    launch = sub.add_parser(
        "launch",
        help="run a command as the processes of one multi-process run",
        description="Starts the processes of a multi-process (multi-host) run: "
        "jaxlab launch --num-processes 2 --devices-per-process 4 -- train CONFIG",
    )
    launch.add_argument("--num-processes", type=int, required=True)
    launch.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="address of process 0 (default: a free port on localhost)",
    )
    launch.add_argument(
        "--process-id",
        type=int,
        help="start only this process (one machine of a multi-machine run)",
    )
    launch.add_argument(
        "--devices-per-process",
        type=int,
        help="CPU devices per process (sets JAX_NUM_CPU_DEVICES)",
    )
    launch.add_argument(
        "launched", nargs=argparse.REMAINDER, help="-- then the jaxlab command"
    )
    return parser


def _train(args: argparse.Namespace) -> int:
    from jaxlab import config as config_lib
    from jaxlab import experiment, parallel

    # Joins a multi-process run when launched as one (else a no-op).
    parallel.initialize()
    enable_compilation_cache()
    config = config_lib.load_config(args.config, args.overrides)
    config = experiment.replace_data_path(config, Path(args.config).resolve().parent)
    run_dir = Path(args.output_dir or Path("runs") / config.name)
    from jaxlab import population

    if args.seeds is not None or args.sweep:
        sweep = population.parse_sweep(args.sweep)
        population.train(
            config, run_dir, seeds=args.seeds or 1, sweep=sweep, quiet=args.quiet
        )
        return 0
    population.check_single_run(run_dir)
    experiment.train(config, run_dir, quiet=args.quiet)
    return 0


CACHE_ENV = "JAXLAB_COMPILATION_CACHE"


def enable_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache for `jaxlab train`.

    A second run of the same config (a resume, another seed, the next sweep)
    loads its compiled programs from disk instead of compiling them again.
    The cache lives in ``$JAXLAB_COMPILATION_CACHE`` (default
    ``~/.cache/jaxlab/xla``); ``JAXLAB_COMPILATION_CACHE=0`` turns it off. It is
    keyed by the program, the JAX version and the compiler flags, so a stale
    entry is never used. Returns the directory, or None when off.
    """
    import jax

    setting = os.environ.get(CACHE_ENV, "")
    if setting == "0":
        return None
    path = setting or str(Path.home() / ".cache" / "jaxlab" / "xla")
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", path)
    return jax.config.jax_compilation_cache_dir


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


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


def _launch(args: argparse.Namespace) -> int:
    from jaxlab import launch

    command = list(args.launched)
    if command[:1] == ["--"]:
        command = command[1:]
    return launch.launch(
        command,
        num_processes=args.num_processes,
        coordinator=args.coordinator,
        process_id=args.process_id,
        devices_per_process=args.devices_per_process,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"train": _train, "eval": _eval, "show": _show, "launch": _launch}
    try:
        return commands[args.command](args)
    except JaxlabError as e:
        if args.debug:
            _exit_if_distributed(1, traceback=True)
            raise
        print(f"jaxlab: error: {e}", file=sys.stderr)
        _exit_if_distributed(EXIT_USAGE)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("jaxlab: interrupted", file=sys.stderr)
        _exit_if_distributed(130)
        return 130
    except BaseException:
        _exit_if_distributed(1, traceback=True)
        raise


def _exit_if_distributed(code: int, *, traceback: bool = False) -> None:
    """Exits at once when this process is one of a multi-process run.

    A failed process must not wait in `jax.distributed`'s shutdown barrier for
    the others (they wait on its collectives): `jaxlab launch` sees the exit and
    stops them.
    """
    from jaxlab import parallel

    if not parallel.distributed_initialized():
        return
    if traceback:
        import traceback as tb

        tb.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
