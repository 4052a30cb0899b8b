"""Models retrained with the original recipe on a subset of the training set.

C-score holdout models train on random fractions of D; unlearning oracles train on D minus a
forget group. Both reuse `train_run` with a lean recording setup (no intermediate checkpoints,
no in-batch gradient norms), so they cost one plain training run each.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import io
from .data import Dataset, load_dataset
from .groups import forget_rows
from .inference import load_model, predict_logits, resolve_device, save_evaluation
from .plan import holdout_seed, oracle_seed
from .proxies import holdout_mask
from .training import (
    load_checkpoint_index,
    load_run_dynamics,
    optimizer_state_file,
    run_weights,
    steps_per_epoch,
    train_run,
)


def subset_dataset(dataset: Dataset, keep: np.ndarray) -> Dataset:
    """The dataset with its training split restricted to the rows where `keep` is true."""
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (len(dataset.train),):
        raise ValueError(f"keep mask has shape {keep.shape}, expected ({len(dataset.train)},)")
    if not keep.any():
        raise ValueError("cannot train on an empty subset of the training set")
    rows = torch.as_tensor(np.flatnonzero(keep))
    train = dataclasses.replace(
        dataset.train, x=dataset.train.x[rows], y=dataset.train.y[rows], index=dataset.train.index[rows]
    )
    return dataclasses.replace(dataset, train=train)


def lean_config(config: dict[str, Any], epochs: int | None = None) -> dict[str, Any]:
    """The experiment's recipe, recording only what a retrained model needs."""
    lean = copy.deepcopy(config)
    training = lean["training"]
    if epochs is not None:
        training["epochs"] = epochs
        early = training["dynamics"]["early_epoch"]
        if early is not None and early > epochs:
            training["dynamics"]["early_epoch"] = None
    training["checkpoints"] = {"step0": False, "log_start": None, "every_epochs": training["epochs"]}
    training["dynamics"]["batch_grad_norms"] = False
    training["eval_every_epochs"] = training["epochs"]
    return lean


