"""Steps-to-unlearn and unlearning-quality tables from the unlearning runs and their oracles."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import io
from .evaluation import (
    forget_accuracy_gap,
    mia_auc_gap,
    oracle_band,
    per_example_epsilon,
    steps_to_unlearn,
    summarise_steps,
)
from .theory import fit_log_trend

# per-example epsilon needs enough oracles for its threshold test to mean anything
MIN_ORACLES_FOR_EPSILON = 8


def _oracle_key(path: str | Path) -> tuple[str, str]:
    """(score, group) of an oracle evaluation at .../oracles/<score>/<group>/seed<r>.npz."""
    path = Path(path)
    return path.parent.parent.name, path.parent.name


def steps_table(config: dict[str, Any], runs: Sequence[tuple[str | Path, str | Path]],
                oracle_evals: Sequence[str | Path], scores: pd.DataFrame,
                groups: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One row per unlearning run (`steps`), one per (score, group, method) (`summary`).

    runs: (curve file, final-evaluation npz) of every unlearning run.
    """
    bands = config["oracles"]
    k_max = config["unlearning"]["k_max"]
    oracles: dict[tuple[str, str], list[dict[str, np.ndarray]]] = {}
    for path in oracle_evals:
        oracles.setdefault(_oracle_key(path), []).append(io.load_npz(path))
    group_privacy = (groups.merge(scores[["index", "privacy_loss", "privacy_loss_4alpha"]], on="index")
                     .groupby(["score", "group"])
                     .agg(privacy_loss=("privacy_loss", "mean"), privacy_loss_4alpha=("privacy_loss_4alpha", "mean"),
                          ranks=("ranks", "first"))
                     .reset_index())
    rows, finals, curves = [], {}, []
    for curve_path, final_path in runs:
        curve = io.load_table(curve_path)
        method, score, group, seed = (curve[c].iloc[0] for c in ("method", "score", "group", "seed"))
        evals = oracles.get((score, group))
        if not evals:
            raise ValueError(f"no oracle evaluations for group {score}/{group}")
        band = oracle_band(np.array([e["forget_losses"].mean() for e in evals]), tol_abs=bands["tol_abs"], z=bands["z"])
        result = steps_to_unlearn(curve["step"].to_numpy(), curve["forget_loss"].to_numpy(), band,
                                  consecutive=bands["consecutive"])
        if result["censored"]:
            result["steps"] = k_max  # a run stopped before k_max without meeting the criterion is censored at k_max
        curves.append(curve.assign(band_center=band[0], band_half_width=band[1]))
        final = io.load_npz(final_path)
        finals.setdefault((score, group, method), []).append(final)
        mia = mia_auc_gap(final["forget_losses"], final["test_losses"], [e["forget_losses"] for e in evals],
                          [e["test_losses"] for e in evals])
        rows.append({
            "score": score, "group": group, "method": method, "seed": int(seed), **result,
            "oracle_sd": band[2], "n_oracles": len(evals), "k_max": k_max,
            "steps_run": int(final["steps_run"]),
            "forget_accuracy_gap": forget_accuracy_gap(float(final["forget_correct"].mean()),
                                                       [float(e["forget_correct"].mean()) for e in evals]),
            "mia_auc": mia["auc_unlearned"], "mia_auc_oracles": mia["auc_oracle"], "mia_auc_gap": mia["gap"],
        })
    if not rows:
        raise ValueError("no unlearning runs to summarise")
    steps = pd.DataFrame(rows).merge(group_privacy, on=["score", "group"], how="left")
    summary = summarise_steps(steps).merge(group_privacy, on=["score", "group"], how="left")
    summary["epsilon_mean"] = [
        _mean_epsilon(finals[(r.score, r.group, r.method)], oracles[(r.score, r.group)]) for r in summary.itertuples()
    ]
    return {"steps": steps, "summary": summary, "curves": pd.concat(curves, ignore_index=True)}


def _mean_epsilon(finals: list[dict[str, np.ndarray]], oracles: list[dict[str, np.ndarray]]) -> float:
    """Mean per-example epsilon over the group, when there are enough models to estimate it."""
    if len(oracles) < MIN_ORACLES_FOR_EPSILON or len(finals) < 2:
        return float("nan")
    return float(np.mean(per_example_epsilon(np.stack([f["forget_phi"] for f in finals]),
                                             np.stack([o["forget_phi"] for o in oracles]))))


def theory_fit(summary: pd.DataFrame, method: str, score: str = "privacy_loss") -> dict[str, Any] | None:
    """Fitted "steps ~ scale * log P(x, 4 alpha) + offset" across the groups of one method.

    A FITTED trend (one scale and offset), not the bound itself, whose constants are unknowable
    for deep networks. None when fewer than two groups are available.
    """
    rows = summary[(summary["method"] == method) & (summary["score"] == score)]
    if len(rows) < 2:
        return None
    return fit_log_trend(rows["privacy_loss_4alpha"].to_numpy(), rows["steps_mean"].to_numpy())


def write_steps_tables(config: dict[str, Any], runs, oracle_evals, scores_path, groups_path,
                       steps_out, summary_out, curves_out) -> list[Path]:
    tables = steps_table(config, runs, oracle_evals, io.load_table(scores_path), io.load_table(groups_path))
    return [io.save_table(tables["steps"], steps_out), io.save_table(tables["summary"], summary_out),
            io.save_table(tables["curves"], curves_out)]
