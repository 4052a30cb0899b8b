"""Every pipeline step, declared once: its wildcards, input and output names, and what it does.

Reading this module top to bottom is reading the workflow. Each job is a function
``(config, job) -> written paths`` registered with `@job(...)`: `config` is the validated config
dict the science functions take, and `job` mirrors Snakemake's own script object
(``job.wildcards.seed``, ``job.input.groups``, ``job.output.curve``, ``job.params``), with the
typed view of the same config (``job.settings.unlearning.k_max``), ``job.progress`` and
``job.force``. From the declaration come

- the CLI subcommand and its ``--help`` (`perinstance.cli`), so any job runs without Snakemake;
- the rule's shell line (`shell_command`), so a rule names only its files, resources and
  environment (``workflow/rules/*.smk``).

The module needs only the standard library, PyYAML and jsonschema at import time: the Snakefile
imports it to build the rules, and each job imports the science it needs when it runs, so table
and figure jobs never pay for importing torch.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import plan, provenance
from .paths import INDEX_WILDCARDS
from .settings import Settings

# names ending in "+" take one or more values, "*" zero or more
_MANY, _OPTIONAL = "+", "*"


@dataclass(frozen=True)
class Job:
    """One pipeline step: a function and the names of what it reads and writes."""

    name: str
    function: Callable[[dict, SimpleNamespace], Any]
    summary: str
    wildcards: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: tuple[str, ...]
    compute: bool  # runs torch: --threads and --no-progress
    replaces: bool  # --force may replace an existing output the project did not create
    # Batchable jobs train several models of one kind (oracle replicates, unlearning runs, holdout
    # models): `models` names the index ("replicate"); the job takes the indices as the param
    # `<models>s` and one output file per index under each output name. Config key models_per_job
    # decides whether a rule hands it one index (the index is then a wildcard of the rule's files,
    # logs and benchmarks) or all of them.
    models: str | None = None

    @property
    def command(self) -> str:
        return self.name.replace("_", "-")

    @property
    def models_param(self) -> str | None:
        """The param holding a batchable job's model indices: `replicates` for `replicate`."""
        return f"{self.models}s" if self.models else None

    def arguments(self) -> list[tuple[str, str, str]]:
        """(kind, name, arity) of every argument besides --config, in command-line order."""
        named = [("wildcards", w) for w in self.wildcards] + [("input", i) for i in self.inputs]
        named += [("output", o) for o in self.outputs] + [("params", p) for p in self.params]
        if self.models:
            named.append(("params", self.models_param + _MANY))
        return [
            (kind, spec.rstrip(_MANY + _OPTIONAL), spec[-1] if spec[-1] in _MANY + _OPTIONAL else "")
            for kind, spec in named
        ]


JOBS: dict[str, Job] = {}


def job(
    *,
    wildcards: Sequence[str] = (),
    inputs: Sequence[str] = (),
    outputs: Sequence[str] = (),
    params: Sequence[str] = (),
    compute: bool = False,
    replaces: bool = False,
    models: str | None = None,
):
    """Register a job function under its own name; its docstring's first line is its --help.

    `models`: the index of the models a batchable job trains (see Job.models)."""

    def register(function):
        name = function.__name__
        declared = Job(
            name,
            function,
            (function.__doc__ or name).strip().splitlines()[0],
            tuple(wildcards),
            tuple(inputs),
            tuple(outputs),
            tuple(params),
            compute,
            replaces,
            models,
        )
        if models is not None and models not in INDEX_WILDCARDS:
            raise ValueError(
                f"job {name}: models index {models!r} is not one of {', '.join(INDEX_WILDCARDS)}"
            )
        names = [arg for _, arg, _ in declared.arguments()]
        clashes = sorted(
            {n for n in names if names.count(n) > 1} | ({"config", "threads", "force"} & set(names))
        )
        if clashes:
            raise ValueError(f"job {name}: argument names used twice or reserved: {', '.join(clashes)}")
        if name in JOBS:
            raise ValueError(f"job {name} is declared twice")
        JOBS[name] = declared
        return function

    return register


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def shell_command(name: str) -> str:
    """The shell line of job `name`'s rule: every declared name from the rule's own wildcards,
    input, output and params; the job's log gets everything it prints."""
    declared = JOBS[name]
    parts = ["{params.cli}", declared.command, "--config {params.config_file:q}"]
    parts += [f"{flag(arg)} {{{kind}.{arg}:q}}" for kind, arg, _ in declared.arguments()]
    if declared.compute:
        parts.append("--threads {threads}")
    return " ".join(parts) + " > {log:q} 2>&1"


