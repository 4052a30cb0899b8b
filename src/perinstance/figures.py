"""Figures: each is a PNG + PDF with the tidy table it was drawn from (CSV) beside it."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are written to files on headless machines and cluster nodes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from . import io, provenance  # noqa: E402


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
    """Write `fig` as PNG and PDF and `table` as CSV next to them, all atomically; inside a job all
    three carry its provenance (perinstance.provenance)."""
    png_path = Path(png_path)
    if png_path.suffix != ".png":
        raise ValueError(f"figure path {png_path} must end in .png")
    written = []
    record = provenance.current()
    for suffix in (".png", ".pdf"):
        target = png_path.with_suffix(suffix)
        with io.atomic_path(target) as tmp:
            # no creation date in the PDF: the same results give byte-identical files; inside a job
            # the provenance goes into the PNG's text chunks and the PDF's subject
            if suffix == ".pdf":
                metadata = {"CreationDate": None, **({"Subject": record.summary()} if record else {})}
            else:
                metadata = {provenance.METADATA_KEY: json.dumps(record.fields())} if record else None
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
        long = history.melt(
            id_vars=["epoch", "step"], value_vars=[c for c in history if c.endswith(("_loss", "_accuracy"))]
        )
        split_metric = long["variable"].str.split("_", n=1, expand=True)
        frames.append(
            pd.DataFrame(
                {
                    "seed": seed,
                    "epoch": long["epoch"],
                    "step": long["step"],
                    "split": split_metric[0],
                    "metric": split_metric[1],
                    "value": long["value"],
                }
            )
        )
    if not frames:
        raise ValueError("no training runs given for the training-curves figure")
    return pd.concat(frames, ignore_index=True)


def plot_training_curves(table: pd.DataFrame, png_path: str | Path, title: str = "") -> list[Path]:
    """F0: cross-entropy loss and accuracy on the full train and test splits over epochs.

    One line per seed.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axis = {
        "loss": ("cross-entropy loss\n(nats per example, log scale)", "mean cross-entropy loss"),
        "accuracy": ("accuracy\n(fraction of examples classified correctly)", "accuracy"),
    }
    for ax, metric in zip(axes, ("loss", "accuracy")):
        sns.lineplot(
            data=table[table["metric"] == metric],
            x="epoch",
            y="value",
            hue="split",
            style="split",
            units="seed",
            estimator=None,
            ax=ax,
            alpha=0.8,
        )
        ylabel, what = axis[metric]
        ax.set_ylabel(ylabel, fontsize=10)
        ax.set_xlabel("epoch (passes over the training set; 0 = initialisation)", fontsize=10)
        ax.set_title(f"{what} on the full train / test split", fontsize=11)
        ax.legend(title="split", fontsize=8, title_fontsize=9)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if metric == "loss":
            ax.set_yscale("log")
    seeds = table["seed"].nunique()
    fig.suptitle(
        f"{title} F0: training curves of the original models ({seeds} seed{'s' if seeds > 1 else ''}, "
        "one line per seed)".strip()
    )
    fig.tight_layout()
    return save_figure(fig, table, png_path)


def _show_image(ax: plt.Axes, image, mean, std) -> None:
    """Un-normalize a standardized CHW tensor and draw it without axes."""
    raw = image.numpy() * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
    raw = np.clip(raw.transpose(1, 2, 0), 0.0, 1.0)
    ax.imshow(
        raw[..., 0] if raw.shape[-1] == 1 else raw,
        cmap="gray" if raw.shape[-1] == 1 else None,
        vmin=0.0,
        vmax=1.0,
    )
    ax.set_xticks([])
    ax.set_yticks([])


# how worst_case.csv names the sensitivity of its data-independent bound
_WORST_CASE_SENSITIVITY = {"max observed": "max observed norm", "clip": "clip norm C"}


