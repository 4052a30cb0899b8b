"""Per-example score tables: gradient norms at checkpoints, privacy losses, the merged scores table.

`scores.parquet` has one row per training example (`index` = the dataset's own index, `label`)
and one column per score; every capability that scores examples contributes columns to it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from . import io
from .data import load_dataset
from .models import build_model
from .pergrad import dataset_grad_norms
from .privacy import (
    checkpoint_step_groups,
    online_rdp,
    per_instance_rdp,
    privacy_settings,
    sampling_of_run,
    worst_case_rdp,
)
from .training import load_checkpoint_index, load_run_dynamics, resolve_device

KEYS = ["index", "label"]


def compute_checkpoint_norms(config: dict[str, Any], run_dir: str | Path, out_path: str | Path, *,
                             progress: bool = True) -> Path:
    """Gradient norm of every training example at every checkpoint before the final step.

    Writes norms.npz: `norms` float32 [n, J], `checkpoint_step` [J], `train_index`, `train_label`.
    """
    run_dir = Path(run_dir)
    device = resolve_device(config["device"])
    dataset = load_dataset(**config["dataset"])
    dynamics = load_run_dynamics(run_dir)
    if not np.array_equal(dynamics["train_index"], dataset.train.index.numpy()):
        raise ValueError(f"run {run_dir} was trained on other examples than config key 'dataset' describes")
    total_steps = len(dynamics["lr"])
    index = load_checkpoint_index(run_dir)
    index = index[index["step"] < total_steps]  # the final weights stand for no step
    spec = config["model"]
    model = build_model(spec["name"], width=spec["width"], norm_groups=spec["norm_groups"],
                        num_classes=dataset.num_classes, input_shape=dataset.input_shape).to(device)
    columns = []
    for step, file in zip(index["step"], index["file"]):
        model.load_state_dict(io.load_state_dict(run_dir / file, map_location=device))
        columns.append(dataset_grad_norms(
            model, dataset.train.x, dataset.train.y, batch_size=config["privacy"]["norm_batch_size"],
            device=device, progress=progress, desc=f"norms step {step}",
        ))
    return io.save_npz(
        out_path, norms=np.stack(columns, axis=1), checkpoint_step=index["step"].to_numpy(np.int64),
        train_index=dataset.train.index.numpy(), train_label=dataset.train.y.numpy(),
        run_digest=np.array(run_digest(run_dir)),
    )


def run_digest(run_dir: str | Path) -> str:
    """Identity of a finished training run (its final weights), so norms are never paired with another run."""
    weights = Path(run_dir) / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"run {run_dir} has no model.pt (not a finished training run)")
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def load_run_norms(run_dir: str | Path, norms_path: str | Path) -> dict[str, np.ndarray]:
    """The norms.npz of a run, refused when it was computed from another run."""
    norms = io.load_npz(norms_path)
    if "run_digest" not in norms or str(norms["run_digest"]) != run_digest(run_dir):
        raise ValueError(f"{norms_path} does not belong to run {run_dir} (norms of another run; "
                         "--runs and --norms must list the same seeds in the same order)")
    return norms


def seed_privacy(config: dict[str, Any], run_dir: str | Path, norms_path: str | Path) -> dict[str, Any]:
    """Checkpoint and online estimators (RDP at every order) and the worst case for one seed."""
    settings = privacy_settings(config)
    dynamics = load_run_dynamics(run_dir)
    norms = load_run_norms(run_dir, norms_path)
    batch_size, sample_rate = sampling_of_run(dynamics)
    common = dict(sample_rate=sample_rate, batch_size=batch_size, beta=settings["beta"],
                  orders=settings["orders"])
    max_levels = config["privacy"]["max_lr_levels"]
    used, groups = checkpoint_step_groups(norms["checkpoint_step"], dynamics["lr"],
                                          include_step0=settings["include_step0"], max_lr_levels=max_levels)
    checkpoint_norms = norms["norms"][:, used].astype(np.float64)
    checkpoint = per_instance_rdp(checkpoint_norms, groups, clip=settings["clip"], method=settings["method"], **common)
    clipped = np.minimum(checkpoint_norms, settings["clip"] if settings["clip"] is not None else np.inf)
    steps_per_checkpoint = np.array([c.sum() for c in groups.counts])
    squared = (clipped**2 * steps_per_checkpoint).sum(axis=1)  # sum over steps of g_t(x)^2

    online = online_rdp(dynamics, beta=settings["beta"], orders=settings["orders"], clip=settings["clip"],
                        method=settings["method"], max_lr_levels=max_levels)

    sensitivity = (np.full(len(used), settings["clip"]) if settings["clip"] is not None
                   else checkpoint_norms.max(axis=0))
    worst_rdp, epsilon, best_order = worst_case_rdp(sensitivity, groups, delta=settings["delta"], **common)
    return {"checkpoint": checkpoint, "online": online, "sum_sq_norm": squared, "worst_rdp": worst_rdp,
            "epsilon": epsilon, "best_order": best_order, "sensitivity": "clip" if settings["clip"] else "max observed",
            "train_index": dynamics["train_index"], "train_label": dynamics["train_label"]}


def privacy_tables(config: dict[str, Any], runs: Sequence[tuple[int, str | Path, str | Path]]) -> dict[str, pd.DataFrame]:
    """Per-example privacy table (mean over seeds + per-seed columns), long table, worst case."""
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
            long_parts.append(pd.DataFrame({
                "index": np.repeat(result["train_index"], len(orders)),
                "label": np.repeat(result["train_label"], len(orders)),
                "seed": seed, "estimator": estimator,
                "order": np.tile(orders, len(values)), "rdp": values.reshape(-1),
            }))
        worst_rows += [{"seed": seed, "order": o, "rdp": r, "epsilon": result["epsilon"], "delta": settings["delta"],
                        "best_order": result["best_order"], "sensitivity": result["sensitivity"]}
                       for o, r in zip(orders, result["worst_rdp"])]
    first = next(iter(per_seed.values()))
    for seed, result in per_seed.items():
        if not np.array_equal(result["train_index"], first["train_index"]):
            raise ValueError(f"seed {seed} was trained on other examples than the other seeds")
    table = pd.DataFrame({"index": first["train_index"], "label": first["train_label"]})

    def mean_over_seeds(key: str, column: int | None) -> np.ndarray:
        return np.mean([r[key][:, column] if column is not None else r[key] for r in per_seed.values()], axis=0)

    table["privacy_loss"] = mean_over_seeds("checkpoint", at_alpha)
    table["privacy_loss_4alpha"] = mean_over_seeds("checkpoint", at_4alpha)
    table["privacy_loss_online"] = mean_over_seeds("online", at_alpha)
    table["sum_sq_grad_norm"] = mean_over_seeds("sum_sq_norm", None)
    for seed, result in per_seed.items():
        table[f"privacy_loss_seed{seed}"] = result["checkpoint"][:, at_alpha]
    for seed, result in per_seed.items():  # P(x, 4 alpha) of each original model, for its own unlearning runs
        table[f"privacy_loss_4alpha_seed{seed}"] = result["checkpoint"][:, at_4alpha]
    return {"privacy": table, "long": pd.concat(long_parts, ignore_index=True), "worst_case": pd.DataFrame(worst_rows)}


def write_privacy_tables(config: dict[str, Any], runs, out_dir: str | Path) -> list[Path]:
    out_dir = Path(out_dir)
    tables = privacy_tables(config, runs)
    return [
        io.save_table(tables["privacy"], out_dir / "privacy_loss.parquet"),
        io.save_table(tables["long"], out_dir / "privacy_long.parquet"),
        io.save_table(tables["worst_case"], out_dir / "worst_case.csv"),
    ]


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


def proxy_table(config: dict[str, Any], run_dirs: Sequence[str | Path],
                holdout_files: Sequence[str | Path] = ()) -> pd.DataFrame:
    """Difficulty proxies of every training example, each a hardness (higher = harder).

    EL2N, forgetting events and learning speed come from the original runs' dynamics (mean over
    seeds); the C-score from the holdout models and, when configured, the published file.
    """
    from . import proxies

    dynamics = [load_run_dynamics(run) for run in run_dirs]
    if not dynamics:
        raise ValueError("proxies need at least one training run")
    first = dynamics[0]
    for run, dyn in zip(run_dirs, dynamics):
        if not np.array_equal(dyn["train_index"], first["train_index"]):
            raise ValueError(f"run {run} was trained on other examples than {run_dirs[0]}")
    n, labels = len(first["train_index"]), first["train_label"]
    records = [(d["presentation_step"], d["presentation_example"], d["presentation_correct"]) for d in dynamics]
    table = pd.DataFrame({"index": first["train_index"], "label": labels})
    table["el2n"] = proxies.el2n([d["early_logits"] for d in dynamics], labels)
    events, never = zip(*(proxies.forgetting_events(*r, n) for r in records))
    table["forgetting_events"] = proxies.forgetting_hardness(events, never)
    table["learning_speed"] = proxies.learning_speed_hardness([proxies.learning_speed(*r, n) for r in records])
    if holdout_files:
        holdouts = [io.load_npz(path) for path in holdout_files]
        for path, h in zip(holdout_files, holdouts):
            if not np.array_equal(h["train_index"], first["train_index"]):
                raise ValueError(f"holdout predictions {path} cover other examples than the training runs")
        c, count = proxies.cscore_holdout(np.stack([h["prob_true"] for h in holdouts]),
                                          np.stack([h["trained_on"] for h in holdouts]))
        table["cscore_holdout"] = proxies.cscore_hardness(c)
        table["cscore_holdout_models"] = count
    published = config["proxies"]["published_cscores"]
    if published is not None:
        if config["dataset"]["name"] != "cifar10":
            raise ValueError("config key 'proxies.published_cscores' is only valid with dataset.name cifar10")
        full_labels = _cifar10_train_labels(config)
        table["cscore_published"] = proxies.cscore_hardness(
            proxies.load_published_cscores(published, full_labels, index=first["train_index"]))
    return table


def _cifar10_train_labels(config: dict[str, Any]) -> np.ndarray:
    """Labels of the full CIFAR-10 training set in torchvision order (the published file's order)."""
    full = dict(config["dataset"], n_train=None, n_test=None)
    dataset = load_dataset(**full)
    labels = np.empty(int(dataset.train.index.max()) + 1, dtype=np.int64)
    labels[dataset.train.index.numpy()] = dataset.train.y.numpy()
    return labels


def forget_groups(config: dict[str, Any], scores: pd.DataFrame) -> pd.DataFrame:
    """Every forget group the config asks for (perinstance.plan), tidy: score, group, ranks, index, label, rank.

    Rank bins are named top1, top2, ... in the workflow; `ranks` keeps the rank range they cover.
    """
    from .groups import build_groups, random_groups
    from .plan import PRIVACY_SCORE, comparison_groups, privacy_groups

    spec = config["groups"]
    common = dict(size=spec["size"], class_balanced=spec["class_balanced"], seed=spec["seed"])
    missing = [g.score for g in privacy_groups(config) + comparison_groups(config)
               if g.score not in ("random",) and g.score not in scores]
    if missing:
        raise ValueError(f"scores table has no column for groups by {sorted(set(missing))} "
                         "(config key groups.proxy_scores; is the proxy enabled?)")
    # rank bins continue below the `high` group instead of repeating it as their first bin
    skip_top = "high" in spec["privacy_kinds"] and spec["linear_bins"] + spec["log_bins"] > 0
    ranked = scores
    if spec["ranking_seed"] is not None:  # one original model's own ranking, for runs that start from it
        ranked = scores.assign(**{PRIVACY_SCORE: scores[f"{PRIVACY_SCORE}_seed{spec['ranking_seed']}"]})
    privacy = build_groups(ranked, PRIVACY_SCORE, kinds=spec["privacy_kinds"], linear_bins=spec["linear_bins"] + skip_top,
                           log_bins=spec["log_bins"], log_bins_to=spec["log_bins_to"], **common)
    if skip_top:
        privacy = privacy[privacy["group"] != f"top0-{spec['size']}"]
    bins = [name for name in dict.fromkeys(privacy["group"]) if name.startswith("top")]
    privacy["ranks"] = privacy["group"]
    privacy["group"] = privacy["group"].replace({name: f"top{i + 1}" for i, name in enumerate(bins)})
    frames = [privacy]
    for group in comparison_groups(config):
        if group.score == "random":
            continue
        # a holdout C-score is undefined for the few examples no holdout model left out
        high = build_groups(scores.dropna(subset=[group.score]), group.score, kinds=["high"], **common)
        frames.append(high.assign(ranks="high"))
    if spec["random_groups"]:
        frames.append(random_groups(scores, size=spec["size"], count=spec["random_groups"], seed=spec["seed"],
                                    class_balanced=spec["class_balanced"]).assign(ranks="random"))
    table = pd.concat(frames, ignore_index=True)
    return table[["score", "group", "ranks", "index", "label", "rank"]]


