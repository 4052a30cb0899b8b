"""The per-example scores table and the difficulty-proxy table that feeds it.

`scores.parquet` has one row per training example (`index` = the dataset's own index, `label`)
and one column per score; every capability that scores examples contributes a table of its own
(privacy_scores.privacy_tables, proxy_table), joined by merge_score_tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import io, proxies
from .data import load_dataset
from .training import load_run_dynamics

KEYS = ["index", "label"]


def merge_score_tables(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Join per-example tables on (index, label); a label disagreement is an error."""
    merged: pd.DataFrame | None = None
    for path in paths:
        table = io.load_table(path)
        missing = [k for k in KEYS if k not in table]
        if missing:
            raise ValueError(f"score table {path} lacks columns {missing}")
        if table["index"].duplicated().any():
            raise ValueError(f"score table {path} has duplicate example indices")
        if merged is None:
            merged = table
            continue
        overlap = [c for c in table if c in merged and c not in KEYS]
        if overlap:
            raise ValueError(f"score table {path} repeats columns {overlap}")
        joined = merged.merge(table, on="index", how="outer", suffixes=("", "_other"), indicator=True)
        if (joined["_merge"] != "both").any() or not joined["label"].equals(joined["label_other"]):
            raise ValueError(f"score table {path} covers other examples or labels than {paths[0]}")
        merged = joined.drop(columns=["label_other", "_merge"])
    if merged is None:
        raise ValueError("no score tables to merge")
    return merged.sort_values("index").reset_index(drop=True)


def proxy_table(
    config: dict[str, Any], run_dirs: Sequence[str | Path], holdout_files: Sequence[str | Path] = ()
) -> pd.DataFrame:
    """Difficulty proxies of every training example, each a hardness (higher = harder).

    EL2N, forgetting events and learning speed come from the original runs' dynamics (mean over
    seeds); the C-score from the holdout models and, when configured, the published file.
    """
    dynamics = [load_run_dynamics(run) for run in run_dirs]
    if not dynamics:
        raise ValueError("proxies need at least one training run")
    first = dynamics[0]
    for run, dyn in zip(run_dirs, dynamics):
        if not np.array_equal(dyn["train_index"], first["train_index"]):
            raise ValueError(f"run {run} was trained on other examples than {run_dirs[0]}")
    n, labels = len(first["train_index"]), first["train_label"]
    records = [
        (d["presentation_step"], d["presentation_example"], d["presentation_correct"]) for d in dynamics
    ]
    table = pd.DataFrame({"index": first["train_index"], "label": labels})
    table["el2n"] = proxies.el2n([d["early_logits"] for d in dynamics], labels)
    events, never = zip(*(proxies.forgetting_events(*r, n) for r in records))
    table["forgetting_events"] = proxies.forgetting_hardness(events, never)
    table["learning_speed"] = proxies.learning_speed_hardness(
        [proxies.learning_speed(*r, n) for r in records]
    )
    if holdout_files:
        holdouts = [io.load_npz(path) for path in holdout_files]
        for path, h in zip(holdout_files, holdouts):
            if not np.array_equal(h["train_index"], first["train_index"]):
                raise ValueError(f"holdout predictions {path} cover other examples than the training runs")
        c, count = proxies.cscore_holdout(
            np.stack([h["prob_true"] for h in holdouts]), np.stack([h["trained_on"] for h in holdouts])
        )
        table["cscore_holdout"] = proxies.cscore_hardness(c)
        table["cscore_holdout_models"] = count
    published = config["proxies"]["published_cscores"]
    if published is not None:
        if config["dataset"]["name"] != "cifar10":
            raise ValueError("config key 'proxies.published_cscores' is only valid with dataset.name cifar10")
        full_labels = _cifar10_train_labels(config)
        table["cscore_published"] = proxies.cscore_hardness(
            proxies.load_published_cscores(published, full_labels, index=first["train_index"])
        )
    return table


def _cifar10_train_labels(config: dict[str, Any]) -> np.ndarray:
    """Labels of the full CIFAR-10 training set in torchvision order (the published file's order)."""
    full = dict(config["dataset"], n_train=None, n_test=None)
    dataset = load_dataset(**full)
    labels = np.empty(int(dataset.train.index.max()) + 1, dtype=np.int64)
    labels[dataset.train.index.numpy()] = dataset.train.y.numpy()
    return labels
