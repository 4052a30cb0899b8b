"""Figures: each is a PNG + PDF with the tidy table it was drawn from (CSV) beside it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import matplotlib

matplotlib.use("Agg")  # figures are written to files on headless machines and cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from . import io  # noqa: E402


@contextlib.contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed numpy's global generator for the block, then restore the caller's state."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def save_figure(fig: plt.Figure, table: pd.DataFrame, png_path: str | Path) -> list[Path]:
    """Write `fig` as PNG and PDF and `table` as CSV next to them, all atomically."""
    png_path = Path(png_path)
    if png_path.suffix != ".png":
        raise ValueError(f"figure path {png_path} must end in .png")
    written = []
    for suffix in (".png", ".pdf"):
        target = png_path.with_suffix(suffix)
        with io.atomic_path(target) as tmp:
            # no creation date in the PDF: the same results give byte-identical files
            metadata = {"CreationDate": None} if suffix == ".pdf" else None
            fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight", metadata=metadata)
        written.append(target)
    written.append(io.save_table(table, png_path.with_suffix(".csv")))
    plt.close(fig)
    return written


def training_curves_table(history_files: Iterable[tuple[int, str | Path]]) -> pd.DataFrame:
    """Tidy table (seed, epoch, split, metric, value) from the history.csv of each run."""
    frames = []
    for seed, path in history_files:
        history = io.load_table(path)
        long = history.melt(id_vars=["epoch", "step"], value_vars=[c for c in history if c.endswith(("_loss", "_accuracy"))])
        split_metric = long["variable"].str.split("_", n=1, expand=True)
        frames.append(pd.DataFrame({
            "seed": seed, "epoch": long["epoch"], "step": long["step"],
            "split": split_metric[0], "metric": split_metric[1], "value": long["value"],
        }))
    if not frames:
        raise ValueError("no training runs given for the training-curves figure")
    return pd.concat(frames, ignore_index=True)


def plot_training_curves(table: pd.DataFrame, png_path: str | Path, title: str = "") -> list[Path]:
    """F0: loss and accuracy on the train and test splits over epochs, one line per seed."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        sns.lineplot(
            data=table[table["metric"] == metric], x="epoch", y="value", hue="split", style="split",
            units="seed", estimator=None, ax=ax, alpha=0.8,
        )
        ax.set_ylabel(metric)
        if metric == "loss":
            ax.set_yscale("log")
    seeds = table["seed"].nunique()
    fig.suptitle(f"{title} training curves ({seeds} seed{'s' if seeds > 1 else ''})".strip())
    fig.tight_layout()
    return save_figure(fig, table, png_path)


