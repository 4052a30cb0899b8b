"""Figures of the unlearning results.

F2/F3 (steps vs privacy loss), F5 (hard groups), F8 (claims as correlations).

Every censored value is drawn as a lower bound (open marker with an upward arrow, hatched bar, or a
survival curve that has not reached 0), and an uncensored statistic stands beside every step count:
the per-example remaining gap to the oracle reference after a fixed budget of steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import NullFormatter

from .figures import save_figure

CENSORED_NOTE = "open ▲ = censored: a lower bound (not unlearned by then)"
# a group mean of the normalised gap over fewer examples than this is not drawn: a single example
# just outside its band has a tiny step-0 gap and an arbitrarily large normalised gap
MIN_EXAMPLES_FOR_GROUP_GAP = 5


def _privacy_order(examples: pd.DataFrame) -> list[str]:
    """Privacy-loss groups from least to most private (by their mean P(x, 4α))."""
    rows = examples[examples["score"] == "privacy_loss"].groupby("group")["privacy_loss_4alpha"].mean()
    return rows.sort_values().index.tolist()


def _mean_ci(
    values: np.ndarray, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI over the given values (NaN dropped)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (n_boot, values.size))].mean(axis=1)
    tail = (1 - ci) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(values.mean()), float(low), float(high)


def _mean_ci_line(ax: plt.Axes, x, rows: pd.DataFrame, **style) -> None:
    """Means (`mean`) joined by a line, with their intervals (`low`, `high`) as error bars."""
    yerr = [rows["mean"] - rows["low"], rows["high"] - rows["mean"]]
    ax.errorbar(x, rows["mean"], yerr=yerr, fmt="o-", capsize=3, **style)


def group_gap_table(examples: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (method, score, group): mean of an uncensored per-example statistic with a bootstrap CI over
    examples (NaN below MIN_EXAMPLES_FOR_GROUP_GAP examples that needed unlearning)."""
    rows = []
    for (method, score, group), part in examples.groupby(["method", "score", "group"], sort=True):
        mean, low, high = _mean_ci(part[metric].to_numpy())
        if part[metric].notna().sum() < MIN_EXAMPLES_FOR_GROUP_GAP:
            mean = low = high = float("nan")
        rows.append(
            {
                "method": method,
                "score": score,
                "group": group,
                "metric": metric,
                "mean": mean,
                "low": low,
                "high": high,
                "n_needed": int((~part["inside_at_step0"]).sum()),
                "n_inside_at_step0": int(part["inside_at_step0"].sum()),
                "privacy_loss_4alpha": float(part["privacy_loss_4alpha"].mean()),
                "gap_step0": float(part["gap_step0"].mean()),
            }
        )
    return pd.DataFrame(rows)


def _draw_runs(ax: plt.Axes, runs: pd.DataFrame, palette: dict, k_max: int) -> None:
    """Steps per run: filled = measured, open with an arrow = censored (lower bound)."""
    for row in runs.itertuples():
        color = palette.get(row.group, "0.5")
        if row.censored:
            ax.scatter(
                row.privacy_loss_4alpha,
                row.steps,
                marker="^",
                s=46,
                facecolor="none",
                edgecolor=color,
                lw=1.2,
            )
            ax.annotate(
                "",
                (row.privacy_loss_4alpha, row.steps * 1.08 + 20),
                (row.privacy_loss_4alpha, row.steps),
                arrowprops={"arrowstyle": "->", "color": color, "lw": 0.8},
            )
        else:
            ax.scatter(
                row.privacy_loss_4alpha, row.steps, marker="o", s=40, color=color, edgecolor="k", lw=0.5
            )
    ax.axhline(k_max, color="0.6", ls=":", lw=1)
    ax.text(ax.get_xlim()[0], k_max, " K_max", va="bottom", fontsize=7, color="0.4")