def command_line(name: str, *, config_file: str, values: Mapping[str, Mapping[str, Any]]) -> str:
    """The same command with concrete values (`values[kind][name]`), quoted for the shell."""
    declared = JOBS[name]
    words = [declared.command, "--config", config_file]
    for kind, arg, arity in declared.arguments():
        value = values[kind][arg]
        words += [flag(arg), *([str(v) for v in value] if arity else [str(value)])]
    return shlex.join(words)


def _per_model(job: SimpleNamespace, *lists: Sequence[str]) -> list[tuple]:
    """(index, the index's entry of every list) for each model of a batchable job, in the order of
    its indices param: one output (or input) file per model under each name."""
    declared = JOBS[job.name]
    indices = [int(i) for i in getattr(job.params, declared.models_param)]
    if len(set(indices)) != len(indices):
        raise ValueError(f"job {job.name}: --{declared.models_param} lists an index twice: {indices}")
    for files in lists:
        if len(files) != len(indices):
            raise ValueError(
                f"job {job.name}: {len(indices)} {declared.models_param} ({indices}) but {len(files)} "
                f"files in {list(files)}; give one file per {declared.models}, in the same order"
            )
    return list(zip(indices, *lists))


# ---------------------------------------------------------------------------------------------
# Original models and their per-instance privacy losses
# ---------------------------------------------------------------------------------------------


@job(wildcards=["seed"], outputs=["training_run"], compute=True, replaces=True)
def train(config, job):
    """Train one original model.

    Checkpoints, optimizer state and training dynamics land in its run directory.
    """
    from .training import train_run

    return train_run(
        config, job.wildcards.seed, job.output.training_run, progress=job.progress, force=job.force
    )


@job(wildcards=["seed"], inputs=["training_run", "norm_parts*"], outputs=["grad_norms"], compute=True)
def grad_norms(config, job):
    """Gradient norm of every training example at every checkpoint of one original model (with
    --norm-parts: merged from the files of its parts)."""
    from .grad_norms import compute_checkpoint_norms, merge_checkpoint_norms

    _check_seed(job.input.training_run, job.wildcards.seed)
    if job.input.norm_parts:
        return merge_checkpoint_norms(job.input.training_run, job.input.norm_parts, job.output.grad_norms)
    return compute_checkpoint_norms(
        config, job.input.training_run, job.output.grad_norms, progress=job.progress
    )


@job(wildcards=["seed", "part"], inputs=["training_run"], outputs=["grad_norms_part"], compute=True)
def grad_norms_part(config, job):
    """Gradient norms at one share of the checkpoints of one original model (privacy.norm_jobs)."""
    from .grad_norms import compute_checkpoint_norms

    _check_seed(job.input.training_run, job.wildcards.seed)
    return compute_checkpoint_norms(
        config,
        job.input.training_run,
        job.output.grad_norms_part,
        progress=job.progress,
        part=job.wildcards.part,
        parts=job.settings.privacy.norm_jobs,
    )


def _seeded_runs(runs: Sequence[str], norms: Sequence[str]) -> list[tuple[int, str, str]]:
    """(seed, run directory, norms) of each original model; the seed is read from the run itself."""
    from .training import run_seed

    if len(runs) != len(norms):
        raise ValueError("--training-runs and --grad-norms must list the same seeds in the same order")
    return [(run_seed(run), run, norm) for run, norm in zip(runs, norms)]


def _check_seed(run_dir: str, seed: int) -> None:
    from .training import run_seed

    held = run_seed(run_dir)
    if held != seed:
        raise ValueError(f"training run {run_dir} holds seed {held}, not seed {seed}")


@job(inputs=["training_runs+", "grad_norms+"], outputs=["privacy_table", "privacy_long", "worst_case"])
def privacy_loss(config, job):
    """Per-instance privacy losses P(x, alpha) of every training example.

    Checkpoint and online estimators, worst case.
    """
    from .privacy_scores import write_privacy_tables

    return write_privacy_tables(
        config,
        _seeded_runs(job.input.training_runs, job.input.grad_norms),
        job.output.privacy_table,
        job.output.privacy_long,
        job.output.worst_case,
    )


