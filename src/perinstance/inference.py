"""Inference with a model of the experiment: device, logits, per-example losses and phi, evaluation files.

Shared by every torch loop of the package (training, retraining, unlearning, gradient norms, loss
barriers); nothing here trains. `save_evaluation` writes the per-example evaluation of a model on a
forget group and on the test split: the file both an oracle (retrain.run_oracle) and an unlearning
run (unlearning.run_unlearning_job) leave, and that steps.py reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import io
from .data import Dataset, Split
from .models import build_from_config


def resolve_device(name: str) -> torch.device:
    """The torch device of config key `device` (`auto`: CUDA when torch sees one, else the CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config key 'device' is 'cuda' but torch sees no CUDA device")
    return torch.device(name)


def load_model(
    config: Mapping[str, Any], dataset: Dataset, weights: str | Path, device: torch.device | str = "cpu"
) -> torch.nn.Module:
    """A model of the experiment's architecture with the given state_dict, in eval mode."""
    model = build_from_config(config, dataset)
    model.load_state_dict(io.load_state_dict(weights))
    return model.to(device).eval()


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Logits of every row of `x` (eval mode), returned on the CPU as float32."""
    was_training = model.training
    model.eval()
    out = [model(chunk.to(device, non_blocking=True)).float().cpu() for chunk in x.split(batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def loss_and_accuracy(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of the logits."""
    loss = F.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(1) == y).float().mean().item()
    return loss, accuracy


def logit_confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """phi = log p_y - log(1 - p_y), computed stably from logits."""
    log_p = F.log_softmax(logits.double(), dim=1)
    log_py = log_p.gather(1, y[:, None]).squeeze(1)
    others = log_p.clone()
    others.scatter_(1, y[:, None], -math.inf)
    return (log_py - torch.logsumexp(others, dim=1)).float()


def split_metrics(model: torch.nn.Module, split: Split, batch_size: int, device) -> dict[str, np.ndarray]:
    """Per-example `losses` (cross-entropy), `correct` and `phi` (logit_confidence) on a split."""
    logits = predict_logits(model, split.x, batch_size, device)
    losses = F.cross_entropy(logits, split.y, reduction="none")
    return {
        "losses": losses.numpy(),
        "correct": (logits.argmax(1) == split.y).numpy(),
        "phi": logit_confidence(logits, split.y).numpy(),
    }


def rows_subset(split: Split, rows: np.ndarray) -> Split:
    """The given rows of a split, in that order."""
    rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64))
    return Split(x=split.x[rows_t], y=split.y[rows_t], index=split.index[rows_t])


def save_evaluation(
    path: str | Path,
    model: torch.nn.Module,
    dataset: Dataset,
    rows: np.ndarray,
    *,
    batch_size: int,
    device,
    **fields: np.ndarray,
) -> Path:
    """Evaluate `model` on the forget group (`rows` of dataset.train), the retain set (every other
    training example) and the full test split; write an npz.

    The file holds `forget_index` (the group's dataset indices), the per-example
    `forget_losses`, `forget_phi`, `forget_correct` in that order, `retain_accuracy` (a scalar) and
    `test_losses`, `test_correct`; then `fields`, what the file says about itself (an oracle's
    score, group and replicate, the steps an unlearning run took).
    """
    forget = rows_subset(dataset.train, rows)
    retain = rows_subset(dataset.train, np.setdiff1d(np.arange(len(dataset.train)), rows))
    f = split_metrics(model, forget, batch_size, device)
    r = split_metrics(model, retain, batch_size, device)
    t = split_metrics(model, dataset.test, batch_size, device)
    return io.save_npz(
        path,
        forget_index=forget.index.numpy(),
        forget_losses=f["losses"],
        forget_phi=f["phi"],
        forget_correct=f["correct"],
        retain_accuracy=np.float64(r["correct"].mean()),
        test_losses=t["losses"],
        test_correct=t["correct"],
        **fields,
    )
