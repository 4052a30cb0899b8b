"""Figures: each is a PNG + PDF with the tidy table it was drawn from (CSV) beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # figures are written to files on headless machines and cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from . import io  # noqa: E402


def save_figure(fig: plt.Figure, table: pd.DataFrame, png_path: str | Path) -> list[Path]:
    """Write `fig` as PNG and PDF and `table` as CSV next to them, all atomically."""
    png_path = Path(png_path)
    if png_path.suffix != ".png":
        raise ValueError(f"figure path {png_path} must end in .png")
    written = []
    for suffix in (".png", ".pdf"):
        target = png_path.with_suffix(suffix)
        with io.atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight")
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