def _show_image(ax: plt.Axes, image, mean, std) -> None:
    """Un-normalize a standardized CHW tensor and draw it without axes."""
    raw = image.numpy() * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
    raw = np.clip(raw.transpose(1, 2, 0), 0.0, 1.0)
    ax.imshow(raw[..., 0] if raw.shape[-1] == 1 else raw, cmap="gray" if raw.shape[-1] == 1 else None,
              vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_privacy_loss(scores: pd.DataFrame, dataset, png_path: str | Path, *, alpha: float,
                      grid: int = 4, title: str = "") -> list[Path]:
    """F1: distribution of log10 P(x, alpha) per class and the lowest / highest examples."""
    if (scores["privacy_loss"] <= 0).any():
        raise ValueError("privacy losses must be positive to be drawn on a log scale")
    count = grid * grid
    table = scores[["index", "label", "privacy_loss"]].copy()
    table["log10_privacy_loss"] = np.log10(table["privacy_loss"])
    table["rank"] = table["privacy_loss"].rank(method="first", ascending=False).astype(int)
    ordered = table.sort_values("privacy_loss")
    table["shown_as"] = ""
    table.loc[ordered.index[:count], "shown_as"] = "lowest"
    table.loc[ordered.index[-count:], "shown_as"] = "highest"
    class_name = {i: name for i, name in enumerate(dataset.class_names)}
    table["class"] = table["label"].map(class_name)

    sns.set_theme(style="whitegrid", context="notebook")
    fig = plt.figure(figsize=(15, 5.2))
    outer = fig.add_gridspec(1, 3, width_ratios=[1.3, 1, 1], wspace=0.15)
    ax = fig.add_subplot(outer[0])
    sns.boxenplot(data=table, x="log10_privacy_loss", y="class", ax=ax, color="tab:blue",
                  order=list(dataset.class_names)[: int(table["label"].max()) + 1])
    ax.set_xlabel(f"log10 P(x, α={alpha:g})")
    ax.set_title("per-instance privacy loss by class")
    position = {int(i): p for p, i in enumerate(dataset.train.index.tolist())}
    for slot, (which, rows) in enumerate((("lowest", ordered.head(count)), ("highest", ordered.tail(count)[::-1]))):
        cells = outer[slot + 1].subgridspec(grid, grid, wspace=0.05, hspace=0.35)
        for k, (_, row) in enumerate(rows.iterrows()):
            cell = fig.add_subplot(cells[k // grid, k % grid])
            _show_image(cell, dataset.train.x[position[int(row["index"])]], dataset.mean, dataset.std)
            cell.set_title(f"{class_name[int(row['label'])]}  {row['privacy_loss']:.2g}", fontsize=7, pad=2)
        pos = outer[slot + 1].get_position(fig)
        fig.text((pos.x0 + pos.x1) / 2, pos.y1 + 0.04, f"{count} {which} P (label, P)", ha="center", fontsize=11)
    fig.suptitle(f"{title} F1: per-instance privacy losses".strip(), y=1.04)
    return save_figure(fig, table.sort_values("rank"), png_path)


def plot_proxy_correlation(scores: pd.DataFrame, correlations: pd.DataFrame, png_path: str | Path, *,
                           class_names: Sequence[str], proxies: Sequence[str], title: str = "") -> list[Path]:
    """F4: Spearman heatmap (numbers in the cells) and log privacy loss vs each proxy, by class."""
    spearman = correlations[correlations["method"] == "spearman"]
    names = list(dict.fromkeys(list(spearman["x"]) + list(spearman["y"])))
    matrix = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for row in spearman.itertuples():
        matrix.loc[row.x, row.y] = matrix.loc[row.y, row.x] = row.value
    proxies = [p for p in proxies if p in scores]
    sns.set_theme(style="whitegrid", context="notebook")
    fig = plt.figure(figsize=(5.5 + 3.6 * len(proxies), 5.2))
    grid = fig.add_gridspec(1, 1 + len(proxies), width_ratios=[1.6] + [1] * len(proxies), wspace=0.35)
    ax = fig.add_subplot(grid[0])
    sns.heatmap(matrix, annot=True, fmt=".2f", vmin=-1, vmax=1, cmap="RdBu_r", square=True, cbar=False, ax=ax,
                annot_kws={"fontsize": 8})
    ax.set_title("Spearman ρ (higher = harder / more private)")
    log_p = np.log10(scores["privacy_loss"])
    classes = scores["label"].map(dict(enumerate(class_names)))
    for k, proxy in enumerate(proxies):
        ax = fig.add_subplot(grid[k + 1])
        sns.scatterplot(x=scores[proxy], y=log_p, hue=classes, s=6, alpha=0.5, linewidth=0, ax=ax,
                        legend=k == len(proxies) - 1, palette="tab10")
        row = spearman[((spearman["x"] == "privacy_loss") & (spearman["y"] == proxy))
                       | ((spearman["y"] == "privacy_loss") & (spearman["x"] == proxy))]
        if len(row):
            r = row.iloc[0]
            ax.set_title(f"ρ = {r.value:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]", fontsize=10)
        ax.set_xlabel(proxy)
        ax.set_ylabel("log10 P(x, α)" if k == 0 else "")
    if proxies:
        ax.legend(title="class", bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=7, markerscale=2)
    fig.suptitle(f"{title} F4: privacy loss vs difficulty proxies".strip(), y=1.02)
    return save_figure(fig, correlations, png_path)


def _group_order(summary: pd.DataFrame) -> list[str]:
    """Privacy-loss groups from least to most private."""
    rows = summary[summary["score"] == "privacy_loss"].drop_duplicates("group").sort_values("privacy_loss_4alpha")
    return rows["group"].tolist()


def plot_steps(steps: pd.DataFrame, summary: pd.DataFrame, curves: pd.DataFrame, methods: Sequence[str],
               fits: dict[str, dict | None], png_path: str | Path, *, k_max: int, title: str = "",
               figure: str = "") -> list[Path]:
    """F2 / F3: steps-to-unlearn against the groups' privacy loss, with the fitted log trend, and
    the forget-loss curves against their oracle bands. One row per method."""
    sns.set_theme(style="whitegrid", context="notebook")
    order = _group_order(summary)
    palette = dict(zip(order, sns.color_palette("viridis", len(order))))
    fig, axes = plt.subplots(len(methods), 2, figsize=(13, 4.4 * len(methods)), squeeze=False)
    tables = []
    for (ax_steps, ax_curve), method in zip(axes, methods):
        runs = steps[(steps["method"] == method) & (steps["score"] == "privacy_loss")]
        groups = summary[(summary["method"] == method) & (summary["score"] == "privacy_loss")]
        for censored, marker in ((False, "o"), (True, "^")):
            part = runs[runs["censored"] == censored]
            ax_steps.scatter(part["privacy_loss_4alpha"], part["steps"], marker=marker, s=40,
                             c=[palette[g] for g in part["group"]], edgecolor="k", linewidth=0.5,
                             label="censored at K_max" if censored else "unlearned (per seed)")
        ax_steps.plot(groups.sort_values("privacy_loss_4alpha")["privacy_loss_4alpha"],
                      groups.sort_values("privacy_loss_4alpha")["steps_mean"], color="0.3", lw=1, label="mean over seeds")
        for g in groups.itertuples():
            note = " (inside band at step 0)" if g.n_inside_at_step0 == g.n_runs else ""
            ax_steps.annotate(f"{g.group}{note}", (g.privacy_loss_4alpha, g.steps_mean), fontsize=7,
                              xytext=(4, 4), textcoords="offset points")
        fit = fits.get(method)
        if fit is not None:
            grid = np.geomspace(groups["privacy_loss_4alpha"].min(), groups["privacy_loss_4alpha"].max(), 50)
            ax_steps.plot(grid, fit["predict"](grid), "--", color="tab:red",
                          label=f"fitted: {fit['scale']:.0f}·log P + {fit['offset']:.0f} (R²={fit['r2']:.2f})")
        ax_steps.axhline(k_max, color="0.6", ls=":", lw=1)
        ax_steps.set_xscale("log")
        ax_steps.set_xlabel("group mean P(x, 4α)")
        ax_steps.set_ylabel("steps to unlearn")
        ax_steps.set_title(f"{method}: steps to reach the oracle band")
        ax_steps.legend(fontsize=7, loc="upper left")
        mine = curves[(curves["method"] == method) & (curves["score"] == "privacy_loss")]
        for group in order:
            part = mine[mine["group"] == group]
            if part.empty:
                continue
            mean = part.groupby("step")["forget_loss"].mean()
            ax_curve.plot(mean.index, mean.values, color=palette[group], label=group)
            center, half = part["band_center"].iloc[0], part["band_half_width"].iloc[0]
            ax_curve.axhspan(center - half, center + half, color=palette[group], alpha=0.12)
        ax_curve.set_xlabel("unlearning step")
        ax_curve.set_ylabel("mean forget loss (shaded: oracle band)")
        ax_curve.set_title(f"{method}: forget loss, mean over seeds")
        ax_curve.legend(fontsize=7, title="group", title_fontsize=8)
        tables.append(groups)
    fig.suptitle(f"{title} {figure}".strip())
    fig.tight_layout()
    return save_figure(fig, pd.concat(tables, ignore_index=True), png_path)


def plot_hard_groups(steps: pd.DataFrame, summary: pd.DataFrame, method: str, png_path: str | Path, *,
                     k_max: int, title: str = "") -> list[Path]:
    """F5: steps-to-unlearn of the `high` group chosen by each score, against random groups."""
    chosen = steps[(steps["method"] == method) & ((steps["group"] == "high") | (steps["score"] == "random"))].copy()
    if chosen.empty:
        raise ValueError(f"no `high` or random groups were unlearned with {method}")
    chosen["chosen by"] = np.where(chosen["score"] == "random", chosen["group"], chosen["score"])
    order = (chosen.groupby("chosen by")["steps"].mean().sort_values(ascending=False).index.tolist())
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(1.3 * len(order) + 3, 4.2))
    sns.barplot(data=chosen, x="chosen by", y="steps", order=order, color="tab:blue", alpha=0.5, errorbar=None, ax=ax)
    with _seeded_global_numpy(0):  # seaborn draws the jitter from numpy's global generator
        sns.stripplot(data=chosen, x="chosen by", y="steps", order=order, hue="censored",
                      palette={False: "k", True: "tab:red"}, marker="o", size=6, jitter=0.15, ax=ax)
    ax.axhline(k_max, color="0.6", ls=":", lw=1)
    ax.set_ylabel(f"steps to unlearn ({method})")
    ax.set_xlabel("score that chose the group (top m) / random baseline")
    ax.legend(title="censored at K_max", fontsize=8)
    ax.tick_params(axis="x", rotation=20)
    fig.suptitle(f"{title} F5: which score finds the hardest-to-unlearn group?".strip())
    fig.tight_layout()
    table = summary[(summary["method"] == method) & ((summary["group"] == "high") | (summary["score"] == "random"))]
    return save_figure(fig, table, png_path)


def plot_robustness(table: pd.DataFrame, png_path: str | Path, *, title: str = "") -> list[Path]:
    """F7: Spearman rho and top-m overlap of each variant's privacy-loss ranking with the reference."""
    sns.set_theme(style="whitegrid", context="notebook")
    table = table.copy()
    table["label"] = table["factor"] + ": " + table["variant"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.38 * len(table) + 1.8), sharey=True)
    for ax, column, xlabel in ((axes[0], "spearman", "Spearman ρ with the reference ranking"),
                               (axes[1], "top_m_overlap", f"top-m overlap (m = {int(table['m'].iloc[0])})")):
        sns.barplot(data=table, y="label", x=column, hue="factor", dodge=False, ax=ax, legend=False)
        for patch, value in zip(ax.patches, table[column]):
            ax.text(min(value, 1.0) + 0.01, patch.get_y() + patch.get_height() / 2, f"{value:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, 1.1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("")
    fig.suptitle(f"{title} F7: robustness of the privacy-loss ranking".strip())
    fig.tight_layout()
    return save_figure(fig, table.drop(columns="label"), png_path)


def plot_barriers(examples: pd.DataFrame, curves: pd.DataFrame, summary: pd.DataFrame, png_path: str | Path, *,
                  title: str = "") -> list[Path]:
    """F6: mean loss excess over the straight line along lambda per group, and barrier vs privacy loss."""
    sns.set_theme(style="whitegrid", context="notebook")
    pairs = sorted(curves["pair"].unique())
    order = (examples.groupby("group")["privacy_loss"].mean().sort_values().index.tolist())
    palette = dict(zip(order, sns.color_palette("viridis", len(order))))
    fig, axes = plt.subplots(2, len(pairs), figsize=(5.2 * len(pairs), 8.4), squeeze=False)
    for k, pair in enumerate(pairs):
        ax = axes[0, k]
        part = curves[curves["pair"] == pair]
        for group in order:
            g = part[part["group"] == group]
            ax.plot(g["lambda"], g["excess"], color=palette[group], label=group)
        ax.set_title(f"original → {pair}")
        ax.set_xlabel("λ")
        ax.set_ylabel("mean loss above the straight line" if k == 0 else "")
        ax.legend(fontsize=7, title="group (by P)", title_fontsize=8)
        ax = axes[1, k]
        part = examples[examples["pair"] == pair]
        sns.scatterplot(data=part, x="privacy_loss", y="barrier", hue="group", hue_order=order, palette=palette,
                        s=14, alpha=0.7, linewidth=0, ax=ax, legend=False)
        ax.set_xscale("log")
        rho = summary[summary["pair"] == pair]["spearman_barrier_privacy"].iloc[0]
        ax.set_title(f"Spearman ρ(barrier, P) = {rho:.2f}  (n = {len(part)})", fontsize=10)
        ax.set_xlabel("P(x, α)")
        ax.set_ylabel("loss barrier" if k == 0 else "")
    fig.suptitle(f"{title} F6: loss barriers along linear paths".strip())
    fig.tight_layout()
    return save_figure(fig, summary, png_path)