def _worst_case_at(worst_case: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """The rows of worst_case.csv (one per seed and order) at Rényi order alpha, one per seed."""
    missing = sorted({"seed", "order", "rdp", "sensitivity"} - set(worst_case.columns))
    if missing:
        raise ValueError(
            f"worst-case table lacks columns {missing} "
            "(expected the worst-case table of the privacy_loss job)"
        )
    rows = worst_case[np.isclose(worst_case["order"].to_numpy(dtype=np.float64), alpha)]
    if rows.empty:
        raise ValueError(
            f"worst-case table has no row for order α = {alpha:g} "
            f"(orders: {sorted(worst_case['order'].unique().tolist())})"
        )
    if rows["seed"].duplicated().any():
        raise ValueError(f"worst-case table repeats seeds at order α = {alpha:g}")
    if not (np.isfinite(rows["rdp"]) & (rows["rdp"] > 0)).all():
        raise ValueError("worst-case RDP must be positive and finite to be drawn on a log scale")
    return rows.sort_values("seed")


def plot_privacy_loss(
    scores: pd.DataFrame,
    dataset,
    png_path: str | Path,
    *,
    alpha: float,
    worst_case: pd.DataFrame,
    grid: int = 4,
    title: str = "",
) -> list[Path]:
    """F1: distribution of P(x, alpha) per class against the data-independent worst case, and the
    lowest / highest examples.

    `worst_case` is privacy/worst_case.csv: the RDP of the same accounting with every example's
    norm replaced by the sensitivity (max observed norm or clip), per seed; it is drawn at order
    alpha as a vertical line (mean over seeds) and a band (range over seeds). The CSV beside the
    figure holds the per-example rows (row_type example) and the worst case (row_type worst_case).
    """
    if (scores["privacy_loss"] <= 0).any():
        raise ValueError("privacy losses must be positive to be drawn on a log scale")
    wc = _worst_case_at(worst_case, alpha)
    wc_values = wc["rdp"].to_numpy(dtype=np.float64)
    sensitivity = ", ".join(_WORST_CASE_SENSITIVITY.get(s, str(s)) for s in dict.fromkeys(wc["sensitivity"]))
    n_seeds = sum(1 for c in scores.columns if re.fullmatch(r"privacy_loss_seed\d+", str(c))) or len(wc)
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
    sns.boxenplot(
        data=table,
        x="privacy_loss",
        y="class",
        ax=ax,
        color="tab:blue",
        log_scale=True,
        order=list(dataset.class_names)[: int(table["label"].max()) + 1],
    )
    mean = float(wc_values.mean())
    if len(wc_values) > 1:
        ax.axvspan(
            wc_values.min(),
            wc_values.max(),
            color="tab:red",
            alpha=0.15,
            lw=0,
            label=f"worst case, range over {len(wc_values)} seeds",
        )
    ax.axvline(
        mean,
        color="tab:red",
        ls="--",
        lw=1.5,
        label=(
            f"worst case ({sensitivity}), α = {alpha:g}: {mean:.3g} nats"
            + (f" (mean of {len(wc_values)} seeds)" if len(wc_values) > 1 else "")
            + f"\n= {mean / table['privacy_loss'].max():.3g}× the largest P(x, α)"
        ),
    )
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.16), fontsize=8, frameon=False)  # below the x label
    ax.set_xlabel(f"P(x, α={alpha:g}) (nats, Rényi DP, log scale)")
    ax.set_ylabel("class")
    ax.set_title(
        f"P(x, α) by class (mean over {n_seeds} seed{'s' if n_seeds != 1 else ''})\n"
        "vs the data-independent worst-case bound",
        fontsize=11,
    )
    position = {int(i): p for p, i in enumerate(dataset.train.index.tolist())}
    for slot, (which, rows) in enumerate(
        (("lowest", ordered.head(count)), ("highest", ordered.tail(count)[::-1]))
    ):
        cells = outer[slot + 1].subgridspec(grid, grid, wspace=0.05, hspace=0.35)
        for k, (_, row) in enumerate(rows.iterrows()):
            cell = fig.add_subplot(cells[k // grid, k % grid])
            _show_image(cell, dataset.train.x[position[int(row["index"])]], dataset.mean, dataset.std)
            cell.set_title(f"{class_name[int(row['label'])]}  {row['privacy_loss']:.2g}", fontsize=7, pad=2)
        pos = outer[slot + 1].get_position(fig)
        fig.text(
            (pos.x0 + pos.x1) / 2,
            pos.y1 + 0.04,
            f"{count} {which} P(x, α) (title: class, P in nats)",
            ha="center",
            fontsize=11,
        )
    fig.suptitle(
        f"{title} F1: per-instance privacy losses P(x, α={alpha:g}) (estimates, not DP guarantees)".strip(),
        y=1.06,
    )
    examples = table.sort_values("rank").assign(row_type="example")
    bound = pd.DataFrame(
        {
            "privacy_loss": wc_values,
            "log10_privacy_loss": np.log10(wc_values),
            "shown_as": [f"worst case ({_WORST_CASE_SENSITIVITY.get(s, str(s))})" for s in wc["sensitivity"]],
            "row_type": "worst_case",
            "seed": wc["seed"].to_numpy(),
        }
    )
    out = pd.concat([examples, bound], ignore_index=True)
    out = out.astype({c: "Int64" for c in ("index", "label", "rank", "seed")})
    return save_figure(fig, out, png_path)


# short names of the correlated scores (heatmap ticks) and the proxies' axis labels with their units
_SCORE_NAMES = {
    "privacy_loss": "P(x, α)",
    "privacy_loss_online": "P, online estimator",
    "el2n": "EL2N",
    "forgetting_events": "forgetting events",
    "learning_speed": "learning speed",
    "cscore_holdout": "C-score (holdout)",
    "cscore_published": "C-score (published)",
}
_PROXY_AXES = {
    "el2n": "EL2N: ‖softmax(f(x)) − onehot(y)‖₂ at the early epoch\n(unitless, 0–√2; mean over seeds)",
    "forgetting_events": "forgetting events: correct → incorrect flips\n(count per example; mean over seeds)",
    "learning_speed": "learning-speed hardness: 1 − cumulative\ntrain accuracy (fraction; mean over seeds)",
    "cscore_holdout": "C-score hardness: 1 − mean held-out\nprobability of the label (fraction)",
    "cscore_published": "C-score hardness: 1 − published C-score\n(fraction; Jiang et al. 2021)",
}


def _interval_text(r) -> str:
    """Title of one scatter panel.

    rho, the headline interval and, when seeds were resampled, the example-only one.
    """
    level = f"{r.ci_level:.0%} " if "ci_level" in r._fields and pd.notna(r.ci_level) else ""
    if "n_seeds" in r._fields and r.n_seeds > 0:
        return (
            f"ρ = {r.value:.2f}; {level}CI [{r.ci_low:.2f}, {r.ci_high:.2f}] (seeds + examples)\n"
            f"[{r.ci_low_examples:.2f}, {r.ci_high_examples:.2f}] (examples only)"
        )
    return f"ρ = {r.value:.2f}; {level}CI [{r.ci_low:.2f}, {r.ci_high:.2f}] (examples)"


def plot_proxy_correlation(
    scores: pd.DataFrame,
    correlations: pd.DataFrame,
    png_path: str | Path,
    *,
    class_names: Sequence[str],
    proxies: Sequence[str],
    alpha: float | None = None,
    title: str = "",
) -> list[Path]:
    """F4: Spearman heatmap (numbers in the cells) and P(x, alpha) (log axis) vs each proxy, by class.

    Each scatter panel is titled with rho and its intervals from `correlations` (proxies.correlations):
    the seed-and-example interval and, for pairs with per-seed columns, the example-only one.
    """
    spearman = correlations[correlations["method"] == "spearman"]
    names = list(dict.fromkeys(list(spearman["x"]) + list(spearman["y"])))
    matrix = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for row in spearman.itertuples():
        matrix.loc[row.x, row.y] = matrix.loc[row.y, row.x] = row.value
    matrix = matrix.rename(index=_SCORE_NAMES, columns=_SCORE_NAMES)
    proxies = [p for p in proxies if p in scores]
    if (scores["privacy_loss"] <= 0).any():
        raise ValueError("privacy losses must be positive to be drawn on a log scale")
    a = f"={alpha:g}" if alpha is not None else ""
    sns.set_theme(style="whitegrid", context="notebook")
    fig = plt.figure(figsize=(5.8 + 3.8 * len(proxies), 5.6))
    grid = fig.add_gridspec(1, 1 + len(proxies), width_ratios=[1.6] + [1] * len(proxies), wspace=0.4)
    ax = fig.add_subplot(grid[0])
    sns.heatmap(
        matrix,
        annot=True,
        fmt=".2f",
        vmin=-1,
        vmax=1,
        cmap="RdBu_r",
        square=True,
        cbar=False,
        ax=ax,
        annot_kws={"fontsize": 8},
    )
    ax.set_title(
        "cells: Spearman ρ between two scores (rank correlation,\nunitless; each sign-aligned: "
        "higher = harder / more private)",
        fontsize=9.5,
    )
    ax.set_xlabel("score")
    ax.set_ylabel("score")
    classes = scores["label"].map(dict(enumerate(class_names)))
    for k, proxy in enumerate(proxies):
        ax = fig.add_subplot(grid[k + 1])
        sns.scatterplot(
            x=scores[proxy],
            y=scores["privacy_loss"],
            hue=classes,
            s=6,
            alpha=0.5,
            linewidth=0,
            ax=ax,
            legend=k == len(proxies) - 1,
            palette="tab10",
        )
        ax.set_yscale("log")
        row = spearman[
            ((spearman["x"] == "privacy_loss") & (spearman["y"] == proxy))
            | ((spearman["y"] == "privacy_loss") & (spearman["x"] == proxy))
        ]
        if len(row):
            ax.set_title(_interval_text(next(row.itertuples())), fontsize=8.5)
        ax.set_xlabel(_PROXY_AXES.get(proxy, proxy), fontsize=9)
        ax.set_ylabel(f"P(x, α{a}) (nats, Rényi DP, log scale)" if k == 0 else "")
    if proxies:
        ax.legend(title="class", bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=7, markerscale=2)
    resampled = spearman[spearman["x"].eq("privacy_loss") | spearman["y"].eq("privacy_loss")]
    how = ""
    if len(resampled) and {"n_seeds", "n_boot"} <= set(resampled.columns):
        r = resampled.iloc[0]
        seeds = f"{int(r.n_seeds)} training seeds of P and " if r.n_seeds > 0 else ""
        how = f"\nintervals: percentile bootstrap, {int(r.n_boot)} resamples of {seeds}{int(r.n)} examples"
    fig.suptitle(
        f"{title} F4: per-instance privacy loss P(x, α{a}) vs difficulty proxies (one point per training "
        f"example){how}".strip(),
        y=1.06,
    )
    return save_figure(fig, correlations, png_path)


def plot_robustness(table: pd.DataFrame, png_path: str | Path, *, title: str = "") -> list[Path]:
    """F7: Spearman rho and top-m overlap of each variant's privacy-loss ranking with its baseline
    (the reference estimator, or for seed pairs the other seed)."""
    sns.set_theme(style="whitegrid", context="notebook")
    table = table.copy()
    table["label"] = table["factor"] + ": " + table["variant"]
    order = list(dict.fromkeys(table["label"]))
    m = int(table["m"].iloc[0])
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.38 * len(order) + 2.2), sharey=True)
    axis = (
        (
            axes[0],
            "spearman",
            "Spearman ρ of the variant's ranking with its baseline\n"
            "(rank correlation, unitless; baseline: reference, or the other seed)",
        ),
        (
            axes[1],
            "top_m_overlap",
            f"top-m overlap: fraction of the m = {m} highest-P examples\nthat both rankings share (0–1)",
        ),
    )
    for ax, column, xlabel in axis:
        sns.barplot(
            data=table, y="label", x=column, hue="factor", dodge=False, ax=ax, legend=False, order=order
        )
        for label, value in zip(table["label"], table[column]):
            text = "undefined" if pd.isna(value) else f"{value:.2f}"
            x = 0.01 if pd.isna(value) else max(min(value, 1.0), 0.0) + 0.01
            ax.text(x, order.index(label), text, va="center", fontsize=8)
        low = table[column].min()
        ax.set_xlim(min(0.0, low - 0.05) if pd.notna(low) else 0.0, 1.1)
        ax.set_xlabel(xlabel, fontsize=10)
        ax.set_ylabel("")
    axes[0].set_ylabel("variant of the P(x, α) estimator (factor: variant)")
    fig.suptitle(
        f"{title} F7: rank stability of the per-instance privacy loss P(x, α) across accounting β, "
        "Rényi order, checkpoints, seeds and estimator".strip()
    )
    fig.tight_layout()
    return save_figure(fig, table.drop(columns="label"), png_path)