def train_on_subset(
    config: dict[str, Any],
    seed: int,
    keep: np.ndarray,
    out_dir: str | Path,
    *,
    dataset: Dataset | None = None,
    epochs: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Train with the experiment's recipe on the rows of the training split where `keep` holds.

    `force` lets the run replace whatever is at `out_dir` (see train_run).
    """
    dataset = dataset if dataset is not None else load_dataset(**config["dataset"])
    return train_run(
        lean_config(config, epochs),
        seed,
        out_dir,
        progress=progress,
        dataset=subset_dataset(dataset, keep),
        force=force,
    )


def _without_group(
    dataset: Dataset, groups_csv: str | Path, score: str, group: str
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of forget group score/group in dataset.train, and the mask of the rows kept (D minus G)."""
    rows = forget_rows(dataset, groups_csv, score, group)
    keep = np.ones(len(dataset.train), dtype=bool)
    keep[rows] = False
    return rows, keep


def discard_run(run_dir: str | Path) -> None:
    """Remove a run directory whose result has been distilled into a smaller file.

    Only a run directory the project published (io.RUN_MARKER) is removed; anything else at
    `run_dir` raises io.RefusedOverwrite and is left as it is.
    """
    io.remove_path(run_dir)


def holdout_predictions(
    config: dict[str, Any], model_id: int, out_path: str | Path, *, progress: bool = True, force: bool = False
) -> Path:
    """Train C-score holdout model `model_id` and save its true-label probabilities on all of D.

    Writes an npz with `trained_on` (bool [n]), `prob_true` (float32 [n]) and `train_index`.
    The model is trained in the sibling directory `<out_path>.run`, which `force` lets replace
    something the project did not create.
    """
    out_path = Path(out_path)
    proxies = config["proxies"]
    dataset = load_dataset(**config["dataset"])
    n = len(dataset.train)
    trained_on = holdout_mask(n, proxies["holdout_fraction"], model_id)
    run_dir = out_path.with_suffix(".run")
    seed = holdout_seed(model_id)
    train_on_subset(
        config,
        seed,
        trained_on,
        run_dir,
        dataset=dataset,
        epochs=proxies["holdout_epochs"],
        progress=progress,
        force=force,
    )
    device = resolve_device(config["device"])
    model = load_model(config, dataset, run_weights(run_dir), device)
    logits = predict_logits(model, dataset.train.x, config["training"]["eval_batch_size"], device)
    prob_true = torch.softmax(logits, dim=1).gather(1, dataset.train.y[:, None]).squeeze(1)
    io.save_npz(
        out_path,
        trained_on=trained_on,
        prob_true=prob_true.numpy().astype(np.float32),
        train_index=dataset.train.index.numpy(),
    )
    discard_run(run_dir)
    return out_path


def run_oracle(
    config: dict[str, Any],
    score: str,
    group: str,
    replicate: int,
    groups_csv: str | Path,
    model_out: str | Path,
    eval_out: str | Path,
    *,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Retrain oracle replicate r = `replicate` of a forget group from scratch on D minus the group
    (seed plan.oracle_seed(r)); save its weights and its evaluation.

    The evaluation npz (inference.save_evaluation) holds per-example `forget_losses`, `forget_phi`,
    `forget_correct` (in the order of `forget_index`) and `test_losses`, `test_correct` on the full
    test split, and names itself: `score`, `group` (str) and `replicate` (int64).
    The model is trained in the sibling directory `<eval_out>.run` (`force`: see holdout_predictions).
    """
    dataset = load_dataset(**config["dataset"])
    rows, keep = _without_group(dataset, groups_csv, score, group)
    run_dir = Path(eval_out).with_suffix(".run")
    train_on_subset(
        config, oracle_seed(replicate), keep, run_dir, dataset=dataset, progress=progress, force=force
    )
    device = resolve_device(config["device"])
    model = load_model(config, dataset, run_weights(run_dir), device)
    io.save_torch(model.state_dict(), model_out)
    save_evaluation(
        eval_out,
        model,
        dataset,
        rows,
        batch_size=config["training"]["eval_batch_size"],
        device=device,
        score=np.array(score),
        group=np.array(group),
        replicate=np.int64(replicate),
    )
    discard_run(run_dir)
    return Path(eval_out)


def continued_schedule(
    original_lr: np.ndarray, original_steps_per_epoch: int, spawn_epoch: int, steps_per_epoch: int
) -> np.ndarray:
    """The lr of every step of a run spawned at `spawn_epoch` that continues `original_lr`.

    The spawned run trains on another set (D minus G), so its epochs can have fewer steps than
    the original's. Rule: its step i (of `steps_per_epoch` per epoch) sits at epoch
    spawn_epoch + i / steps_per_epoch and takes the original's lr at the step that started at or
    before that epoch fraction, original step spawn_epoch * S + floor(i * S / steps_per_epoch),
    S = `original_steps_per_epoch`. With equal steps per epoch it is the original's lr[spawn step:]
    exactly; either way the spawned run ends where the original's schedule ends.
    """
    original_lr = np.asarray(original_lr, dtype=np.float64)
    s = int(original_steps_per_epoch)
    if s <= 0 or len(original_lr) % s:
        raise ValueError(
            f"the original's schedule ({len(original_lr)} steps) is not whole epochs of {s} steps"
        )
    epochs = len(original_lr) // s
    if not 0 <= spawn_epoch < epochs:
        raise ValueError(f"spawn epoch {spawn_epoch} is not before the original's last epoch ({epochs})")
    steps = np.arange((epochs - spawn_epoch) * int(steps_per_epoch), dtype=np.int64)
    return original_lr[spawn_epoch * s + (steps * s) // int(steps_per_epoch)]


def run_spawned_oracle(
    config: dict[str, Any],
    score: str,
    group: str,
    groups_csv: str | Path,
    original_run: str | Path,
    model_out: str | Path,
    *,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Oracle spawned from the original's checkpoint at epoch `barrier.spawn_epoch`, trained on D minus G.

    It shares the original's early trajectory, so both endpoints of the barrier path sit in one basin.
    It is a continuation of the original run: it starts from the original's weights AND optimizer
    state (momentum buffers, checkpoints/optimizer_step_XXXXXXX.pt) at the spawn epoch, and its lr
    follows the original's per-step schedule (dynamics.npz `lr`) from the spawn step to the end,
    mapped onto its own, possibly shorter, epochs by epoch fraction (continued_schedule). It trains
    on D minus G for the remaining epochs with its own data order (seed oracle_seed(0)).
    The model is trained in the sibling directory `<model_out>.run` (`force`: see holdout_predictions).
    """
    spawn_epoch = config["barrier"]["spawn_epoch"]
    training = config["training"]
    epochs = training["epochs"]
    if not 0 <= spawn_epoch < epochs:
        raise ValueError(
            f"config key 'barrier.spawn_epoch' must be in [0, training.epochs), got {spawn_epoch}"
        )
    original_run = Path(original_run)
    index = load_checkpoint_index(original_run)
    at = index[np.isclose(index["epoch"], spawn_epoch)]
    if at.empty:
        raise ValueError(
            f"run {original_run} has no checkpoint at epoch {spawn_epoch} (config key barrier.spawn_epoch; "
            "training.checkpoints.every_epochs must divide it)"
        )
    original = load_run_dynamics(original_run)
    original_spe = int(original["steps_per_epoch"])
    if len(original["lr"]) != epochs * original_spe:
        raise ValueError(
            f"run {original_run} trained {len(original['lr'])} steps, not training.epochs ({epochs}) x "
            f"{original_spe}: it belongs to another config; retrain it"
        )
    spawn_step = int(at["step"].iloc[0])
    optimizer_file = original_run / optimizer_state_file(spawn_step)
    if not optimizer_file.is_file():
        raise FileNotFoundError(
            f"run {original_run} holds no optimizer state at epoch {spawn_epoch} "
            f"({optimizer_file.name}): it was trained before optimizer states were saved, "
            "or for another barrier.spawn_epoch; retrain it (delete the run directory and rerun)"
        )
    optimizer_state = io.load_torch(optimizer_file)
    dataset = load_dataset(**config["dataset"])
    _, keep = _without_group(dataset, groups_csv, score, group)
    retain = subset_dataset(dataset, keep)
    schedule = continued_schedule(
        original["lr"],
        original_spe,
        spawn_epoch,
        steps_per_epoch(len(retain.train), training["batch_size"], training["sampling"]),
    )
    run_dir = Path(model_out).with_suffix(".run")
    train_run(
        lean_config(config, epochs - spawn_epoch),
        oracle_seed(0),
        run_dir,
        progress=progress,
        dataset=retain,
        init_state=io.load_state_dict(original_run / at["file"].iloc[0]),
        init_optimizer_state=optimizer_state,
        schedule=schedule,
        force=force,
    )
    io.copy_file(run_weights(run_dir), model_out)
    discard_run(run_dir)
    return Path(model_out)
