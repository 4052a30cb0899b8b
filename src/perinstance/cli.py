"""`perinstance <job> --config C ...`: one subcommand per job of `perinstance.jobs`, generated from
its declaration (the workflow's rules call exactly these commands), and the user command
`perinstance forget`, which unlearns a forget request for its predicted budget."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__, supervisor
from .allocator import retain_freed_memory
from .jobs import JOBS, Job, flag, index_wildcard, report, run, wildcard_choices


def _count(text: str) -> int:
    """A seed or an index: a non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: usage text above it hides the message in a job log."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_KIND_HELP = {"wildcards": "", "input": "input file", "output": "output file to write", "params": ""}


def _add_job(sub: argparse._SubParsersAction, declared: Job) -> None:
    command = sub.add_parser(declared.command, help=declared.summary, description=declared.summary)
    command.add_argument("--config", required=True, help="experiment config (YAML)")
    for kind, name, arity in declared.arguments():
        options: dict = {"required": arity != "*", "dest": f"{kind}.{name}", "help": _KIND_HELP[kind] or None}
        if arity:
            options["nargs"] = arity
            options["default"] = []
        if (kind == "wildcards" and index_wildcard(name)) or (kind, name) == (
            "params",
            declared.models_param,
        ):
            options["type"] = _count
        if kind == "wildcards" and wildcard_choices(name):
            options["choices"] = list(wildcard_choices(name))
        command.add_argument(flag(name), **options)
    if declared.compute:
        command.add_argument(
            "--threads", type=int, default=None, help="CPU threads (default: config key threads)"
        )
        command.add_argument("--no-progress", action="store_true", help="no progress bar")
    if declared.replaces:
        command.add_argument(
            "--force",
            action="store_true",
            help="replace the output even if it is not a run directory this project created",
        )
    command.set_defaults(job=declared.name)


def _coverage(text: str) -> float:
    """A coverage level: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number strictly between 0 and 1, got {value}")
    return value


FORGET_HELP = "Unlearn a forget request for its predicted budget (user command, not a workflow job)."


def _add_forget(sub: argparse._SubParsersAction) -> None:
    command = sub.add_parser(
        "forget",
        help=FORGET_HELP,
        description=FORGET_HELP + " The budget comes from the calibration of the `budget` job; "
        "fine-tuning (or --method) runs on the retain set for exactly that many steps.",
    )
    command.add_argument("--config", required=True, help="experiment config (YAML)")
    command.add_argument("--run", required=True, help="training run directory of the original model")
    command.add_argument("--scores", required=True, help="scores table with P(x, 4 alpha) per example")
    command.add_argument("--calibration", required=True, help="budget calibration file of the budget job")
    command.add_argument(
        "--ids",
        required=True,
        help="example ids: a comma list (3,17,256), a text file, or a CSV with an index column",
    )
    command.add_argument("--out", required=True, help="report to write (JSON)")
    command.add_argument("--method", default="finetune", help="unlearning method (default: finetune)")
    command.add_argument(
        "--coverage", type=_coverage, default=None, help="budget quantile (default: the calibration's)"
    )
    command.add_argument(
        "--seed", type=_count, default=None, help="unlearning seed (default: unlearning.seed_offset)"
    )
    command.add_argument("--model-out", default=None, help="also write the unlearned weights here (.pt)")
    command.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: config key threads)"
    )
    command.add_argument("--no-progress", action="store_true", help="no progress bar")
    command.set_defaults(job=None)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="perinstance", description=__doc__)
    parser.add_argument("--version", action="version", version=f"perinstance {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for declared in JOBS.values():
        _add_job(sub, declared)
    _add_forget(sub)
    return parser


def _threads(value: int) -> None:
    # only compute jobs import torch: table and figure jobs start without it
    import torch

    torch.set_num_threads(max(1, value))


def _forget(args: argparse.Namespace, config: dict) -> None:
    from .budget import describe, forget

    _threads(args.threads or config["threads"])
    result = forget(
        config,
        args.run,
        args.scores,
        args.calibration,
        args.ids,
        args.out,
        method=args.method,
        seed=args.seed,
        coverage=args.coverage,
        model_out=args.model_out,
        progress=not args.no_progress,
    )
    print(describe(result))
    report([args.out, args.model_out])


def main(argv: list[str] | None = None) -> int:
    supervisor.watch()  # a job whose Snakemake is gone stops before it publishes (supervisor.py)
    retain_freed_memory()  # before any tensor exists: see allocator.py
    args = build_parser().parse_args(argv)
    from .config import load_config

    try:
        config = load_config(args.config)
        if args.job is None:
            _forget(args, config)
            return 0
        declared = JOBS[args.job]
        values: dict[str, dict] = {"wildcards": {}, "input": {}, "output": {}, "params": {}}
        for kind, name, _ in declared.arguments():
            values[kind][name] = getattr(args, f"{kind}.{name}")
        if declared.compute:
            _threads(args.threads or config["threads"])
        written = run(
            declared.name,
            config,
            progress=declared.compute and not args.no_progress,
            force=getattr(args, "force", False),
            **values,
        )
        report(written)
    except (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as err:
        # ConfigError, refused overwrites, corrupt artefacts and diverged runs are all ValueErrors whose
        # message names the key or file; PERINSTANCE_DEBUG=1 shows the traceback as well.
        if os.environ.get("PERINSTANCE_DEBUG"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"perinstance {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