def plot_steps(
    steps: pd.DataFrame,
    examples: pd.DataFrame,
    curves: pd.DataFrame,
    methods: Sequence[str],
    fits: dict[str, dict | None],
    png_path: str | Path,
    *,
    k_max: int,
    metric: str,
    title: str = "",
    figure: str = "",
) -> list[Path]:
    """F2 / F3, one row per method: steps to unlearn per run against the group's P(x, 4α) with the fitted
    trend (only over groups that needed unlearning, censored runs as lower bounds), the uncensored
    remaining gap per group, and the forget-loss curves against their oracle bands."""
    sns.set_theme(style="whitegrid", context="notebook")
    order = _privacy_order(examples)
    palette = dict(zip(order, sns.color_palette("viridis", len(order))))
    fig, axes = plt.subplots(len(methods), 3, figsize=(18, 4.6 * len(methods)), squeeze=False)
    tables = []
    gaps = group_gap_table(examples[examples["score"] == "privacy_loss"], metric)
    for (ax_steps, ax_gap, ax_curve), method in zip(axes, methods):
        runs = steps[(steps["method"] == method) & (steps["score"] == "privacy_loss")]
        _draw_runs(ax_steps, runs, palette, k_max)
        fit = fits.get(method)
        if fit is not None:
            used = runs[runs["group"].isin(fit["groups_used"])]
            grid = np.geomspace(used["privacy_loss_4alpha"].min(), used["privacy_loss_4alpha"].max(), 50)
            ax_steps.plot(
                grid,
                fit["predict"](grid),
                "--",
                color="tab:red",
                label=(
                    f"Tobit fit {fit['scale']:.0f}·log P + {fit['offset']:.0f} over {fit['n']} runs of "
                    f"{len(fit['groups_used'])} groups ({fit['n_censored']} censored)"
                ),
            )
        inside = sorted(set(runs["group"]) - set(fit["groups_used"] if fit else []))
        if inside:
            ax_steps.plot([], [], " ", label=f"not fitted (inside the band at step 0): {', '.join(inside)}")
        ax_steps.set_xscale("log")
        ax_steps.set_xlabel("group mean P(x, 4α) (nats, log scale)")
        ax_steps.set_ylabel("steps to unlearn the group (per run)")
        ax_steps.set_title(f"{method}: first passage into the oracle band\n{CENSORED_NOTE}", fontsize=10)
        ax_steps.legend(fontsize=7, loc="upper left")
        mine = gaps[gaps["method"] == method].sort_values("privacy_loss_4alpha")
        _mean_ci_line(ax_gap, mine["privacy_loss_4alpha"], mine, color="0.25", ecolor="0.5")
        for row in mine.itertuples():
            ax_gap.annotate(
                f"{row.group} ({row.n_inside_at_step0} of {row.n_needed + row.n_inside_at_step0} inside "
                "at step 0)",
                (row.privacy_loss_4alpha, row.mean),
                fontsize=6,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax_gap.set_xscale("log")
        ax_gap.set_xlabel("group mean P(x, 4α) (nats, log scale)")
        ax_gap.set_ylabel(f"{metric.replace('_', ' ')} (fraction of the step-0 gap)")
        ax_gap.set_title(
            f"{method}: uncensored difficulty, mean ± 95% CI over examples\n"
            "(examples outside their band at step 0 only)",
            fontsize=10,
        )
        part = curves[(curves["method"] == method) & (curves["score"] == "privacy_loss")]
        for group in order:
            g = part[part["group"] == group]
            if g.empty:
                continue
            mean = g.groupby("step")["forget_loss"].mean()
            ax_curve.plot(mean.index, mean.values, color=palette[group], label=group)
            center, half = g["band_center"].iloc[0], g["band_half_width"].iloc[0]
            ax_curve.axhspan(center - half, center + half, color=palette[group], alpha=0.12)
        ax_curve.set_xlabel("unlearning step")
        ax_curve.set_ylabel("mean forget loss (nats; shaded: oracle band)")
        ax_curve.set_title(f"{method}: forget loss, mean over seeds", fontsize=10)
        ax_curve.legend(fontsize=7, title="group (low → high P)", title_fontsize=8)
        tables.append(mine)
    fig.suptitle(f"{title} {figure}".strip())
    fig.tight_layout()
    return save_figure(fig, pd.concat(tables, ignore_index=True), png_path)


def _comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """The `high` groups of every score and the random groups, labelled by what chose them."""
    chosen = frame[(frame["group"] == "high") | (frame["score"] == "random")].copy()
    chosen["chosen by"] = np.where(chosen["score"] == "random", chosen["group"], chosen["score"])
    return chosen


def plot_hard_groups(
    steps: pd.DataFrame,
    examples: pd.DataFrame,
    survival: pd.DataFrame,
    method: str,
    png_path: str | Path,
    *,
    k_max: int,
    metric: str,
    title: str = "",
) -> list[Path]:
    """F5: which score finds the hardest-to-unlearn group? Survival of the forget examples, the
    uncensored remaining gap with its CI, and the group-level steps with censoring shown."""
    runs = _comparison(steps[steps["method"] == method])
    if runs.empty:
        raise ValueError(f"no `high` or random groups were unlearned with {method}")
    gaps = _comparison(group_gap_table(examples[examples["method"] == method], metric))
    order = gaps.sort_values("mean", ascending=False)["chosen by"].tolist()
    palette = dict(zip(order, sns.color_palette("tab10", len(order))))
    sns.set_theme(style="whitegrid", context="notebook")
    fig, (ax_km, ax_gap, ax_steps) = plt.subplots(1, 3, figsize=(18, 4.8))
    curves = _comparison(survival[survival["method"] == method]) if not survival.empty else pd.DataFrame()
    for label in order:
        part = curves[curves["chosen by"] == label] if not curves.empty else curves
        if part.empty:
            continue
        unlearned = 1 - part["survival"].to_numpy()
        ax_km.step(
            part["step"],
            unlearned,
            where="post",
            color=palette[label],
            label=f"{label} (n = {int(part['n_examples'].iloc[0])})",
        )
        ax_km.fill_between(
            part["step"],
            np.clip(unlearned - 1.96 * part["se"], 0, 1),
            np.clip(unlearned + 1.96 * part["se"], 0, 1),
            step="post",
            color=palette[label],
            alpha=0.1,
        )
    ax_km.set_xlim(0, k_max)
    ax_km.set_ylim(0, 1)
    ax_km.set_xlabel("unlearning step")
    ax_km.set_ylabel("fraction of forget examples unlearned")
    ax_km.set_title(
        "Kaplan-Meier, examples outside their band at step 0\n"
        "(a curve below 1 at K_max: the rest are censored)",
        fontsize=10,
    )
    ax_km.legend(fontsize=7, title="chosen by", title_fontsize=8)
    by_label = gaps.set_index("chosen by").loc[order]
    ax_gap.errorbar(
        np.arange(len(order)),
        by_label["mean"],
        yerr=[by_label["mean"] - by_label["low"], by_label["high"] - by_label["mean"]],
        fmt="none",
        ecolor="0.3",
        capsize=4,
    )
    for i, label in enumerate(order):
        row = by_label.loc[label]
        if not np.isfinite(row["mean"]):
            ax_gap.annotate(
                f"{int(row['n_needed'])} examples outside\ntheir band at step 0:\ntoo few to draw",
                (i, 0.5),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                ha="center",
            )
            continue
        ax_gap.scatter(i, row["mean"], color=palette[label], s=50, zorder=3)
        ax_gap.annotate(
            f"step-0 gap {row['gap_step0']:+.2f} nats",
            (i, row["high"]),
            fontsize=7,
            ha="center",
            xytext=(0, 4),
            textcoords="offset points",
        )
    ax_gap.set_xticks(np.arange(len(order)), order, rotation=20)
    ax_gap.set_ylabel(f"{metric.replace('_', ' ')} (fraction of the step-0 gap)")
    ax_gap.set_title("uncensored difficulty (higher = harder), mean ± 95% CI over examples", fontsize=10)
    for i, label in enumerate(order):
        part = runs[runs["chosen by"] == label]
        for j, row in enumerate(part.itertuples()):
            x = i + (j - (len(part) - 1) / 2) * 0.18
            if row.censored:
                ax_steps.bar(x, row.steps, width=0.16, facecolor="none", edgecolor=palette[label], hatch="//")
                ax_steps.text(x, row.steps, "≥", ha="center", va="bottom", fontsize=8)
            else:
                ax_steps.bar(x, row.steps, width=0.16, color=palette[label])
                if row.steps == 0:
                    ax_steps.text(x, 0, "0", ha="center", va="bottom", fontsize=8)
    ax_steps.axhline(k_max, color="0.6", ls=":", lw=1)
    ax_steps.set_xticks(np.arange(len(order)), order, rotation=20)
    ax_steps.set_ylabel(f"steps to unlearn the group ({method}, per run)")
    ax_steps.set_title("group first passage; hatched ≥ = censored (lower bound)", fontsize=10)
    fig.suptitle(f"{title} F5: which score finds the hardest-to-unlearn group? ({method})".strip())
    fig.tight_layout()
    return save_figure(fig, gaps.drop(columns="chosen by"), png_path)


def plot_difficulty(correlations: pd.DataFrame, png_path: str | Path, *, title: str = "") -> list[Path]:
    """F8: Spearman ρ(per-example difficulty, score) with CIs, and the paired ρ(P) − ρ(proxy) with CIs."""
    if correlations.empty:
        raise ValueError("no per-example correlations to draw (did any forget example need unlearning?)")
    sns.set_theme(style="whitegrid", context="notebook")
    methods = sorted(correlations["method"].unique())
    metrics = list(dict.fromkeys(correlations["difficulty"]))
    fig, axes = plt.subplots(
        len(metrics), 2, figsize=(14, 0.9 + 2.6 * len(metrics) * max(1, len(methods) / 2)), squeeze=False
    )
    colors = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    for (ax_rho, ax_diff), metric in zip(axes, metrics):
        part = correlations[correlations["difficulty"] == metric]
        scores = list(dict.fromkeys(part["score"]))
        for k, method in enumerate(methods):
            rows = part[part["method"] == method].set_index("score").reindex(scores)
            y = np.arange(len(scores)) + (k - (len(methods) - 1) / 2) * 0.22
            ax_rho.errorbar(
                rows["rho"],
                y,
                xerr=[rows["rho"] - rows["rho_low"], rows["rho_high"] - rows["rho"]],
                fmt="o",
                color=colors[method],
                capsize=3,
                label=(
                    f"{method} (n = {int(rows['n_units'].max())} examples, "
                    f"{int(rows['n_seeds'].max())} seeds)"
                ),
            )
            others = rows.iloc[1:]
            ax_diff.errorbar(
                others["rho_minus_reference"],
                y[1:],
                xerr=[
                    others["rho_minus_reference"] - others["difference_low"],
                    others["difference_high"] - others["rho_minus_reference"],
                ],
                fmt="s",
                color=colors[method],
                capsize=3,
            )
            for yy, row in zip(y[1:], others.itertuples()):
                ax_diff.annotate(
                    row.verdict,
                    (row.difference_high, yy),
                    fontsize=6,
                    xytext=(4, -2),
                    textcoords="offset points",
                )
        for ax in (ax_rho, ax_diff):
            ax.axvline(0, color="0.3", lw=0.8)
            ax.set_yticks(np.arange(len(scores)), scores)
            ax.invert_yaxis()
        reference = part["reference"].iloc[0]
        ax_rho.set_xlabel(f"Spearman ρ(difficulty, score); difficulty = {metric.replace('_', ' ')}")
        ax_rho.set_title(
            "claim 3: does the score predict per-example unlearning difficulty? (95% CI)", fontsize=10
        )
        ax_rho.legend(fontsize=7, loc="lower right")
        ax_diff.set_xlabel(f"ρ({reference}) − ρ(score), paired bootstrap 95% CI")
        ax_diff.set_title("claim 4: does P predict it better than the proxy? (> 0: yes)", fontsize=10)
    return _save_bootstrap_figure(
        fig,
        f"{title} F8: unlearning difficulty per example vs privacy loss and proxies",
        correlations,
        png_path,
    )


def _save_bootstrap_figure(fig: plt.Figure, heading: str, table: pd.DataFrame, png_path) -> list[Path]:
    """Title a figure of per-example bootstrap intervals, lay it out and save it with its table."""
    fig.suptitle(f"{heading} (bootstrap over unlearning seeds and examples)".strip(), fontsize=11)
    fig.tight_layout()
    return save_figure(fig, table, png_path)


def methods_table(correlations: pd.DataFrame, steps: pd.DataFrame, metric: str) -> pd.DataFrame:
    """F9's table, one row per unlearning method: Spearman ρ(per-example difficulty `metric`,
    P(x, 4α)) with its CI and verdict (difficulty_correlations), and the ToW of the runs on the
    top privacy-loss group (the group of highest mean P(x, 4α)): mean, sd (ddof=1), run count and
    how many of those runs stopped above the oracle band (`overshot_runs`)."""
    reference = correlations[
        (correlations["difficulty"] == metric) & (correlations["score"] == "privacy_loss_4alpha")
    ]
    privacy = steps[steps["score"] == "privacy_loss"]
    top_group = privacy.groupby("group")["privacy_loss_4alpha"].mean().idxmax() if len(privacy) else None
    rows = []
    for method in sorted(set(steps["method"]) | set(reference["method"])):
        rho = reference[reference["method"] == method]
        top_runs = privacy[(privacy["method"] == method) & (privacy["group"] == top_group)]
        tow = top_runs["tow"].to_numpy()
        row = {"method": method, "difficulty": metric}
        row.update(
            rho.iloc[0][["rho", "rho_low", "rho_high", "rho_verdict", "n_units", "n_seeds"]].to_dict()
            if len(rho)
            else {
                "rho": np.nan,
                "rho_low": np.nan,
                "rho_high": np.nan,
                "rho_verdict": "no examples needed unlearning",
            }
        )
        row.update(
            top_group=top_group,
            tow_mean=float(tow.mean()) if tow.size else np.nan,
            tow_sd=float(tow.std(ddof=1)) if tow.size > 1 else np.nan,
            tow_runs=int(tow.size),
            # runs stopped above the oracle band (unlearning.stop_when_overshot): over-forgetting
            overshot_runs=int(top_runs["overshot"].sum()) if "overshot" in top_runs.columns else 0,
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _binned_means(x: np.ndarray, y: np.ndarray, bins: int = 5) -> pd.DataFrame:
    """Mean of y with a bootstrap CI in `bins` quantile bins of x (the bins' median x)."""
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        inside = which == b
        if inside.sum() == 0:
            continue
        mean, low, high = _mean_ci(y[inside], seed=b)
        rows.append(
            {"x": float(np.median(x[inside])), "mean": mean, "low": low, "high": high, "n": int(inside.sum())}
        )
    return pd.DataFrame(rows)


def plot_methods(
    examples: pd.DataFrame,
    correlations: pd.DataFrame,
    steps: pd.DataFrame,
    png_path: str | Path,
    *,
    metric: str,
    title: str = "",
) -> list[Path]:
    """F9: per-example unlearning difficulty against P(x, 4α) for every unlearning method.

    One panel per method: the forget examples that needed unlearning (each averaged over its
    unlearning seeds), in quantile bins of P(x, 4α), with the bins' mean difficulty and bootstrap CI
    over examples; the title gives ρ with its CI and verdict and the ToW of the top privacy-loss
    group. The last panel sets the methods' ρ side by side: for which of them does the relation hold?
    """
    table = methods_table(correlations, steps, metric)
    if table.empty:
        raise ValueError("no unlearning methods to draw")
    sns.set_theme(style="whitegrid", context="notebook")
    methods = list(table["method"])
    ncols = min(4, len(methods) + 1)
    nrows = -(-(len(methods) + 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    colors = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    needed = examples[~examples["inside_at_step0"]]
    per_example = (
        needed.groupby(["method", "score", "group", "index"], sort=True)[[metric, "privacy_loss_4alpha"]]
        .mean()
        .reset_index()
    )
    for ax, row in zip(axes.flat, table.itertuples()):
        part = per_example[(per_example["method"] == row.method) & per_example[metric].notna()]
        if len(part):
            ax.scatter(part["privacy_loss_4alpha"], part[metric], s=5, alpha=0.25, color=colors[row.method])
            bins = _binned_means(part["privacy_loss_4alpha"].to_numpy(), part[metric].to_numpy())
            _mean_ci_line(ax, bins["x"], bins, color="0.15", label="bin mean, 95% CI")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a narrow log range overlap
            ax.legend(fontsize=7, loc="upper left")
        tow = (
            f"ToW (top group) {row.tow_mean:.3f} ± {row.tow_sd:.3f}, {row.tow_runs} runs"
            if row.tow_runs > 1
            else f"ToW (top group) {row.tow_mean:.3f}, {row.tow_runs} run"
        )
        if row.overshot_runs:
            tow += f", {row.overshot_runs} overshot the band"
        ax.set_title(
            f"{row.method}: ρ = {row.rho:.2f} [{row.rho_low:.2f}, {row.rho_high:.2f}]"
            f"\n{row.rho_verdict}; {tow}",
            fontsize=8,
        )
        ax.set_xlabel("P(x, 4α)")
        ax.set_ylabel(metric.replace("_", " "))
    forest = axes.flat[len(methods)]
    y = np.arange(len(table))
    forest.errorbar(
        table["rho"],
        y,
        xerr=[table["rho"] - table["rho_low"], table["rho_high"] - table["rho"]],
        fmt="none",
        ecolor="0.4",
        capsize=3,
    )
    forest.scatter(table["rho"], y, c=[colors[m] for m in methods], zorder=3)
    forest.axvline(0, color="0.3", lw=0.8)
    forest.set_yticks(y, [f"{m} (n = {n:.0f})" for m, n in zip(methods, table["n_units"].fillna(0))])
    forest.invert_yaxis()
    forest.set_xlabel("Spearman ρ(difficulty, P(x, 4α)), 95% CI")
    forest.set_title("does P predict difficulty? (CI above 0: holds)", fontsize=9)
    for ax in list(axes.flat)[len(methods) + 1 :]:
        ax.set_visible(False)
    return _save_bootstrap_figure(
        fig, f"{title} F9: per-example unlearning difficulty vs P(x, 4α) per method", table, png_path
    )
