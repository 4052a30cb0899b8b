"""Training of the original models with recorded training dynamics.

One run = (config, seed). It writes a run directory:

    model.pt          final weights (state_dict)
    checkpoints/      step_XXXXXXX.pt at the configured schedule, checkpoints.csv indexes them
    dynamics.npz      per-presentation records (step, example, correct, loss, in-batch grad norm),
                      the lr of every step, and logits of every training example after `early_epoch`
    history.csv       loss/accuracy on the full train and test splits over training (F0)
    summary.json      provenance and final numbers

The run is built in a `.partial` sibling directory and published with one rename; a resume
state saved there after every epoch lets an interrupted run continue bit-identically.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import io
from .data import Dataset, Split, load_dataset
from .models import build_model
from .pergrad import loss_backward_with_norms

RESUME_FILE = "resume.pt"


# --------------------------------------------------------------------------- schedules


def steps_per_epoch(n: int, batch_size: int, sampling: str) -> int:
    if sampling == "poisson":
        return max(1, round(n / batch_size))
    return math.ceil(n / batch_size)


def early_epoch(training: dict[str, Any]) -> int:
    """Epoch after which per-example logits are saved for EL2N (default: 10% of training)."""
    chosen = training["dynamics"]["early_epoch"]
    return chosen if chosen is not None else max(1, round(0.1 * training["epochs"]))


def learning_rates(training: dict[str, Any], n_steps_per_epoch: int) -> np.ndarray:
    """Learning rate of every step, float64 [epochs * steps_per_epoch]."""
    total = training["epochs"] * n_steps_per_epoch
    epoch = np.arange(total, dtype=np.float64) / n_steps_per_epoch  # fractional epoch at each step
    base = training["lr"]
    schedule = training["lr_schedule"]
    warmup = training["lr_warmup_epochs"]
    if schedule == "constant":
        lrs = np.full(total, base)
    elif schedule == "cosine":
        span = max(training["epochs"] - warmup, 1e-12)
        progress = np.clip((epoch - warmup) / span, 0.0, 1.0)
        lrs = base * 0.5 * (1.0 + np.cos(np.pi * progress))
    elif schedule == "multistep":
        passed = (epoch[:, None] >= np.asarray(training["lr_milestones"])[None, :]).sum(axis=1)
        lrs = base * training["lr_gamma"] ** passed
    else:
        raise ValueError(f"unknown lr schedule {schedule!r} (config key training.lr_schedule)")
    if warmup > 0:
        lrs = lrs * np.minimum(1.0, (epoch + 1.0 / n_steps_per_epoch) / warmup)
    return lrs


def checkpoint_steps(checkpoints: dict[str, Any], n_steps_per_epoch: int, epochs: int) -> list[int]:
    """Steps (number of updates done) at which weights are saved.

    Step 0 (optional), log-spaced early steps log_start * 2^i before the first epoch
    checkpoint, every `every_epochs` epochs, and always the final step.
    """
    total = epochs * n_steps_per_epoch
    every = checkpoints["every_epochs"] * n_steps_per_epoch
    steps = set(range(every, total + 1, every)) | {total}
    if checkpoints["step0"]:
        steps.add(0)
    if checkpoints["log_start"] is not None:
        step = checkpoints["log_start"]
        while step < min(every, total):
            steps.add(step)
            step *= 2
    return sorted(steps)


def epoch_batches(n: int, batch_size: int, sampling: str, generator: torch.Generator) -> list[torch.Tensor]:
    """Example positions of every batch of one epoch."""
    if sampling == "poisson":
        q = batch_size / n
        count = steps_per_epoch(n, batch_size, sampling)
        return [torch.nonzero(torch.rand(n, generator=generator) < q).flatten() for _ in range(count)]
    order = torch.randperm(n, generator=generator)
    return list(order.split(batch_size))


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random padded crop and horizontal flip, per example, without leaving the device."""
    n, c, h, w = x.shape
    device = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device)
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    rows = dy[:, None] + torch.arange(h, device=device)
    cols = dx[:, None] + torch.arange(w, device=device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    return padded[
        torch.arange(n, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


# --------------------------------------------------------------------------- inference


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config key 'device' is 'cuda' but torch sees no CUDA device")
    return torch.device(name)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Logits of every row of `x` (eval mode), returned on the CPU as float32."""
    was_training = model.training
    model.eval()
    out = [model(chunk.to(device, non_blocking=True)).float().cpu() for chunk in x.split(batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def loss_and_accuracy(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    loss = F.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(1) == y).float().mean().item()
    return loss, accuracy


# --------------------------------------------------------------------------- training


@dataclass
class _Recorder:
    """Per-presentation training dynamics, accumulated as tensors (resumable with weights_only)."""

    step: list[torch.Tensor]
    example: list[torch.Tensor]
    correct: list[torch.Tensor]
    loss: list[torch.Tensor]
    grad_norm: list[torch.Tensor]

    @classmethod
    def empty(cls) -> "_Recorder":
        return cls([], [], [], [], [])

    def add(self, step: int, example: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
            losses: torch.Tensor, norms: torch.Tensor | None) -> None:
        self.step.append(torch.full((len(example),), step, dtype=torch.int32))
        self.example.append(example.to(torch.int32))
        self.correct.append((logits.argmax(1) == y).cpu())
        self.loss.append(losses.detach().float().cpu())
        self.grad_norm.append(
            norms.float().cpu() if norms is not None else torch.full((len(example),), float("nan"))
        )

    def state(self) -> dict[str, torch.Tensor]:
        def cat(parts: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
            return torch.cat(parts) if parts else torch.empty(0, dtype=dtype)

        return {
            "step": cat(self.step, torch.int32),
            "example": cat(self.example, torch.int32),
            "correct": cat(self.correct, torch.bool),
            "loss": cat(self.loss, torch.float32),
            "grad_norm": cat(self.grad_norm, torch.float32),
        }

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> "_Recorder":
        return cls(*([state[k]] for k in ("step", "example", "correct", "loss", "grad_norm")))


def _initial_model(config: dict[str, Any], dataset: Dataset, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = config["model"]
    return build_model(
        spec["name"], width=spec["width"], norm_groups=spec["norm_groups"],
        num_classes=dataset.num_classes, input_shape=dataset.input_shape,
    )


def _history_row(model, dataset: Dataset, epoch: int, step: int, batch_size: int, device, elapsed: float) -> dict:
    row: dict[str, float] = {"epoch": epoch, "step": step, "seconds": elapsed}
    for split_name, split in (("train", dataset.train), ("test", dataset.test)):
        loss, accuracy = loss_and_accuracy(predict_logits(model, split.x, batch_size, device), split.y)
        row[f"{split_name}_loss"] = loss
        row[f"{split_name}_accuracy"] = accuracy
    return row


def train_run(config: dict[str, Any], seed: int, out_dir: str | Path, *, progress: bool = True,
              dataset: Dataset | None = None, stop_after_epoch: int | None = None,
              init_state: dict[str, torch.Tensor] | None = None) -> Path:
    """Train one original model and publish its run directory at `out_dir`.

    `config` must be validated (perinstance.config). `stop_after_epoch` simulates an
    interruption (tests): the run stops after that epoch, leaving only its resume state.
    `init_state` starts from given weights instead of the seed's initialization (spawned runs).
    """
    out_dir = Path(out_dir)
    work = io.partial_dir(out_dir)
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    training = config["training"]
    device = resolve_device(config["device"])
    dataset = dataset if dataset is not None else load_dataset(**config["dataset"])
    train: Split = dataset.train
    n = len(train)
    spe = steps_per_epoch(n, training["batch_size"], training["sampling"])
    lrs = learning_rates(training, spe)
    save_at = set(checkpoint_steps(training["checkpoints"], spe, training["epochs"]))
    el2n_epoch = early_epoch(training)

    model = _initial_model(config, dataset, seed)
    if init_state is not None:
        model.load_state_dict(init_state)
    model = model.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=training["lr"], momentum=training["momentum"],
        weight_decay=training["weight_decay"],
    )
    batch_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1_000_003)
    recorder = _Recorder.empty()
    history: list[dict] = []
    checkpoint_rows: list[dict] = []
    early_logits = torch.empty(0)
    start_epoch, elapsed = 0, 0.0

    resume_path = work / RESUME_FILE
    if resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        batch_gen.set_state(state["batch_gen"])
        noise_gen.set_state(state["noise_gen"])
        recorder = _Recorder.from_state(state["recorder"])
        history, checkpoint_rows = state["history"], state["checkpoint_rows"]
        early_logits, start_epoch, elapsed = state["early_logits"], state["epoch"], state["elapsed"]
        print(f"resuming seed {seed} after epoch {start_epoch}", file=sys.stderr)

    def save_checkpoint(step: int) -> None:
        name = f"checkpoints/step_{step:07d}.pt"
        io.save_torch(model.state_dict(), work / name)
        checkpoint_rows.append({"step": step, "epoch": step / spe, "file": name})

    if start_epoch == 0:
        if 0 in save_at:
            save_checkpoint(0)
        history.append(_history_row(model, dataset, 0, 0, training["eval_batch_size"], device, 0.0))
    sgld_std = training["optimizer"] == "sgld"
    record_norms = training["dynamics"]["batch_grad_norms"]
    epochs = tqdm(range(start_epoch, training["epochs"]), desc=f"train seed {seed}", disable=not progress,
                  initial=start_epoch, total=training["epochs"], file=sys.stderr, mininterval=2.0)
    model.train()
    for epoch in epochs:
        started = time.perf_counter()
        for i, batch in enumerate(epoch_batches(n, training["batch_size"], training["sampling"], batch_gen)):
            step = epoch * spe + i
            lr = float(lrs[step])
            xb, yb = train.x[batch].to(device, non_blocking=True), train.y[batch].to(device, non_blocking=True)
            if training["augment"] == "crop_flip":
                xb = crop_flip(xb, noise_gen)
            if len(batch) == 0:  # an empty Poisson batch is a pure noise / weight-decay step
                norms, logits, losses = None, torch.empty(0, dataset.num_classes, device=device), torch.empty(0)
                loss = sum(p.sum() * 0.0 for p in model.parameters())
            elif not record_norms:
                norms = None
                logits = model(xb)
                losses = F.cross_entropy(logits, yb, reduction="none")
                loss = losses.mean()
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            if record_norms and len(batch) > 0:
                # The mean-loss backward of the step also yields each example's gradient norm.
                logits, losses, norms = loss_backward_with_norms(model, xb, yb)
            else:
                loss.backward()
            optimizer.step()
            if sgld_std:
                std = math.sqrt(2.0 * lr / training["sgld_beta"])
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(torch.randn(p.shape, generator=noise_gen, device=device, dtype=p.dtype), alpha=std)
            recorder.add(step, batch, logits.detach(), yb, losses, norms)
            if step + 1 in save_at:
                save_checkpoint(step + 1)
        elapsed += time.perf_counter() - started
        done = epoch + 1
        if done == el2n_epoch:
            early_logits = predict_logits(model, train.x, training["eval_batch_size"], device)
        if done % training["eval_every_epochs"] == 0 or done == training["epochs"]:
            row = _history_row(model, dataset, done, done * spe, training["eval_batch_size"], device, elapsed)
            history.append(row)
            epochs.set_postfix(train_acc=f"{row['train_accuracy']:.3f}", test_acc=f"{row['test_accuracy']:.3f}")
            tqdm.write(json.dumps(row), file=sys.stderr)
        io.save_torch(
            {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "batch_gen": batch_gen.get_state(), "noise_gen": noise_gen.get_state(),
                "recorder": recorder.state(), "history": history, "checkpoint_rows": checkpoint_rows,
                "early_logits": early_logits, "epoch": done, "elapsed": elapsed,
            },
            resume_path,
        )
        if stop_after_epoch is not None and done >= stop_after_epoch and done < training["epochs"]:
            return work

    _write_outputs(work, config, seed, dataset, model, recorder, lrs, spe, el2n_epoch, early_logits,
                   history, checkpoint_rows, elapsed, device)
    resume_path.unlink()
    return io.publish_dir(work, out_dir)


def _write_outputs(work: Path, config, seed, dataset: Dataset, model, recorder: _Recorder, lrs, spe,
                   el2n_epoch, early_logits, history, checkpoint_rows, elapsed, device) -> None:
    training = config["training"]
    dynamics = recorder.state()
    io.save_npz(
        work / "dynamics.npz",
        presentation_step=dynamics["step"].numpy(),
        presentation_example=dynamics["example"].numpy(),
        presentation_correct=dynamics["correct"].numpy(),
        presentation_loss=dynamics["loss"].numpy(),
        presentation_grad_norm=dynamics["grad_norm"].numpy(),
        lr=lrs,
        steps_per_epoch=np.int64(spe),
        batch_size=np.int64(training["batch_size"]),
        train_index=dataset.train.index.numpy(),
        train_label=dataset.train.y.numpy(),
        early_epoch=np.int64(el2n_epoch),
        early_logits=early_logits.numpy(),
    )
    io.save_table(pd.DataFrame(checkpoint_rows).sort_values("step"), work / "checkpoints.csv")
    io.save_table(pd.DataFrame(history), work / "history.csv")
    io.save_torch(model.state_dict(), work / "model.pt")
    final = history[-1]
    io.save_json(
        {
            "experiment": config["experiment"], "seed": seed, "dataset": dataset.name,
            "n_train": len(dataset.train), "n_test": len(dataset.test), "model": config["model"],
            "steps": int(len(lrs)), "steps_per_epoch": int(spe), "checkpoints": len(checkpoint_rows),
            "train_accuracy": final["train_accuracy"], "test_accuracy": final["test_accuracy"],
            "train_seconds": elapsed, "device": str(device), "torch": torch.__version__,
            "python": platform.python_version(), "training": training,
        },
        work / "summary.json",
    )


def load_run_dynamics(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The dynamics.npz of a finished run directory."""
    return io.load_npz(Path(run_dir) / "dynamics.npz")


def load_checkpoint_index(run_dir: str | Path) -> pd.DataFrame:
    run_dir = Path(run_dir)
    index = io.load_table(run_dir / "checkpoints.csv")
    missing = [f for f in index["file"] if not (run_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"run {run_dir} lists checkpoints that do not exist: {missing[:3]}")
    return index