@job(inputs=["training_runs+", "grad_norms+"], outputs=["robustness"])
def robustness(config, job):
    """Rank stability of P across accounting beta, Renyi order, checkpoint schedule, seeds and estimator."""
    from . import io
    from .robustness import robustness_table

    table = robustness_table(
        config,
        _seeded_runs(job.input.training_runs, job.input.grad_norms),
        betas=job.settings.privacy.robustness_betas,
        orders=job.settings.privacy.robustness_orders,
    )
    return io.save_table(table, job.output.robustness)


# ---------------------------------------------------------------------------------------------
# Difficulty proxies
# ---------------------------------------------------------------------------------------------


@job(outputs=["holdout+"], compute=True, replaces=True, models="model")
def holdout(config, job):
    """C-score holdout models: each trained on a random fraction of D, its predictions on all of D."""
    from .retrain import holdout_predictions

    return [
        holdout_predictions(config, model, out, progress=job.progress, force=job.force)
        for model, out in _per_model(job, job.output.holdout)
    ]


@job(inputs=["training_runs+", "holdout*"], outputs=["proxies"])
def proxies(config, job):
    """EL2N, forgetting events, learning speed and C-scores of every training example."""
    from . import io
    from .scores import proxy_table

    return io.save_table(proxy_table(config, job.input.training_runs, job.input.holdout), job.output.proxies)


@job(inputs=["tables+"], outputs=["scores"])
def scores(config, job):
    """One row per training example, one column per score: the privacy losses and the proxies."""
    from . import io
    from .scores import merge_score_tables

    return io.save_table(merge_score_tables(job.input.tables), job.output.scores)


# scores compared in the correlation table, in display order
CORRELATED_SCORES = (
    "privacy_loss",
    "privacy_loss_online",
    "el2n",
    "forgetting_events",
    "learning_speed",
    "cscore_holdout",
    "cscore_published",
)


@job(inputs=["scores"], outputs=["correlations"])
def correlations(config, job):
    """Spearman and Kendall of privacy loss with each proxy; intervals resample seeds (for P) and examples."""
    from . import io
    from .proxies import correlations as correlation_table
    from .proxies import per_seed_columns

    table = io.load_table(job.input.scores)
    columns = [c for c in CORRELATED_SCORES if c in table]
    result = correlation_table(
        table,
        columns,
        n_boot=job.settings.proxies.bootstrap,
        seed=job.settings.groups.seed,
        ci=job.settings.proxies.ci,
        seed_columns=per_seed_columns(table, columns),
    )
    return io.save_table(result, job.output.correlations)


# ---------------------------------------------------------------------------------------------
# Forget groups, oracles, unlearning
# ---------------------------------------------------------------------------------------------


@job(inputs=["scores"], outputs=["groups"])
def groups(config, job):
    """Forget groups by privacy loss (low/mid/high and rank bins), by each proxy (high), and random."""
    from . import io
    from .groups import forget_groups

    return io.save_table(forget_groups(config, io.load_table(job.input.scores)), job.output.groups)


@job(
    wildcards=["score", "group"],
    inputs=["groups"],
    outputs=["oracle_evaluation+", "oracle_model+"],
    compute=True,
    replaces=True,
    models="replicate",
)
def oracle(config, job):
    """Oracle replicates of a forget group: each retrained from scratch on D minus the group, evaluated."""
    from .retrain import run_oracle

    w = job.wildcards
    return [
        run_oracle(
            config,
            w.score,
            w.group,
            replicate,
            job.input.groups,
            model_out,
            evaluation_out,
            progress=job.progress,
            force=job.force,
        )
        for replicate, evaluation_out, model_out in _per_model(
            job, job.output.oracle_evaluation, job.output.oracle_model
        )
    ]