def plot_barriers(
    examples: pd.DataFrame,
    curves: pd.DataFrame,
    summary: pd.DataFrame,
    png_path: str | Path,
    *,
    correlations: pd.DataFrame | None = None,
    alpha: float | None = None,
    ci: float = 0.95,
    title: str = "",
) -> list[Path]:
    """F6, one column per endpoint pair. Top: mean over a group's members of the loss along the path
    minus the straight line between the endpoint losses (the curve whose per-example maximum is the
    barrier; its mean may be negative), legend with each group's mean barrier, endpoint steps and
    distance. Bottom: each example's barrier against its privacy loss, with Spearman rho over the
    random sample of D (bootstrap CI) and, labelled as such, over the selected privacy-loss groups.

    examples / curves / summary / correlations: barrier.barrier_tables.
    """
    from .barrier import RANDOM_SAMPLE, SELECTED_GROUPS
    from .plan import RANDOM_SCORE

    sns.set_theme(style="whitegrid", context="notebook")
    pairs = sorted(curves["pair"].unique())
    means = examples.groupby(["score", "group"])["privacy_loss"].mean()
    selected = [key for key in means.sort_values().index if key[0] != RANDOM_SCORE]
    randoms = sorted(key for key in means.index if key[0] == RANDOM_SCORE)
    palette = dict(zip(selected, sns.color_palette("viridis", len(selected))))
    palette |= dict(zip(randoms, sns.color_palette("Greys", len(randoms) + 2)[2:]))
    stats = summary.set_index(["pair", "score", "group"])
    rho = correlations.set_index(["pair", "sample"]) if correlations is not None else pd.DataFrame()
    p_label = f"P(x, α={alpha:g})" if alpha is not None else "P(x, α)"
    fig, axes = plt.subplots(2, len(pairs), figsize=(6.2 * len(pairs), 10.5), squeeze=False)
    for k, pair in enumerate(pairs):
        ax = axes[0, k]
        part = curves[curves["pair"] == pair]
        for key in selected + randoms:
            g = part[(part["score"] == key[0]) & (part["group"] == key[1])]
            if g.empty:
                continue
            row = stats.loc[(pair, *key)]
            name = f"{key[1]} (random)" if key[0] == RANDOM_SCORE else key[1]
            ax.plot(
                g["lambda"],
                g["excess"],
                color=palette[key],
                ls="--" if key[0] == RANDOM_SCORE else "-",
                label=f"{name}: B̄ = {row['barrier_mean']:.3f}, k = {int(row['steps_run'])}, "
                f"‖Δθ‖ = {row['distance']:.2f}",
            )
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_title(f"original → {pair}: mean path loss relative to the chord", fontsize=10)
        ax.set_xlabel("λ (interpolation weight; 0 = original, 1 = endpoint)")
        ax.set_ylabel("mean loss minus the straight line\nbetween endpoints (nats)")
        ax.legend(
            fontsize=6.5,
            title="group: mean barrier B̄ (nats), endpoint steps k,\n‖θ_end − θ_original‖₂",
            title_fontsize=7,
        )
        ax = axes[1, k]
        part = examples[examples["pair"] == pair]
        for key in selected + randoms:
            g = part[(part["score"] == key[0]) & (part["group"] == key[1])]
            if g.empty:
                continue
            is_random = key[0] == RANDOM_SCORE
            ax.scatter(
                g["privacy_loss"],
                g["barrier"],
                color=palette[key],
                s=16 if is_random else 12,
                marker="x" if is_random else "o",
                alpha=0.8,
                linewidths=0.8 if is_random else 0,
                label=f"{key[1]} (random sample)" if is_random else key[1],
            )
        ax.set_xscale("log")
        lines = []
        for sample, text in (
            (RANDOM_SAMPLE, "over a random sample of D"),
            (SELECTED_GROUPS, "over the selected groups"),
        ):
            if (pair, sample) in rho.index and np.isfinite(rho.loc[(pair, sample), "spearman"]):
                r = rho.loc[(pair, sample)]
                interval = (
                    f" [{ci:.0%} CI {r['ci_low']:.2f}, {r['ci_high']:.2f}]"
                    if np.isfinite(r["ci_low"])
                    else ""
                )
                note = " (extremes, not the data)" if sample == SELECTED_GROUPS else ""
                lines.append(f"ρ {text}{note}: {r['spearman']:.2f}{interval}, n = {int(r['n'])}")
            elif sample == RANDOM_SAMPLE:
                lines.append("ρ over a random sample of D: none (no random group has this endpoint)")
        ax.set_title("Spearman ρ(barrier, P)\n" + "\n".join(lines), fontsize=8.5)
        ax.set_xlabel(f"privacy loss {p_label} (nats, log scale)")
        ax.set_ylabel("loss barrier B(x) = max over λ of\nloss minus the straight line (nats)")
        ax.legend(fontsize=6.5, title="group", title_fontsize=7, markerscale=1.5)
    unlearned = summary[summary["pair"].str.startswith("unlearned_")]["steps_run"].unique()
    endpoints = (
        f"unlearned endpoints after k = {', '.join(str(int(s)) for s in sorted(unlearned))} unlearning "
        "steps for every group; "
        if len(unlearned)
        else ""
    )
    fig.suptitle(
        f"{title} F6: loss barriers along linear paths θ_λ = (1−λ)θ_original + λθ_end\n".strip()
        + f"\n{endpoints}spawned oracle: trained on D∖G from the original's early checkpoint",
        fontsize=11,
    )
    fig.tight_layout()
    return save_figure(fig, summary, png_path)
