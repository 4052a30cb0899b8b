"""Command-line entry point used by the workflow rules: `perinstance <command> ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


# scores compared in the correlation table, in display order
CORRELATED_SCORES = ("privacy_loss", "privacy_loss_online", "el2n", "forgetting_events", "learning_speed",
                     "cscore_holdout", "cscore_published")


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


def cmd_holdout(args: argparse.Namespace) -> None:
    from .config import load_config
    from .retrain import holdout_predictions

    config = load_config(args.config)
    _threads(args.threads or config["threads"])
    out = holdout_predictions(config, args.model_id, args.out, progress=not args.no_progress)
    print(f"wrote {out}", file=sys.stderr)


def cmd_proxies(args: argparse.Namespace) -> None:
    from . import io
    from .config import load_config
    from .scores import proxy_table

    config = load_config(args.config)
    out = io.save_table(proxy_table(config, args.runs, args.holdout or ()), args.out)
    print(f"wrote {out}", file=sys.stderr)


def cmd_correlations(args: argparse.Namespace) -> None:
    from . import io
    from .config import load_config
    from .proxies import correlations

    config = load_config(args.config)
    scores = io.load_table(args.scores)
    columns = [c for c in CORRELATED_SCORES if c in scores]
    table = correlations(scores, columns, n_boot=config["proxies"]["bootstrap"], seed=config["groups"]["seed"],
                         ci=config["proxies"]["ci"])
    out = io.save_table(table, args.out)
    print(f"wrote {out}", file=sys.stderr)


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


def cmd_figure_proxies(args: argparse.Namespace) -> None:
    from . import io
    from .config import load_config
    from .data import load_dataset
    from .figures import plot_proxy_correlation

    config = load_config(args.config)
    dataset = load_dataset(**config["dataset"])
    written = plot_proxy_correlation(io.load_table(args.scores), io.load_table(args.correlations), args.out,
                                     class_names=dataset.class_names, proxies=CORRELATED_SCORES[2:],
                                     title=config["experiment"])
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_groups(args: argparse.Namespace) -> None:
    from . import io
    from .config import load_config
    from .scores import forget_groups

    config = load_config(args.config)
    out = io.save_table(forget_groups(config, io.load_table(args.scores)), args.out)
    print(f"wrote {out}", file=sys.stderr)


def cmd_oracle(args: argparse.Namespace) -> None:
    from .config import load_config
    from .retrain import run_oracle

    config = load_config(args.config)
    _threads(args.threads or config["threads"])
    out = run_oracle(config, args.score, args.group, args.oracle, args.groups, args.model_out, args.out,
                     progress=not args.no_progress)
    print(f"wrote {out}", file=sys.stderr)


def cmd_unlearn(args: argparse.Namespace) -> None:
    from .config import load_config
    from .unlearning import run_unlearning_job

    config = load_config(args.config)
    _threads(args.threads or config["threads"])
    run_unlearning_job(config, args.method, args.score, args.group, args.seed, args.groups, args.original,
                       args.oracles, curve_out=args.curve, examples_out=args.examples, final_out=args.final,
                       model_out=args.model_out, progress=not args.no_progress)
    print(f"wrote {args.curve}", file=sys.stderr)


def cmd_steps(args: argparse.Namespace) -> None:
    from .config import load_config
    from .steps import write_steps_tables

    config = load_config(args.config)
    if len(args.curves) != len(args.finals):
        raise ValueError("--curves and --finals must list the same runs in the same order")
    written = write_steps_tables(config, list(zip(args.curves, args.finals)), args.oracles, args.scores,
                                 args.groups, args.out, args.summary, args.curves_out)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_figure_steps(args: argparse.Namespace) -> None:
    from . import io
    from .config import load_config
    from .figures import plot_hard_groups, plot_steps
    from .steps import theory_fit

    config = load_config(args.config)
    steps, summary = io.load_table(args.steps), io.load_table(args.summary)
    k_max = config["unlearning"]["k_max"]
    if args.kind == "hard-groups":
        method = config["unlearning"]["proxy_methods"][0]
        written = plot_hard_groups(steps, summary, method, args.out, k_max=k_max, title=config["experiment"])
    else:
        methods = [m for m in args.methods if m in set(steps["method"])]
        if not methods:
            raise ValueError(f"none of the methods {args.methods} was run (config key unlearning.methods)")
        fits = {m: theory_fit(summary, m) for m in methods}
        written = plot_steps(steps, summary, io.load_table(args.curves), methods, fits, args.out, k_max=k_max,
                             title=config["experiment"], figure=args.figure)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_robustness(args: argparse.Namespace) -> None:
    from . import io
    from .config import load_config
    from .robustness import robustness_table

    config = load_config(args.config)
    if len(args.runs) != len(args.norms):
        raise ValueError("--runs and --norms must list the same seeds in the same order")
    runs = [(_seed_of(run), run, norms) for run, norms in zip(args.runs, args.norms)]
    table = robustness_table(config, runs, betas=config["privacy"]["robustness_betas"],
                             orders=config["privacy"]["robustness_orders"])
    out = io.save_table(table, args.out)
    print(f"wrote {out}", file=sys.stderr)


def cmd_figure_robustness(args: argparse.Namespace) -> None:
    from . import io
    from .config import load_config
    from .figures import plot_robustness

    config = load_config(args.config)
    written = plot_robustness(io.load_table(args.table), args.out, title=config["experiment"])
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_spawned_oracle(args: argparse.Namespace) -> None:
    from .config import load_config
    from .retrain import run_spawned_oracle

    config = load_config(args.config)
    _threads(args.threads or config["threads"])
    out = run_spawned_oracle(config, args.score, args.group, args.groups, args.original, args.out,
                             progress=not args.no_progress)
    print(f"wrote {out}", file=sys.stderr)


def cmd_barrier(args: argparse.Namespace) -> None:
    from .barrier import run_barrier_job
    from .config import load_config

    config = load_config(args.config)
    _threads(args.threads or config["threads"])
    endpoints = dict(item.split("=", 1) for item in args.endpoint)
    run_barrier_job(config, args.score, args.group, args.groups, args.original, endpoints, args.out)
    print(f"wrote {args.out}", file=sys.stderr)


def cmd_figure_barriers(args: argparse.Namespace) -> None:
    from . import io
    from .barrier import barrier_tables
    from .config import load_config
    from .figures import plot_barriers

    config = load_config(args.config)
    tables = barrier_tables(args.paths, io.load_table(args.scores))
    io.save_table(tables["examples"], args.examples_out)
    written = plot_barriers(tables["examples"], tables["curves"], tables["summary"], args.out,
                            title=config["experiment"])
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

    holdout = sub.add_parser("holdout", help="train one C-score holdout model, save its predictions on D")
    holdout.add_argument("--config", required=True)
    holdout.add_argument("--model-id", type=int, required=True)
    holdout.add_argument("--out", required=True, help="npz with trained_on, prob_true, train_index")
    holdout.add_argument("--threads", type=int, default=None)
    holdout.add_argument("--no-progress", action="store_true")
    holdout.set_defaults(func=cmd_holdout)

    prox = sub.add_parser("proxies", help="difficulty proxies table (EL2N, forgetting events, learning speed, C-score)")
    prox.add_argument("--config", required=True)
    prox.add_argument("--runs", nargs="+", required=True, help="training run directories")
    prox.add_argument("--holdout", nargs="*", default=[], help="holdout prediction npz files")
    prox.add_argument("--out", required=True)
    prox.set_defaults(func=cmd_proxies)

    corr = sub.add_parser("correlations", help="Spearman / Kendall between privacy loss and proxies")
    corr.add_argument("--config", required=True)
    corr.add_argument("--scores", required=True)
    corr.add_argument("--out", required=True)
    corr.set_defaults(func=cmd_correlations)

    scores = sub.add_parser("scores", help="merge per-example tables into scores.parquet")
    scores.add_argument("--tables", nargs="+", required=True)
    scores.add_argument("--out", required=True)
    scores.set_defaults(func=cmd_scores)

    fig1 = sub.add_parser("figure-privacy", help="F1: privacy-loss distribution and extreme examples")
    fig1.add_argument("--config", required=True)
    fig1.add_argument("--scores", required=True)
    fig1.add_argument("--out", required=True)
    fig1.set_defaults(func=cmd_figure_privacy)
    groups = sub.add_parser("groups", help="forget groups from the scores table")
    groups.add_argument("--config", required=True)
    groups.add_argument("--scores", required=True)
    groups.add_argument("--out", required=True)
    groups.set_defaults(func=cmd_groups)

    oracle = sub.add_parser("oracle", help="retrain one oracle from scratch on D minus a forget group")
    oracle.add_argument("--config", required=True)
    oracle.add_argument("--groups", required=True, help="groups.csv")
    oracle.add_argument("--score", required=True)
    oracle.add_argument("--group", required=True)
    oracle.add_argument("--oracle", type=int, required=True, help="oracle number r (seed offset)")
    oracle.add_argument("--model-out", required=True)
    oracle.add_argument("--out", required=True, help="evaluation npz")
    oracle.add_argument("--threads", type=int, default=None)
    oracle.add_argument("--no-progress", action="store_true")
    oracle.set_defaults(func=cmd_oracle)

    unl = sub.add_parser("unlearn", help="one unlearning run (method, group, seed) from the original model")
    unl.add_argument("--config", required=True)
    unl.add_argument("--groups", required=True)
    unl.add_argument("--method", required=True)
    unl.add_argument("--score", required=True)
    unl.add_argument("--group", required=True)
    unl.add_argument("--seed", type=int, required=True)
    unl.add_argument("--original", required=True, help="training run directory of the original model")
    unl.add_argument("--oracles", nargs="+", required=True, help="oracle evaluation npz files of this group")
    unl.add_argument("--curve", required=True)
    unl.add_argument("--examples", required=True)
    unl.add_argument("--final", required=True)
    unl.add_argument("--model-out", required=True)
    unl.add_argument("--threads", type=int, default=None)
    unl.add_argument("--no-progress", action="store_true")
    unl.set_defaults(func=cmd_unlearn)

    steps = sub.add_parser("steps", help="steps-to-unlearn table and per-group summary")
    steps.add_argument("--config", required=True)
    steps.add_argument("--curves", nargs="+", required=True)
    steps.add_argument("--finals", nargs="+", required=True)
    steps.add_argument("--oracles", nargs="+", required=True)
    steps.add_argument("--scores", required=True)
    steps.add_argument("--groups", required=True)
    steps.add_argument("--out", required=True, help="steps.csv")
    steps.add_argument("--summary", required=True)
    steps.add_argument("--curves-out", required=True, help="all unlearning curves with their oracle bands")
    steps.set_defaults(func=cmd_steps)

    figs = sub.add_parser("figure-steps", help="F2 / F3 (steps vs privacy-loss group) and F5 (hard groups)")
    figs.add_argument("--config", required=True)
    figs.add_argument("--kind", choices=["privacy-groups", "hard-groups"], default="privacy-groups")
    figs.add_argument("--methods", nargs="*", default=[])
    figs.add_argument("--figure", default="", help="figure label in the title, e.g. F2")
    figs.add_argument("--steps", required=True)
    figs.add_argument("--summary", required=True)
    figs.add_argument("--curves", required=True)
    figs.add_argument("--out", required=True)
    figs.set_defaults(func=cmd_figure_steps)

    rob = sub.add_parser("robustness", help="rank stability of P across beta, alpha, checkpoints, seeds, estimator")
    rob.add_argument("--config", required=True)
    rob.add_argument("--runs", nargs="+", required=True)
    rob.add_argument("--norms", nargs="+", required=True)
    rob.add_argument("--out", required=True)
    rob.set_defaults(func=cmd_robustness)

    fig7 = sub.add_parser("figure-robustness", help="F7: rank stability of the privacy-loss ranking")
    fig7.add_argument("--config", required=True)
    fig7.add_argument("--table", required=True)
    fig7.add_argument("--out", required=True)
    fig7.set_defaults(func=cmd_figure_robustness)

    spawn = sub.add_parser("spawned-oracle", help="oracle spawned from the original's early checkpoint, trained on D minus G")
    spawn.add_argument("--config", required=True)
    spawn.add_argument("--groups", required=True)
    spawn.add_argument("--score", required=True)
    spawn.add_argument("--group", required=True)
    spawn.add_argument("--original", required=True, help="training run directory of the original model")
    spawn.add_argument("--out", required=True, help="weights (.pt)")
    spawn.add_argument("--threads", type=int, default=None)
    spawn.add_argument("--no-progress", action="store_true")
    spawn.set_defaults(func=cmd_spawned_oracle)

    bar = sub.add_parser("barrier", help="per-example loss along linear paths from the original model")
    bar.add_argument("--config", required=True)
    bar.add_argument("--groups", required=True)
    bar.add_argument("--score", required=True)
    bar.add_argument("--group", required=True)
    bar.add_argument("--original", required=True, help="weights of the original model")
    bar.add_argument("--endpoint", nargs="+", required=True, help="NAME=weights.pt of each far endpoint")
    bar.add_argument("--out", required=True)
    bar.add_argument("--threads", type=int, default=None)
    bar.set_defaults(func=cmd_barrier)

    fig6 = sub.add_parser("figure-barriers", help="F6: loss barriers per group and vs privacy loss")
    fig6.add_argument("--config", required=True)
    fig6.add_argument("--paths", nargs="+", required=True, help="barrier path tables of every group")
    fig6.add_argument("--scores", required=True)
    fig6.add_argument("--examples-out", required=True, help="per-example barrier table")
    fig6.add_argument("--out", required=True)
    fig6.set_defaults(func=cmd_figure_barriers)

    fig4 = sub.add_parser("figure-proxies", help="F4: correlation heatmap and scatter plots")
    fig4.add_argument("--config", required=True)
    fig4.add_argument("--scores", required=True)
    fig4.add_argument("--correlations", required=True)
    fig4.add_argument("--out", required=True)
    fig4.set_defaults(func=cmd_figure_proxies)
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
