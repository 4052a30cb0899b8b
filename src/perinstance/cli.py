"""Command-line entry point used by the workflow rules: `perinstance <command> ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def _threads(value: int) -> None:
    torch.set_num_threads(max(1, value))


def cmd_train(args: argparse.Namespace) -> None:
    from .config import load_config
    from .training import train_run

    config = load_config(args.config)
    _threads(args.threads or config["threads"])
    out = train_run(config, args.seed, args.out, progress=not args.no_progress)
    print(f"wrote {out}", file=sys.stderr)


def cmd_figure_training(args: argparse.Namespace) -> None:
    from .config import load_config
    from .figures import plot_training_curves, training_curves_table

    config = load_config(args.config)
    runs = [(int(Path(run).name.removeprefix("seed")), Path(run) / "history.csv") for run in args.runs]
    written = plot_training_curves(training_curves_table(runs), args.out, title=config["experiment"])
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perinstance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one original model and record its training dynamics")
    train.add_argument("--config", required=True, help="experiment config (YAML)")
    train.add_argument("--seed", type=int, required=True)
    train.add_argument("--out", required=True, help="run directory to publish")
    train.add_argument("--threads", type=int, default=None, help="CPU threads (default: config key threads)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    fig = sub.add_parser("figure-training", help="F0: training curves of the original models")
    fig.add_argument("--config", required=True)
    fig.add_argument("--runs", nargs="+", required=True, help="run directories named seed<N>")
    fig.add_argument("--out", required=True, help="PNG path; .pdf and .csv are written beside it")
    fig.set_defaults(func=cmd_figure_training)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import ConfigError

    try:
        args.func(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"perinstance {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
