"""Figures: each is a PNG + PDF with the tidy table it was drawn from (CSV) beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")  # figures are written to files on headless machines and cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
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