@job(
    wildcards=["method", "score", "group"],
    inputs=["groups", "originals+", "oracles+"],
    outputs=["curve+", "examples+", "final+", "model+", "barrier_model+"],
    compute=True,
    models="run",
)
def unlearn(config, job):
    """Unlearning runs of (method, group), each from its original model (--originals, in run order)
    on the retain set."""
    from .unlearning import run_unlearning_job

    w, out = job.wildcards, job.output
    written = []
    for run, original, curve, examples, final, model, barrier_model in _per_model(
        job, job.input.originals, out.curve, out.examples, out.final, out.model, out.barrier_model
    ):
        run_unlearning_job(
            config,
            w.method,
            w.score,
            w.group,
            run,
            job.input.groups,
            original,
            job.input.oracles,
            curve_out=curve,
            examples_out=examples,
            final_out=final,
            model_out=model,
            barrier_model_out=barrier_model,
            progress=job.progress,
        )
        written += [curve, examples, final, model, barrier_model]
    return written


@job(
    inputs=["run_curves+", "run_finals+", "oracles+", "scores", "groups"],
    outputs=["steps", "steps_summary", "curves", "theory_fits"],
)
def steps(config, job):
    """Steps-to-unlearn of every run (censoring kept) and group.

    Also attack metrics, and the fitted steps ~ log P trend.
    """
    from .steps import write_steps_tables

    i, o = job.input, job.output
    if len(i.run_curves) != len(i.run_finals):
        raise ValueError("--run-curves and --run-finals must list the same runs in the same order")
    return write_steps_tables(
        config,
        list(zip(i.run_curves, i.run_finals)),
        i.oracles,
        i.scores,
        i.groups,
        o.steps,
        o.steps_summary,
        o.curves,
        o.theory_fits,
    )


@job(
    inputs=["run_examples+", "oracles+", "scores", "groups"],
    outputs=["unlearning_examples", "difficulty_correlations", "survival"],
)
def difficulty(config, job):
    """Per-example unlearning difficulty (uncensored gap statistics, first passage).

    And its correlations with P and the proxies.
    """
    from .steps import write_difficulty_tables

    i, o = job.input, job.output
    return write_difficulty_tables(
        config,
        i.run_examples,
        i.oracles,
        i.scores,
        i.groups,
        o.unlearning_examples,
        o.difficulty_correlations,
        o.survival,
    )


@job(
    inputs=["steps", "groups"],
    outputs=["budget_calibration", "budget_validation", "budget_validation_summary"],
)
def budget(config, job):
    """Predicted unlearning budgets from P(x, 4 alpha): the calibration and its held-out validation.

    Leave-one-group-out over every group of each method, against one fixed budget for all requests.
    """
    from .budget import write_budget_tables

    i, o = job.input, job.output
    return write_budget_tables(
        config, i.steps, i.groups, o.budget_calibration, o.budget_validation, o.budget_validation_summary
    )


# ---------------------------------------------------------------------------------------------
# Loss barriers
# ---------------------------------------------------------------------------------------------


@job(
    wildcards=["score", "group"],
    inputs=["groups", "original"],
    outputs=["spawned_oracle"],
    compute=True,
    replaces=True,
)
def spawned_oracle(config, job):
    """Oracle spawned from the original's early checkpoint (lr schedule and momentum continued).

    Trained on D minus the group.
    """
    from .retrain import run_spawned_oracle

    w = job.wildcards
    return run_spawned_oracle(
        config,
        w.score,
        w.group,
        job.input.groups,
        job.input.original,
        job.output.spawned_oracle,
        progress=job.progress,
        force=job.force,
    )


@job(
    wildcards=["score", "group"],
    inputs=["groups", "original", "unlearned+", "spawned"],
    params=["methods+"],
    outputs=["barrier_paths"],
    compute=True,
)
def barrier(config, job):
    """Per-example loss along the linear paths from the original model.

    To each unlearned endpoint and to the spawned oracle.
    """
    from .barrier import run_barrier_job
    from .training import run_weights

    if len(job.params.methods) != len(job.input.unlearned):
        raise ValueError("--methods and --unlearned must list the same methods in the same order")
    endpoints = {f"unlearned_{m}": path for m, path in zip(job.params.methods, job.input.unlearned)}
    endpoints["spawned_oracle"] = job.input.spawned
    run_barrier_job(
        config,
        job.wildcards.score,
        job.wildcards.group,
        job.input.groups,
        run_weights(job.input.original),
        endpoints,
        job.output.barrier_paths,
    )
    return job.output.barrier_paths


