"""Every result file of an experiment, named in one place.

Standard library only: the Snakefile builds its rules from these names, and the package's jobs
receive the paths as arguments, so nothing else spells a result path and nothing parses one back
(files carry their own seed, group and replicate).

Each method takes concrete values or Snakemake wildcard placeholders: ``paths.training_run(0)``
is a directory, ``paths.training_run("{seed}")`` is the rule's output pattern.

Three different indices, three names:
    seed       training seed of an original model (config ``seeds``)
    run        unlearning run u of a (method, group); it starts from ``plan.original_seed(u)``
    replicate  oracle replicate r of a group, retrained from scratch with seed ``plan.oracle_seed(r)``
"""

from __future__ import annotations

from dataclasses import dataclass

# wildcards that hold a non-negative integer index; they name files as <name><value>
INDEX_WILDCARDS = ("seed", "run", "replicate", "model", "part")
FIGURE_FORMATS = ("png", "pdf", "csv")


@dataclass(frozen=True)
class ResultPaths:
    """The files of experiment `experiment`, relative to the checkout (or to `root`)."""

    experiment: str
    root: str = "."

    @property
    def results(self) -> str:
        return self._under("results")

    @property
    def figures(self) -> str:
        return self._under("figures")

    def _under(self, top: str) -> str:
        prefix = "" if self.root in ("", ".") else f"{self.root.rstrip('/')}/"
        return f"{prefix}{top}/{self.experiment}"

    # -- configuration, logs and benchmarks -------------------------------------------------
    def run_config(self, digest: str) -> str:
        """The config of one invocation, named by the digest of its content (never rewritten)."""
        return f"{self.results}/configs/{digest}.yaml"

    def log(self, job: str, wildcards: tuple[str, ...] = ()) -> str:
        return f"{self.results}/logs/{job_stem(job, wildcards)}.log"

    def benchmark(self, job: str, wildcards: tuple[str, ...] = ()) -> str:
        return f"{self.results}/benchmarks/{job_stem(job, wildcards)}.tsv"

    # -- original models and privacy losses -------------------------------------------------
    def training_run(self, seed) -> str:
        """Directory of one original model: weights, checkpoints, dynamics, history."""
        return f"{self.results}/train/seed{seed}"

    def grad_norms(self, seed) -> str:
        return f"{self.results}/privacy/seed{seed}/norms.npz"

    def grad_norms_part(self, seed, part) -> str:
        """One share of a run's checkpoints (privacy.norm_jobs > 1), merged into grad_norms."""
        return f"{self.results}/privacy/seed{seed}/norms_part{part}.npz"

    @property
    def privacy_table(self) -> str:
        return f"{self.results}/privacy/privacy_loss.parquet"

    @property
    def privacy_long(self) -> str:
        return f"{self.results}/privacy/privacy_long.parquet"

    @property
    def worst_case(self) -> str:
        return f"{self.results}/privacy/worst_case.csv"

    @property
    def robustness(self) -> str:
        return f"{self.results}/privacy/robustness.csv"

    # -- difficulty proxies -----------------------------------------------------------------
    def holdout(self, model) -> str:
        return f"{self.results}/proxies/holdout/model{model}.npz"

    @property
    def proxies(self) -> str:
        return f"{self.results}/proxies/proxies.parquet"

    @property
    def correlations(self) -> str:
        return f"{self.results}/proxies/correlations.csv"

    # -- per-example scores and forget groups -----------------------------------------------
    @property
    def scores(self) -> str:
        return f"{self.results}/scores.parquet"

    @property
    def groups(self) -> str:
        return f"{self.results}/groups.csv"

    # -- oracles and unlearning runs --------------------------------------------------------
    def oracle_evaluation(self, score, group, replicate) -> str:
        return f"{self.results}/oracles/{score}/{group}/replicate{replicate}.npz"

    def oracle_model(self, score, group, replicate) -> str:
        return f"{self.results}/oracles/{score}/{group}/replicate{replicate}.pt"

    def unlearning(self, method, score, group, run) -> dict[str, str]:
        """The files of one unlearning run: its curve, per-evaluation forget records, final
        evaluation, final weights, and the weights after barrier.unlearning_steps steps."""
        stem = f"{self.results}/unlearn/{method}/{score}/{group}/run{run}"
        return {
            "curve": f"{stem}.csv",
            "examples": f"{stem}_forget.parquet",
            "final": f"{stem}_final.npz",
            "model": f"{stem}.pt",
            "barrier_model": f"{stem}_barrier.pt",
        }

    @property
    def steps(self) -> str:
        return f"{self.results}/steps.csv"

    @property
    def steps_summary(self) -> str:
        return f"{self.results}/steps_summary.csv"

    @property
    def curves(self) -> str:
        return f"{self.results}/curves.parquet"

    @property
    def theory_fits(self) -> str:
        return f"{self.results}/theory_fits.csv"

    @property
    def unlearning_examples(self) -> str:
        return f"{self.results}/unlearning_examples.parquet"

    @property
    def difficulty_correlations(self) -> str:
        return f"{self.results}/difficulty_correlations.csv"

    @property
    def survival(self) -> str:
        return f"{self.results}/survival.csv"

    # -- predicted unlearning budgets (beside the steps table) ------------------------------
    @property
    def budget_calibration(self) -> str:
        """The budget rule per unlearning method, fitted on every run (`perinstance forget` reads it)."""
        return f"{self.results}/budget_calibration.json"

    @property
    def budget_validation(self) -> str:
        """One row per held-out (method, group, run): predicted and fixed budgets against the measurement."""
        return f"{self.results}/budget_validation.csv"

    @property
    def budget_validation_summary(self) -> str:
        return f"{self.results}/budget_validation_summary.csv"

    # -- loss barriers ----------------------------------------------------------------------
    def spawned_oracle(self, score, group) -> str:
        return f"{self.results}/barriers/spawned/{score}/{group}.pt"

    def barrier_paths(self, score, group) -> str:
        return f"{self.results}/barriers/{score}/{group}.parquet"

    @property
    def barrier_examples(self) -> str:
        return f"{self.results}/barriers/barriers.csv"

    # -- figures and the claims table -------------------------------------------------------
    def figure(self, name) -> dict[str, str]:
        """A figure is a PNG, the same figure as PDF, and the CSV of the numbers it draws."""
        return {fmt: f"{self.figures}/{name}.{fmt}" for fmt in FIGURE_FORMATS}

    @property
    def claims(self) -> dict[str, str]:
        return {"csv": f"{self.figures}/results.csv", "markdown": f"{self.figures}/results.md"}


def job_stem(job: str, wildcards: tuple[str, ...] = ()) -> str:
    """`job/<w1>/<w2>...` with Snakemake placeholders: index wildcards read `seed{seed}`."""
    parts = [job] + [f"{w}{{{w}}}" if w in INDEX_WILDCARDS else f"{{{w}}}" for w in wildcards]
    return "/".join(parts)
