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
    runs = [(_seed_of(run), Path(run) / "history.csv") for run in args.runs]
    written = plot_training_curves(training_curves_table(runs), args.out, title=config["experiment"])
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def _seed_of(run_dir: str | Path) -> int:
    name = Path(run_dir).name
    if not name.startswith("seed") or not name[4:].isdigit():
        raise ValueError(f"run directory {run_dir} must be named seed<N>")
    return int(name[4:])


def cmd_grad_norms(args: argparse.Namespace) -> None:
    from .config import load_config
    from .scores import compute_checkpoint_norms

    config = load_config(args.config)
    _threads(args.threads or config["threads"])
    out = compute_checkpoint_norms(config, args.run, args.out, progress=not args.no_progress)
    print(f"wrote {out}", file=sys.stderr)


def cmd_privacy_loss(args: argparse.Namespace) -> None:
    from .config import load_config
    from .scores import write_privacy_tables

    config = load_config(args.config)
    if len(args.runs) != len(args.norms):
        raise ValueError("--runs and --norms must list the same seeds in the same order")
    runs = [(_seed_of(run), run, norms) for run, norms in zip(args.runs, args.norms)]
    written = write_privacy_tables(config, runs, args.out_dir)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_scores(args: argparse.Namespace) -> None:
    from . import io
    from .scores import merge_score_tables

    out = io.save_table(merge_score_tables(args.tables), args.out)
    print(f"wrote {out}", file=sys.stderr)


def cmd_figure_privacy(args: argparse.Namespace) -> None:
    from . import io
    from .config import load_config
    from .data import load_dataset
    from .figures import plot_privacy_loss

    config = load_config(args.config)
    written = plot_privacy_loss(io.load_table(args.scores), load_dataset(**config["dataset"]), args.out,
                                alpha=config["privacy"]["alpha"], title=config["experiment"])
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
    norms = sub.add_parser("grad-norms", help="per-example gradient norms of the training set at every checkpoint")
    norms.add_argument("--config", required=True)
    norms.add_argument("--run", required=True, help="training run directory")
    norms.add_argument("--out", required=True, help="norms.npz to write")
    norms.add_argument("--threads", type=int, default=None)
    norms.add_argument("--no-progress", action="store_true")
    norms.set_defaults(func=cmd_grad_norms)

    privacy = sub.add_parser("privacy-loss", help="per-instance privacy losses P(x, alpha) over seeds")
    privacy.add_argument("--config", required=True)
    privacy.add_argument("--runs", nargs="+", required=True, help="run directories named seed<N>")
    privacy.add_argument("--norms", nargs="+", required=True, help="norms.npz of the same runs, same order")
    privacy.add_argument("--out-dir", required=True)
    privacy.set_defaults(func=cmd_privacy_loss)

    scores = sub.add_parser("scores", help="merge per-example tables into scores.parquet")
    scores.add_argument("--tables", nargs="+", required=True)
    scores.add_argument("--out", required=True)
    scores.set_defaults(func=cmd_scores)

    fig1 = sub.add_parser("figure-privacy", help="F1: privacy-loss distribution and extreme examples")
    fig1.add_argument("--config", required=True)
    fig1.add_argument("--scores", required=True)
    fig1.add_argument("--out", required=True)
    fig1.set_defaults(func=cmd_figure_privacy)
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
