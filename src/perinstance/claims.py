"""The paper's claims against what an experiment measured: one row per claim, with its CI and a verdict.

A verdict is read off a 95% interval, never off a point estimate: "holds" when the whole interval
lies on the claimed side of 0, "contradicted" when it lies on the other side, and "not resolved at this
scale" otherwise. The table is rendered as Markdown beside the figures (results.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .difficulty import verdict

COLUMNS = ["claim", "method", "statistic", "estimate", "low", "high", "n", "verdict", "source"]


def _row(
    claim: str,
    method: str,
    statistic: str,
    estimate: float,
    low: float,
    high: float,
    n: Any,
    source: str,
    given_verdict: str | None = None,
) -> dict[str, Any]:
    return {
        "claim": claim,
        "method": method,
        "statistic": statistic,
        "estimate": estimate,
        "low": low,
        "high": high,
        "n": n,
        "verdict": given_verdict or verdict(low, high),
        "source": source,
    }


def claims_table(
    correlations: pd.DataFrame,
    fits: pd.DataFrame,
    barriers: pd.DataFrame | None = None,
    *,
    sources: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Claims 3, 4 and 5 as measured.

    sources: the `source` column's name for each of correlations, fits and barriers (the workflow
    gives the tables' file names); by default the argument names.
    correlations: difficulty_correlations.csv (per method, difficulty metric and score); the rows of
    `needs_unlearning` and of the mean normalised gap are used. fits: theory_fits.csv.
    barriers: the F6 summary (F6_loss_barriers.csv): per pair, rho(barrier, P) over the uniformly random
    sample (`spearman_random` with its CI and `n_random`); optional.
    """
    sources = {"correlations": "correlations", "fits": "fits", "barriers": "barriers", **(sources or {})}
    rows = []
    keep = correlations["difficulty"].eq("needs_unlearning") | correlations["difficulty"].str.startswith(
        "mean_gap"
    )
    for (metric, method), part in correlations[keep].groupby(["difficulty", "method"], sort=False):
        part = part.set_index("score")
        reference = part["reference"].iloc[0]
        ref = part.loc[reference]
        units = f"{int(ref['n_units'])} examples x {int(ref['n_seeds'])} seeds"
        claim3 = (
            "3: higher P(x, 4α), more likely to need unlearning (every forget example)"
            if metric == "needs_unlearning"
            else "3: higher P(x, 4α), harder to unlearn (examples that needed it)"
        )
        rows.append(
            _row(
                claim3,
                method,
                f"Spearman ρ({metric}, {reference})",
                ref["rho"],
                ref["rho_low"],
                ref["rho_high"],
                units,
                sources["correlations"],
                ref["rho_verdict"],
            )
        )
        for score, other in part.drop(index=reference).iterrows():
            what = "which examples need unlearning" if metric == "needs_unlearning" else "difficulty"
            claim = (
                f"seed-consistent P ({what}): the run's own original model vs the seed mean"
                if score.endswith("own_seed")
                else f"4: P predicts {what} better than {score}"
            )
            rows.append(
                _row(
                    claim,
                    method,
                    f"ρ({reference}) − ρ({score})",
                    other["rho_minus_reference"],
                    other["difference_low"],
                    other["difference_high"],
                    units,
                    sources["correlations"],
                    other["verdict"],
                )
            )
    for fit in fits.itertuples():
        if not getattr(fit, "fitted", False):
            rows.append(
                {
                    "claim": "3: steps grow like log P (group level)",
                    "method": fit.method,
                    "statistic": "Tobit scale of steps ~ log P",
                    "estimate": np.nan,
                    "low": np.nan,
                    "high": np.nan,
                    "n": 0,
                    "verdict": verdict(np.nan, np.nan),
                    "source": sources["fits"],
                }
            )
            continue
        rows.append(
            _row(
                "3: steps grow like log P (group level)",
                fit.method,
                f"Tobit scale of steps ~ log P over groups {fit.groups_used}",
                fit.scale,
                fit.scale_low,
                fit.scale_high,
                f"{int(fit.n_runs)} runs ({int(fit.n_censored)} censored)",
                sources["fits"],
            )
        )
    if barriers is not None and "spearman_random" in barriers:
        for row in barriers.drop_duplicates("pair").itertuples():
            if row.n_random == 0:  # a method not run on the random groups has no population value
                continue
            rows.append(
                _row(
                    "5: higher P, larger loss barrier (uniformly random sample)",
                    row.pair,
                    "Spearman ρ(barrier, P(x, α))",
                    row.spearman_random,
                    row.spearman_random_ci_low,
                    row.spearman_random_ci_high,
                    int(row.n_random),
                    sources["barriers"],
                )
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def render_markdown(table: pd.DataFrame, *, experiment: str, ci: float) -> str:
    """The claims table as Markdown, numbers rounded for reading."""
    lines = [
        f"# Claims measured in experiment `{experiment}`",
        "",
        f"Each estimate comes with its {ci:.0%} bootstrap interval; the verdict is read off the interval.",
        "Generated by the workflow from the tables named in the last column; do not edit by hand.",
        "",
        "| claim | method | statistic | estimate [CI] | n | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        estimate = (
            "n/a" if not np.isfinite(row.estimate) else f"{row.estimate:.3g} [{row.low:.3g}, {row.high:.3g}]"
        )
        lines.append(
            f"| {row.claim} | {row.method} | {row.statistic} | {estimate} | {row.n} | {row.verdict} |"
        )
    return "\n".join(lines) + "\n"
