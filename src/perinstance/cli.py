"""Command-line entry point used by the workflow rules: `perinstance <command> ...`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


# scores compared in the correlation table, in display order
CORRELATED_SCORES = ("privacy_loss", "privacy_loss_online", "el2n", "forgetting_events", "learning_speed",
                     "cscore_holdout", "cscore_published")


def _threads(value: int) -> None:
    # Imported here, not at the top: commands that only read tables and draw figures skip torch.
    import torch

    torch.set_num_threads(max(1, value))


def cmd_train(args: argparse.Namespace, config: dict | None) -> None:
    from .training import train_run

    out = train_run(config, args.seed, args.out, progress=not args.no_progress, force=args.force)
    print(f"wrote {out}", file=sys.stderr)


def cmd_figure_training(args: argparse.Namespace, config: dict | None) -> None:
    from .figures import plot_training_curves, training_curves_table

    runs = [(_seed_of(run), Path(run) / "history.csv") for run in args.runs]
    written = plot_training_curves(training_curves_table(runs), args.out, title=config["experiment"])
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def _seed_of(run_dir: str | Path) -> int:
    name = Path(run_dir).name
    if not name.startswith("seed") or not name[4:].isdigit():
        raise ValueError(f"run directory {run_dir} must be named seed<N>")
    return int(name[4:])


def cmd_grad_norms(args: argparse.Namespace, config: dict | None) -> None:
    from .scores import compute_checkpoint_norms

    out = compute_checkpoint_norms(config, args.run, args.out, progress=not args.no_progress)
    print(f"wrote {out}", file=sys.stderr)


def cmd_privacy_loss(args: argparse.Namespace, config: dict | None) -> None:
    from .scores import write_privacy_tables

    if len(args.runs) != len(args.norms):
        raise ValueError("--runs and --norms must list the same seeds in the same order")
    runs = [(_seed_of(run), run, norms) for run, norms in zip(args.runs, args.norms)]
    written = write_privacy_tables(config, runs, args.out_dir)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_holdout(args: argparse.Namespace, config: dict | None) -> None:
    from .retrain import holdout_predictions

    out = holdout_predictions(config, args.model_id, args.out, progress=not args.no_progress, force=args.force)
    print(f"wrote {out}", file=sys.stderr)


def cmd_proxies(args: argparse.Namespace, config: dict | None) -> None:
    from . import io
    from .scores import proxy_table

    out = io.save_table(proxy_table(config, args.runs, args.holdout or ()), args.out)
    print(f"wrote {out}", file=sys.stderr)


def cmd_correlations(args: argparse.Namespace, config: dict | None) -> None:
    from . import io
    from .proxies import correlations, per_seed_columns

    scores = io.load_table(args.scores)
    columns = [c for c in CORRELATED_SCORES if c in scores]
    # intervals of pairs with per-seed columns (the privacy loss) resample the training seeds too
    table = correlations(scores, columns, n_boot=config["proxies"]["bootstrap"], seed=config["groups"]["seed"],
                         ci=config["proxies"]["ci"], seed_columns=per_seed_columns(scores, columns))
    out = io.save_table(table, args.out)
    print(f"wrote {out}", file=sys.stderr)


def cmd_scores(args: argparse.Namespace, config: dict | None) -> None:
    from . import io
    from .scores import merge_score_tables

    out = io.save_table(merge_score_tables(args.tables), args.out)
    print(f"wrote {out}", file=sys.stderr)


def cmd_figure_privacy(args: argparse.Namespace, config: dict | None) -> None:
    from . import io
    from .data import load_dataset
    from .figures import plot_privacy_loss

    written = plot_privacy_loss(io.load_table(args.scores), load_dataset(**config["dataset"]), args.out,
                                alpha=config["privacy"]["alpha"], worst_case=io.load_table(args.worst_case),
                                title=config["experiment"])
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_figure_proxies(args: argparse.Namespace, config: dict | None) -> None:
    from . import io
    from .data import load_dataset
    from .figures import plot_proxy_correlation

    dataset = load_dataset(**config["dataset"])
    written = plot_proxy_correlation(io.load_table(args.scores), io.load_table(args.correlations), args.out,
                                     class_names=dataset.class_names, proxies=CORRELATED_SCORES[2:],
                                     alpha=config["privacy"]["alpha"], title=config["experiment"])
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_groups(args: argparse.Namespace, config: dict | None) -> None:
    from . import io
    from .scores import forget_groups

    out = io.save_table(forget_groups(config, io.load_table(args.scores)), args.out)
    print(f"wrote {out}", file=sys.stderr)


def cmd_oracle(args: argparse.Namespace, config: dict | None) -> None:
    from .retrain import run_oracle

    out = run_oracle(config, args.score, args.group, args.oracle, args.groups, args.model_out, args.out,
                     progress=not args.no_progress, force=args.force)
    print(f"wrote {out}", file=sys.stderr)


def cmd_unlearn(args: argparse.Namespace, config: dict | None) -> None:
    from .unlearning import run_unlearning_job

    run_unlearning_job(config, args.method, args.score, args.group, args.seed, args.groups, args.original,
                       args.oracles, curve_out=args.curve, examples_out=args.examples, final_out=args.final,
                       model_out=args.model_out, progress=not args.no_progress)
    print(f"wrote {args.curve}", file=sys.stderr)


def cmd_steps(args: argparse.Namespace, config: dict | None) -> None:
    from .steps import write_steps_tables

    if len(args.curves) != len(args.finals):
        raise ValueError("--curves and --finals must list the same runs in the same order")
    written = write_steps_tables(config, list(zip(args.curves, args.finals)), args.oracles, args.scores,
                                 args.groups, args.out, args.summary, args.curves_out, args.fits_out)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_difficulty(args: argparse.Namespace, config: dict | None) -> None:
    from .steps import write_difficulty_tables

    written = write_difficulty_tables(config, args.examples, args.oracles, args.scores, args.groups, args.out,
                                      args.correlations_out, args.survival_out)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_figure_steps(args: argparse.Namespace, config: dict | None) -> None:
    from . import io
    from .steps import theory_fit
    from .unlearning_figures import plot_hard_groups, plot_steps

    steps, examples = io.load_table(args.steps), io.load_table(args.examples)
    k_max = config["unlearning"]["k_max"]
    metric = f"remaining_gap_{max(config['unlearning']['gap_budgets'])}"
    if args.kind == "hard-groups":
        method = config["unlearning"]["proxy_methods"][0]
        written = plot_hard_groups(steps, examples, io.load_table(args.survival), method, args.out, k_max=k_max,
                                   metric=metric, title=config["experiment"])
    else:
        methods = [m for m in args.methods if m in set(steps["method"])]
        if not methods:
            raise ValueError(f"none of the methods {args.methods} was run (config key unlearning.methods)")
        fits = {m: theory_fit(steps, m) for m in methods}
        written = plot_steps(steps, examples, io.load_table(args.curves), methods, fits, args.out, k_max=k_max,
                             metric=metric, title=config["experiment"], figure=args.figure)
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_claims(args: argparse.Namespace, config: dict | None) -> None:
    from .claims import write_claims

    written = write_claims(args.correlations, args.fits, args.barriers, args.out, experiment=config["experiment"],
                           ci=config["proxies"]["ci"])
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_figure_difficulty(args: argparse.Namespace, config: dict | None) -> None:
    from . import io
    from .unlearning_figures import plot_difficulty

    written = plot_difficulty(io.load_table(args.correlations), args.out, title=config["experiment"])
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_robustness(args: argparse.Namespace, config: dict | None) -> None:
    from . import io
    from .robustness import robustness_table

    if len(args.runs) != len(args.norms):
        raise ValueError("--runs and --norms must list the same seeds in the same order")
    runs = [(_seed_of(run), run, norms) for run, norms in zip(args.runs, args.norms)]
    table = robustness_table(config, runs, betas=config["privacy"]["robustness_betas"],
                             orders=config["privacy"]["robustness_orders"])
    out = io.save_table(table, args.out)
    print(f"wrote {out}", file=sys.stderr)


def cmd_figure_robustness(args: argparse.Namespace, config: dict | None) -> None:
    from . import io
    from .figures import plot_robustness

    written = plot_robustness(io.load_table(args.table), args.out, title=config["experiment"])
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def cmd_spawned_oracle(args: argparse.Namespace, config: dict | None) -> None:
    from .retrain import run_spawned_oracle

    out = run_spawned_oracle(config, args.score, args.group, args.groups, args.original, args.out,
                             progress=not args.no_progress, force=args.force)
    print(f"wrote {out}", file=sys.stderr)


def cmd_barrier(args: argparse.Namespace, config: dict | None) -> None:
    from .barrier import run_barrier_job

    malformed = [item for item in args.endpoint if "=" not in item or item.startswith("=") or item.endswith("=")]
    if malformed:
        raise ValueError(f"--endpoint takes NAME=weights.pt, got {' '.join(malformed)}")
    endpoints = dict(item.split("=", 1) for item in args.endpoint)
    run_barrier_job(config, args.score, args.group, args.groups, args.original, endpoints, args.out)
    print(f"wrote {args.out}", file=sys.stderr)


def cmd_figure_barriers(args: argparse.Namespace, config: dict | None) -> None:
    from . import io
    from .barrier import barrier_tables
    from .figures import plot_barriers

    tables = barrier_tables(args.paths, io.load_table(args.scores), n_boot=config["proxies"]["bootstrap"],
                            ci=config["proxies"]["ci"], seed=config["groups"]["seed"])
    io.save_table(tables["examples"], args.examples_out)
    written = plot_barriers(tables["examples"], tables["curves"], tables["summary"], args.out,
                            correlations=tables["correlations"], alpha=config["privacy"]["alpha"],
                            ci=config["proxies"]["ci"], title=config["experiment"])
    print("wrote " + ", ".join(map(str, written)), file=sys.stderr)


def _count(text: str) -> int:
    """A seed or an index: a non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


