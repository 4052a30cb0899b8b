"""Per-instance privacy losses P(x, alpha) of every training example, from the stored runs and their norms.

One seed (seed_privacy): the checkpoint estimator (norms at the checkpoints, grad_norms.py), the
online estimator (in-batch norms of the run's dynamics) and the data-independent worst case. All
seeds (privacy_tables): `privacy` (one row per example: the means over seeds at alpha and 4 alpha,
the online estimate, and per-seed columns), `long` (every example, seed, estimator and order) and
`worst_case` (per seed and order).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import io
from .grad_norms import load_run_norms
from .privacy import (
    checkpoint_step_groups,
    online_rdp,
    per_instance_rdp,
    privacy_settings,
    sampling_of_run,
    worst_case_rdp,
)
from .training import load_run_dynamics


def seed_privacy(config: dict[str, Any], run_dir: str | Path, norms_path: str | Path) -> dict[str, Any]:
    """Checkpoint and online estimators (RDP at every order) and the worst case for one seed."""
    settings = privacy_settings(config)
    dynamics = load_run_dynamics(run_dir)
    norms = load_run_norms(run_dir, norms_path)
    batch_size, sample_rate = sampling_of_run(dynamics)
    common = dict(
        sample_rate=sample_rate, batch_size=batch_size, beta=settings["beta"], orders=settings["orders"]
    )
    max_levels = config["privacy"]["max_lr_levels"]
    used, groups = checkpoint_step_groups(
        norms["checkpoint_step"],
        dynamics["lr"],
        include_step0=settings["include_step0"],
        max_lr_levels=max_levels,
    )
    checkpoint_norms = norms["norms"][:, used].astype(np.float64)
    checkpoint = per_instance_rdp(
        checkpoint_norms, groups, clip=settings["clip"], method=settings["method"], **common
    )
    clipped = np.minimum(checkpoint_norms, settings["clip"] if settings["clip"] is not None else np.inf)
    steps_per_checkpoint = np.array([c.sum() for c in groups.counts])
    squared = (clipped**2 * steps_per_checkpoint).sum(axis=1)  # sum over steps of g_t(x)^2

    online = online_rdp(
        dynamics,
        beta=settings["beta"],
        orders=settings["orders"],
        clip=settings["clip"],
        method=settings["method"],
        max_lr_levels=max_levels,
    )

    sensitivity = (
        np.full(len(used), settings["clip"]) if settings["clip"] is not None else checkpoint_norms.max(axis=0)
    )
    worst_rdp, epsilon, best_order = worst_case_rdp(sensitivity, groups, delta=settings["delta"], **common)
    return {
        "checkpoint": checkpoint,
        "online": online,
        "sum_sq_norm": squared,
        "worst_rdp": worst_rdp,
        "epsilon": epsilon,
        "best_order": best_order,
        "sensitivity": "clip" if settings["clip"] else "max observed",
        "train_index": dynamics["train_index"],
        "train_label": dynamics["train_label"],
    }


def privacy_tables(
    config: dict[str, Any], runs: Sequence[tuple[int, str | Path, str | Path]]
) -> dict[str, pd.DataFrame]:
    """Per-example privacy table (mean over seeds + per-seed columns), long table, worst case.

    runs: (seed, run directory, norms.npz) of every original model.
    """
    settings = privacy_settings(config)
    orders = settings["orders"]
    at_alpha = int(np.flatnonzero(orders == settings["alpha"])[0])
    at_4alpha = int(np.flatnonzero(orders == 4 * settings["alpha"])[0])
    per_seed, long_parts, worst_rows = {}, [], []
    for seed, run_dir, norms_path in runs:
        result = seed_privacy(config, run_dir, norms_path)
        per_seed[seed] = result
        for estimator in ("checkpoint", "online"):
            values = result[estimator]
            long_parts.append(
                pd.DataFrame(
                    {
                        "index": np.repeat(result["train_index"], len(orders)),
                        "label": np.repeat(result["train_label"], len(orders)),
                        "seed": seed,
                        "estimator": estimator,
                        "order": np.tile(orders, len(values)),
                        "rdp": values.reshape(-1),
                    }
                )
            )
        worst_rows += [
            {
                "seed": seed,
                "order": o,
                "rdp": r,
                "epsilon": result["epsilon"],
                "delta": settings["delta"],
                "best_order": result["best_order"],
                "sensitivity": result["sensitivity"],
            }
            for o, r in zip(orders, result["worst_rdp"])
        ]
    first = next(iter(per_seed.values()))
    for seed, result in per_seed.items():
        if not np.array_equal(result["train_index"], first["train_index"]):
            raise ValueError(f"seed {seed} was trained on other examples than the other seeds")
    table = pd.DataFrame({"index": first["train_index"], "label": first["train_label"]})

    def mean_over_seeds(key: str, column: int | None) -> np.ndarray:
        return np.mean(
            [r[key][:, column] if column is not None else r[key] for r in per_seed.values()], axis=0
        )

    table["privacy_loss"] = mean_over_seeds("checkpoint", at_alpha)
    table["privacy_loss_4alpha"] = mean_over_seeds("checkpoint", at_4alpha)
    table["privacy_loss_online"] = mean_over_seeds("online", at_alpha)
    table["sum_sq_grad_norm"] = mean_over_seeds("sum_sq_norm", None)
    for seed, result in per_seed.items():
        table[f"privacy_loss_seed{seed}"] = result["checkpoint"][:, at_alpha]
    for seed, result in per_seed.items():  # P(x, 4 alpha) of each original model, for its own unlearning runs
        table[f"privacy_loss_4alpha_seed{seed}"] = result["checkpoint"][:, at_4alpha]
    return {
        "privacy": table,
        "long": pd.concat(long_parts, ignore_index=True),
        "worst_case": pd.DataFrame(worst_rows),
    }


def write_privacy_tables(
    config: dict[str, Any],
    runs: Sequence[tuple[int, str | Path, str | Path]],
    privacy_out: str | Path,
    long_out: str | Path,
    worst_case_out: str | Path,
) -> list[Path]:
    """The three tables of privacy_tables, written to the given files."""
    tables = privacy_tables(config, runs)
    return [
        io.save_table(tables["privacy"], privacy_out),
        io.save_table(tables["long"], long_out),
        io.save_table(tables["worst_case"], worst_case_out),
    ]