# ---------------------------------------------------------------------------------------------
# Figures and the claims table. Every figure is written as PNG, PDF and the CSV of its numbers.
# ---------------------------------------------------------------------------------------------


@job(inputs=["training_runs+"], outputs=["png"])
def figure_training(config, job):
    """F0: training curves of the original models, one line per seed."""
    from .figures import plot_training_curves, training_curves_table
    from .training import run_history, run_seed

    runs = [(run_seed(run), run_history(run)) for run in job.input.training_runs]
    return plot_training_curves(training_curves_table(runs), job.output.png, title=job.settings.experiment)


@job(inputs=["scores", "worst_case"], outputs=["png"])
def figure_privacy(config, job):
    """F1: per-instance privacy losses against the data-independent worst case.

    Also the most and least private examples.
    """
    from . import io
    from .data import load_dataset
    from .figures import plot_privacy_loss

    return plot_privacy_loss(
        io.load_table(job.input.scores),
        load_dataset(**job.settings.dataset.to_config()),
        job.output.png,
        alpha=job.settings.privacy.alpha,
        worst_case=io.load_table(job.input.worst_case),
        title=job.settings.experiment,
    )


@job(inputs=["scores", "correlations"], outputs=["png"])
def figure_proxies(config, job):
    """F4: correlation of the privacy loss with the difficulty proxies."""
    from . import io
    from .data import load_dataset
    from .figures import plot_proxy_correlation

    dataset = load_dataset(**job.settings.dataset.to_config())
    return plot_proxy_correlation(
        io.load_table(job.input.scores),
        io.load_table(job.input.correlations),
        job.output.png,
        class_names=dataset.class_names,
        proxies=CORRELATED_SCORES[2:],
        alpha=job.settings.privacy.alpha,
        title=job.settings.experiment,
    )


@job(
    inputs=["steps", "unlearning_examples", "survival", "curves"],
    params=["kind", "methods*", "label"],
    outputs=["png"],
)
def figure_steps(config, job):
    """F2 (SGLD) and F3 (fine-tuning, L1-sparse): steps-to-unlearn per privacy-loss group.

    F5: the hardest groups.
    """
    from . import io
    from .steps import theory_fit
    from .unlearning_figures import plot_hard_groups, plot_steps

    steps_table, examples = io.load_table(job.input.steps), io.load_table(job.input.unlearning_examples)
    k_max = job.settings.unlearning.k_max
    metric = f"remaining_gap_{max(job.settings.unlearning.gap_budgets)}"
    if job.params.kind == "hard-groups":
        method = job.settings.unlearning.proxy_methods[0]
        return plot_hard_groups(
            steps_table,
            examples,
            io.load_table(job.input.survival),
            method,
            job.output.png,
            k_max=k_max,
            metric=metric,
            title=job.settings.experiment,
        )
    if job.params.kind != "privacy-groups":
        raise ValueError(f"--kind must be privacy-groups or hard-groups, got {job.params.kind!r}")
    methods = [m for m in job.params.methods if m in set(steps_table["method"])]
    if not methods:
        raise ValueError(f"none of the methods {job.params.methods} was run (config key unlearning.methods)")
    fits = {m: theory_fit(steps_table, m) for m in methods}
    return plot_steps(
        steps_table,
        examples,
        io.load_table(job.input.curves),
        methods,
        fits,
        job.output.png,
        k_max=k_max,
        metric=metric,
        title=job.settings.experiment,
        figure=job.params.label,
    )


@job(inputs=["robustness"], outputs=["png"])
def figure_robustness(config, job):
    """F7: robustness of the privacy-loss ranking."""
    from . import io
    from .figures import plot_robustness

    return plot_robustness(io.load_table(job.input.robustness), job.output.png, title=job.settings.experiment)


@job(inputs=["difficulty_correlations"], outputs=["png"])
def figure_difficulty(config, job):
    """F8: per-example unlearning difficulty against P and the proxies, with paired differences."""
    from . import io
    from .unlearning_figures import plot_difficulty

    return plot_difficulty(
        io.load_table(job.input.difficulty_correlations), job.output.png, title=job.settings.experiment
    )