# replacing an existing result: refused unless it is a run directory this project made, or --force
_FORCE = ("--force", {"action": "store_true",
                      "help": "replace --out even if it is not a run directory this project created"})


def _required(flag: str, **kwargs) -> tuple[str, dict]:
    return flag, {"required": True, **kwargs}


def _many(flag: str, **kwargs) -> tuple[str, dict]:
    return flag, {"required": True, "nargs": "+", **kwargs}


# name -> (handler, help, compute job (threads + progress), arguments besides --config)
COMMANDS = {
    "train": (cmd_train, "train one original model and record its training dynamics", True, [
        _required("--seed", type=_count), _required("--out", help="run directory to publish"), _FORCE]),
    "figure-training": (cmd_figure_training, "F0: training curves of the original models", False, [
        _many("--runs", help="run directories named seed<N>"),
        _required("--out", help="PNG path; .pdf and .csv are written beside it")]),
    "grad-norms": (cmd_grad_norms, "per-example gradient norms of the training set at every checkpoint", True, [
        _required("--run", help="training run directory"), _required("--out", help="norms.npz to write")]),
    "privacy-loss": (cmd_privacy_loss, "per-instance privacy losses P(x, alpha) over seeds", False, [
        _many("--runs", help="run directories named seed<N>"),
        _many("--norms", help="norms.npz of the same runs, same order"), _required("--out-dir")]),
    "robustness": (cmd_robustness, "rank stability of P across beta, alpha, checkpoints, seeds, estimator", False, [
        _many("--runs"), _many("--norms"), _required("--out")]),
    "holdout": (cmd_holdout, "train one C-score holdout model, save its predictions on D", True, [
        _required("--model-id", type=_count), _required("--out", help="npz with trained_on, prob_true, train_index"),
        _FORCE]),
    "proxies": (cmd_proxies, "difficulty proxies (EL2N, forgetting events, learning speed, C-scores)", False, [
        _many("--runs", help="training run directories"),
        ("--holdout", {"nargs": "*", "default": [], "help": "holdout prediction npz files"}), _required("--out")]),
    "correlations": (cmd_correlations, "Spearman / Kendall between privacy loss and proxies", False, [
        _required("--scores"), _required("--out")]),
    "groups": (cmd_groups, "forget groups from the scores table", False, [_required("--scores"), _required("--out")]),
    "oracle": (cmd_oracle, "retrain one oracle from scratch on D minus a forget group", True, [
        _required("--groups", help="groups.csv"), _required("--score"), _required("--group"),
        _required("--oracle", type=_count, help="oracle number r (seed offset)"), _required("--model-out"),
        _required("--out", help="evaluation npz"), _FORCE]),
    "unlearn": (cmd_unlearn, "one unlearning run (method, group, seed) from the original model", True, [
        _required("--groups"), _required("--method"), _required("--score"), _required("--group"),
        _required("--seed", type=_count), _required("--original", help="training run directory of the original model"),
        _many("--oracles", help="oracle evaluation npz files of this group"), _required("--curve"),
        _required("--examples"), _required("--final"), _required("--model-out")]),
    "steps": (cmd_steps, "steps-to-unlearn table and per-group summary", False, [
        _many("--curves"), _many("--finals"), _many("--oracles"), _required("--scores"), _required("--groups"),
        _required("--out", help="steps.csv"), _required("--summary"),
        _required("--curves-out", help="all unlearning curves with their oracle bands"),
        _required("--fits-out", help="fitted steps ~ log P trend per method, with the points it used")]),
    "difficulty": (cmd_difficulty, "per-example unlearning difficulty, its correlations with P and the proxies",
                   False, [
        _many("--examples", help="per-evaluation forget records of every unlearning run"),
        _many("--oracles"), _required("--scores"), _required("--groups"),
        _required("--out", help="per-example table (unlearning_examples.parquet)"),
        _required("--correlations-out"), _required("--survival-out")]),
    "spawned-oracle": (cmd_spawned_oracle, "oracle spawned from the original's early checkpoint, trained on D minus G",
                       True, [_required("--groups"), _required("--score"), _required("--group"),
                              _required("--original", help="training run directory of the original model"),
                              _required("--out", help="weights (.pt)"), _FORCE]),
    "barrier": (cmd_barrier, "per-example loss along linear paths from the original model", True, [
        _required("--groups"), _required("--score"), _required("--group"),
        _required("--original", help="weights of the original model"),
        _many("--endpoint", help="NAME=weights.pt of each far endpoint: unlearned_<method> (the run's model after "
              "barrier.unlearning_steps steps, seed<u>_barrier.pt) or spawned_oracle"), _required("--out")]),
    "figure-privacy": (cmd_figure_privacy, "F1: privacy-loss distribution and extreme examples", False, [
        _required("--scores"), _required("--worst-case", help="privacy/worst_case.csv (data-independent bound)"),
        _required("--out")]),
    "figure-proxies": (cmd_figure_proxies, "F4: correlation heatmap and scatter plots", False, [
        _required("--scores"), _required("--correlations"), _required("--out")]),
    "figure-steps": (cmd_figure_steps, "F2 / F3 (steps vs privacy-loss group) and F5 (hard groups)", False, [
        ("--kind", {"choices": ["privacy-groups", "hard-groups"], "default": "privacy-groups"}),
        ("--methods", {"nargs": "*", "default": []}),
        ("--figure", {"default": "", "help": "figure label in the title"}),
        _required("--steps"), _required("--examples", help="unlearning_examples.parquet"),
        _required("--survival"), _required("--curves"), _required("--out")]),
    "claims": (cmd_claims, "the paper's claims against the measured statistics (results.csv, results.md)", False, [
        _required("--correlations", help="difficulty_correlations.csv"), _required("--fits", help="theory_fits.csv"),
        ("--barriers", {"default": None, "help": "F6_loss_barriers.csv"}),
        _required("--out", help="results.csv; results.md is written beside it")]),
    "figure-difficulty": (cmd_figure_difficulty, "F8: per-example unlearning difficulty vs P and the proxies", False, [
        _required("--correlations"), _required("--out")]),
    "figure-barriers": (cmd_figure_barriers, "F6: loss barriers per group and vs privacy loss", False, [
        _many("--paths", help="barrier path tables of every barrier group (privacy-loss and random groups)"),
        _required("--scores"),
        _required("--examples-out", help="per-example barrier table"), _required("--out")]),
    "figure-robustness": (cmd_figure_robustness, "F7: rank stability of the privacy-loss ranking", False, [
        _required("--table"), _required("--out")]),
}
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error: usage text above it hides the message in a job log."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="perinstance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    scores = sub.add_parser("scores", help="merge per-example tables into scores.parquet")
    scores.add_argument("--tables", nargs="+", required=True)
    scores.add_argument("--out", required=True)
    scores.set_defaults(func=cmd_scores)
    for name, (func, help_text, compute, arguments) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--config", required=True, help="experiment config (YAML)")
        for flag, kwargs in arguments:
            command.add_argument(flag, **kwargs)
        if compute:
            command.add_argument("--threads", type=int, default=None, help="CPU threads (default: config key threads)")
            command.add_argument("--no-progress", action="store_true", help="no progress bar")
        command.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import load_config

    try:
        config = load_config(args.config) if getattr(args, "config", None) else None
        if config is not None and hasattr(args, "threads"):
            _threads(args.threads or config["threads"])
        args.func(args, config)
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
