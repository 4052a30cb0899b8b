"""Gradient norm of every training example at every checkpoint of an original model: norms.npz.

The per-instance privacy losses (privacy_scores.py) compose these norms over the run's steps. A
norms file carries the digest of its run's final weights, so it is never paired with another run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from . import io
from .data import load_dataset
from .inference import resolve_device
from .models import build_from_config
from .pergrad import dataset_grad_norms
from .training import load_checkpoint_index, load_run_dynamics, run_weights


def norm_part_steps(steps: np.ndarray, part: int, parts: int) -> np.ndarray:
    """The checkpoint steps that part `part` of `parts` computes: every parts-th checkpoint from
    the part-th on, so each part gets early (cheap to load, same cost to score) and late ones."""
    if not 0 <= part < parts:
        raise ValueError(f"norm part {part} is not in [0, {parts}) (config key privacy.norm_jobs)")
    return np.asarray(steps)[part::parts]


def compute_checkpoint_norms(
    config: dict[str, Any],
    run_dir: str | Path,
    out_path: str | Path,
    *,
    progress: bool = True,
    part: int = 0,
    parts: int = 1,
) -> Path:
    """Gradient norm of every training example at every checkpoint before the final step.

    Writes norms.npz: `norms` float32 [n, J], `checkpoint_step` [J], `train_index`, `train_label`.
    With parts > 1 only the checkpoints of norm_part_steps(part, parts), for merge_checkpoint_norms.
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
    index = index[index["step"].isin(norm_part_steps(index["step"].to_numpy(), part, parts))]
    model = build_from_config(config, dataset).to(device)
    columns = []
    for step, file in zip(index["step"], index["file"]):
        model.load_state_dict(io.load_state_dict(run_dir / file, map_location=device))
        columns.append(
            dataset_grad_norms(
                model,
                dataset.train.x,
                dataset.train.y,
                batch_size=config["privacy"]["norm_batch_size"],
                device=device,
                progress=progress,
                desc=f"norms step {step}",
            )
        )
    return io.save_npz(
        out_path,
        norms=np.stack(columns, axis=1),
        checkpoint_step=index["step"].to_numpy(np.int64),
        train_index=dataset.train.index.numpy(),
        train_label=dataset.train.y.numpy(),
        run_digest=np.array(run_digest(run_dir)),
    )


def merge_checkpoint_norms(run_dir: str | Path, part_paths: list[str | Path], out_path: str | Path) -> Path:
    """norms.npz of a run from the files of its norm parts: the same arrays, bit for bit, as one
    job over every checkpoint. Refuses parts of another run, overlapping or missing checkpoints."""
    parts = [load_run_norms(run_dir, path) for path in part_paths]
    if not parts:
        raise ValueError("no norm parts to merge")
    for path, other in zip(part_paths[1:], parts[1:]):
        for key in ("train_index", "train_label"):
            if not np.array_equal(other[key], parts[0][key]):
                raise ValueError(f"{path}: {key} differs from {part_paths[0]}'s")
    steps = np.concatenate([p["checkpoint_step"] for p in parts])
    if len(np.unique(steps)) != len(steps):
        raise ValueError(f"norm parts {', '.join(map(str, part_paths))} share checkpoints")
    dynamics = load_run_dynamics(run_dir)
    index = load_checkpoint_index(run_dir)
    expected = index["step"][index["step"] < len(dynamics["lr"])].to_numpy(np.int64)
    if not np.array_equal(np.sort(steps), np.sort(expected)):
        raise ValueError(
            f"norm parts cover checkpoints {sorted(steps.tolist())}, the run has {expected.tolist()}"
        )
    order = np.argsort(steps, kind="stable")
    return io.save_npz(
        out_path,
        norms=np.concatenate([p["norms"] for p in parts], axis=1)[:, order],
        checkpoint_step=steps[order],
        train_index=parts[0]["train_index"],
        train_label=parts[0]["train_label"],
        run_digest=np.array(run_digest(run_dir)),
    )


def run_digest(run_dir: str | Path) -> str:
    """Identity of a finished training run (its final weights), so norms are never paired with another run."""
    weights = run_weights(run_dir)
    if not weights.is_file():
        raise FileNotFoundError(f"run {run_dir} has no {weights.name} (not a finished training run)")
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def load_run_norms(run_dir: str | Path, norms_path: str | Path) -> dict[str, np.ndarray]:
    """The norms.npz of a run, refused when it was computed from another run."""
    norms = io.load_npz(norms_path)
    if "run_digest" not in norms or str(norms["run_digest"]) != run_digest(run_dir):
        raise ValueError(
            f"{norms_path} does not belong to run {run_dir} (norms of another run; "
            "--training-runs and --grad-norms must list the same seeds in the same order)"
        )
    return norms