@job(inputs=["unlearning_examples", "difficulty_correlations", "steps"], outputs=["png"])
def figure_methods(config, job):
    """F9: per-example unlearning difficulty against P(x, 4 alpha) for every unlearning method, with ToW."""
    from . import io
    from .unlearning_figures import plot_methods

    return plot_methods(
        io.load_table(job.input.unlearning_examples),
        io.load_table(job.input.difficulty_correlations),
        io.load_table(job.input.steps),
        job.output.png,
        metric=f"mean_gap_{max(job.settings.unlearning.gap_budgets)}",
        title=job.settings.experiment,
    )


@job(inputs=["barrier_paths+", "scores"], outputs=["png", "barrier_examples"])
def figure_barriers(config, job):
    """F6: loss barriers per group and barrier height against privacy loss; the per-example barrier table."""
    from . import io
    from .barrier import barrier_tables
    from .figures import plot_barriers

    tables = barrier_tables(
        job.input.barrier_paths,
        io.load_table(job.input.scores),
        n_boot=job.settings.proxies.bootstrap,
        ci=job.settings.proxies.ci,
        seed=job.settings.groups.seed,
    )
    written = [io.save_table(tables["examples"], job.output.barrier_examples)]
    return written + plot_barriers(
        tables["examples"],
        tables["curves"],
        tables["summary"],
        job.output.png,
        correlations=tables["correlations"],
        alpha=job.settings.privacy.alpha,
        ci=job.settings.proxies.ci,
        title=job.settings.experiment,
    )


@job(inputs=["difficulty_correlations", "theory_fits", "barriers*"], outputs=["csv", "markdown"])
def claims(config, job):
    """The paper's claims against what this experiment measured, with intervals and verdicts."""
    from . import io
    from .claims import claims_table, render_markdown

    barriers = job.input.barriers
    if len(barriers) > 1:
        raise ValueError("--barriers takes at most one file (the CSV of figure F6)")
    sources = {
        "correlations": Path(job.input.difficulty_correlations).name,
        "fits": Path(job.input.theory_fits).name,
        "barriers": Path(barriers[0]).name if barriers else "",
    }
    table = claims_table(
        io.load_table(job.input.difficulty_correlations),
        io.load_table(job.input.theory_fits),
        io.load_table(barriers[0]) if barriers else None,
        sources=sources,
    )
    with io.atomic_path(job.output.markdown) as tmp:
        tmp.write_text(render_markdown(table, experiment=job.settings.experiment, ci=job.settings.proxies.ci))
    return [io.save_table(table, job.output.csv), Path(job.output.markdown)]


def run(
    name: str, config: dict, *, progress: bool = True, force: bool = False, **values: Mapping[str, Any]
) -> Any:
    """Run job `name` from Python, as the CLI does after parsing: `config` is a validated config and
    `values` holds `wildcards`, `input`, `output` and `params` mappings (many-valued names take lists).
    The tables and figures it writes carry the provenance of `config` (perinstance.provenance)."""
    declared = JOBS[name]
    given: dict[str, dict[str, Any]] = {kind: {} for kind in ("wildcards", "input", "output", "params")}
    missing = []
    for kind, arg, arity in declared.arguments():
        supplied = values.get(kind, {})
        if arg not in supplied and arity != _OPTIONAL:
            missing.append(f"{kind}.{arg}")
        value = supplied.get(arg, [])
        given[kind][arg] = ([value] if isinstance(value, (str, Path)) else list(value)) if arity else value
    if missing:
        raise ValueError(f"job {name} needs {', '.join(missing)}")
    job_args = SimpleNamespace(
        **{kind: SimpleNamespace(**named) for kind, named in given.items()},
        name=name,
        settings=Settings.from_config(config),
        progress=progress,
        force=force,
    )
    with provenance.recording(config):  # every table and figure the job writes says what produced it
        return declared.function(config, job_args)


def index_wildcard(name: str) -> bool:
    return name in INDEX_WILDCARDS


def wildcard_choices(name: str) -> Sequence[str] | None:
    """Values a wildcard may take when the set is fixed by the package (the unlearning methods)."""
    return plan.UNLEARNING_METHODS if name == "method" else None


def report(written: Any) -> None:
    """Say on stderr (the job's log) what the job wrote."""
    items = written if isinstance(written, (list, tuple)) else [written]
    print("wrote " + ", ".join(str(p) for p in items if p is not None), file=sys.stderr)
