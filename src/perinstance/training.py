"""Training of the original models with recorded training dynamics.

One run = (config, seed). It writes a run directory:

    model.pt          final weights (state_dict)
    checkpoints/      step_XXXXXXX.pt at the configured schedule, checkpoints.csv indexes them;
                      optimizer_step_XXXXXXX.pt, the optimizer state (momentum buffers) at the checkpoint
                      of epoch barrier.spawn_epoch only, from which the spawned oracle continues
    dynamics.npz      per-presentation records (step, example, correct, loss, in-batch grad norm),
                      the lr of every step, and logits of every training example after `early_epoch`
    history.csv       loss/accuracy on the full train and test splits over training (F0)
    summary.json      provenance and final numbers, among them the run's own `seed`

Other modules read a run directory through run_weights, run_history, run_seed, load_run_dynamics,
load_checkpoint_index and optimizer_state_file, never by file names of their own.

The run is built in a `.partial` sibling directory and published with one rename; a resume
state saved there after every epoch lets an interrupted run continue bit-identically.

Update rule. Under `training.sampling: poisson` a step back-propagates the sum of the realised
batch's per-example losses divided by the EXPECTED batch size B (training.batch_size), the rule the
privacy accounting assumes (one example moves the step by lr * g(x) / B); an empty Poisson batch is
a pure weight-decay / momentum (and SGLD noise) step. Under `shuffle` it back-propagates the mean
over the batch: the short last batch of an epoch then takes steps of lr * g(x) / b with b < B,
which the accounting approximates by B (docs/accounting.md).
"""

from __future__ import annotations

import hashlib
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
from .inference import loss_and_accuracy, predict_logits, resolve_device
from .models import build_from_config
from .optim import SGD
from .pergrad import loss_backward_with_norms

# the files of a run directory (module docstring)
WEIGHTS_FILE = "model.pt"
DYNAMICS_FILE = "dynamics.npz"
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_INDEX_FILE = "checkpoints.csv"
RESUME_FILE = "resume.pt"
DYNAMICS_KEYS = (
    "presentation_step",
    "presentation_example",
    "presentation_correct",
    "presentation_loss",
    "presentation_grad_norm",
    "lr",
    "steps_per_epoch",
    "batch_size",
    "train_index",
    "train_label",
    "early_epoch",
    "early_logits",
)


class DivergedRun(ValueError):
    """Training produced a non-finite loss or weight.

    The message names the seed, the step and the config key.
    """


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


def optimizer_state_file(step: int) -> str:
    """Run-relative name of the optimizer state saved beside the checkpoint of `step`."""
    return f"checkpoints/optimizer_step_{step:07d}.pt"


def optimizer_state_step(config: dict[str, Any], n_steps_per_epoch: int) -> int | None:
    """The step whose checkpoint also gets the optimizer state: that of epoch barrier.spawn_epoch,
    when it is a checkpoint before the final step (never in the lean runs of retrain.py, whose only
    checkpoint is the final one)."""
    spawn = (config.get("barrier") or {}).get("spawn_epoch")
    if spawn is None:
        return None
    training = config["training"]
    step = int(spawn) * n_steps_per_epoch
    total = training["epochs"] * n_steps_per_epoch
    at = checkpoint_steps(training["checkpoints"], n_steps_per_epoch, training["epochs"])
    return step if step < total and step in at else None


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


def langevin_noise_(model: torch.nn.Module, *, lr: float, beta: float, generator: torch.Generator) -> None:
    """Add N(0, 2 lr / beta) noise to every parameter in place: the Langevin term of an SGLD step."""
    std = math.sqrt(2.0 * lr / beta)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype), alpha=std)


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
    def empty(cls) -> _Recorder:
        return cls([], [], [], [], [])

    def add(
        self,
        step: int,
        example: torch.Tensor,
        logits: torch.Tensor,
        y: torch.Tensor,
        losses: torch.Tensor,
        norms: torch.Tensor | None,
    ) -> None:
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
    def from_state(cls, state: dict[str, torch.Tensor]) -> _Recorder:
        return cls(*([state[k]] for k in ("step", "example", "correct", "loss", "grad_norm")))


def _initial_model(config: dict[str, Any], dataset: Dataset, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_from_config(config, dataset)


def _history_row(
    model, dataset: Dataset, epoch: int, step: int, batch_size: int, device, elapsed: float
) -> dict:
    row: dict[str, float] = {"epoch": epoch, "step": step, "seconds": elapsed}
    for split_name, split in (("train", dataset.train), ("test", dataset.test)):
        loss, accuracy = loss_and_accuracy(predict_logits(model, split.x, batch_size, device), split.y)
        row[f"{split_name}_loss"] = loss
        row[f"{split_name}_accuracy"] = accuracy
    return row


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _split_fingerprint(split: Split) -> str:
    # Indices and labels identify which examples a run saw (a subset for holdouts and oracles);
    # the pixels follow from them and the dataset config, which the run fingerprint also holds.
    h = hashlib.sha256(json.dumps({"x": list(split.x.shape), "dtype": str(split.x.dtype)}).encode())
    h.update(_tensor_bytes(split.index.to(torch.int64)))
    h.update(_tensor_bytes(split.y.to(torch.int64)))
    return h.hexdigest()


def _state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key]
        h.update(json.dumps([key, str(tensor.dtype), list(tensor.shape)]).encode())
        h.update(_tensor_bytes(tensor))
    return h.hexdigest()


def _optimizer_fingerprint(state: dict[str, Any]) -> str:
    """sha256 of an optimizer state_dict: its hyperparameters and every buffer."""
    h = hashlib.sha256(json.dumps(state.get("param_groups"), sort_keys=True, default=repr).encode())
    for index, buffers in sorted(state.get("state", {}).items(), key=lambda item: str(item[0])):
        for name, value in sorted(buffers.items()):
            h.update(json.dumps([str(index), name]).encode())
            h.update(_tensor_bytes(value) if isinstance(value, torch.Tensor) else repr(value).encode())
    return h.hexdigest()


def _run_fingerprint(
    config: dict[str, Any],
    seed: int,
    dataset: Dataset,
    device: torch.device,
    init_state: dict[str, torch.Tensor] | None,
    *,
    init_optimizer_state: dict[str, Any] | None = None,
    schedule: np.ndarray | None = None,
    optimizer_state_at: int | None = None,
) -> str:
    """sha256 of everything that determines a run's numbers: a resume state must carry the same one."""
    payload = {
        "dataset": config["dataset"],
        "model": config["model"],
        "training": config["training"],
        "device": config["device"],
        "device_type": device.type,  # generator states are per device type
        "seed": seed,
        "train": _split_fingerprint(dataset.train),
        "test": _split_fingerprint(dataset.test),
        "init_state": None if init_state is None else _state_fingerprint(init_state),
        "init_optimizer_state": None
        if init_optimizer_state is None
        else _optimizer_fingerprint(init_optimizer_state),
        "schedule": None
        if schedule is None
        else hashlib.sha256(np.ascontiguousarray(schedule, dtype=np.float64).tobytes()).hexdigest(),
        "optimizer_state_at": optimizer_state_at,  # a partial run must hold the spawn epoch's optimizer state
        "update_rule": "sum / expected B" if config["training"]["sampling"] == "poisson" else "batch mean",
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(canonical.encode()).hexdigest()


_RESUME_KEYS = frozenset(
    {
        "fingerprint",
        "model",
        "optimizer",
        "batch_gen",
        "noise_gen",
        "recorder",
        "history",
        "checkpoint_rows",
        "early_logits",
        "epoch",
        "elapsed",
    }
)


def _read_resume(work: Path, fingerprint: str) -> tuple[dict[str, Any] | None, str | None]:
    """The resume state in `work` if it belongs to this run, else (None, why it is not used)."""
    path = work / RESUME_FILE
    if not path.is_file():
        return None, "it holds no finished epoch"
    try:
        state = io.load_torch(path)
    except io.CorruptArtefact:
        return None, f"its {RESUME_FILE} cannot be read (truncated or corrupt)"
    if not isinstance(state, dict) or "fingerprint" not in state:
        return None, f"its {RESUME_FILE} carries no run fingerprint (written by an older version)"
    if state["fingerprint"] != fingerprint:
        return None, "it was started with a different configuration, seed, training data or initial weights"
    if not _RESUME_KEYS <= set(state):
        return None, f"its {RESUME_FILE} is incomplete"
    return state, None


def _divergence(recorder: _Recorder, first: int, model: torch.nn.Module) -> tuple[str, int | None] | None:
    """What became non-finite in the epoch whose presentations start at `first`, and at which step."""
    if len(recorder.loss) > first:
        losses = torch.cat(recorder.loss[first:])
        bad = ~torch.isfinite(losses)
        if bad.any():
            return "training loss", int(torch.cat(recorder.step[first:])[bad][0])
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"weight {name!r}", None
    return None


def train_run(
    config: dict[str, Any],
    seed: int,
    out_dir: str | Path,
    *,
    progress: bool = True,
    dataset: Dataset | None = None,
    stop_after_epoch: int | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    init_optimizer_state: dict[str, Any] | None = None,
    schedule: np.ndarray | None = None,
    force: bool = False,
) -> Path:
    """Train one original model and publish its run directory at `out_dir`.

    `config` must be validated (perinstance.config). `stop_after_epoch` simulates an
    interruption (tests): the run stops after that epoch, leaving only its resume state.
    `init_state` starts from given weights instead of the seed's initialization (spawned runs).
    `init_optimizer_state` (an SGD state_dict, e.g. a run's optimizer_step_XXXXXXX.pt) starts
    the optimizer from it: its momentum buffers, and its momentum / weight decay, which must be
    the config's. `schedule` gives the lr of every step (training.epochs * steps per epoch
    values) instead of the one training.lr_schedule defines: a spawned run continues another
    run's schedule with it. The run saves the optimizer state beside the checkpoint of epoch
    barrier.spawn_epoch (optimizer_state_step), and nowhere else.
    A partial run is resumed only if its fingerprint (config, seed, training data, initial
    weights and optimizer state, schedule) matches; otherwise it is discarded with a note on
    stderr. An existing `out_dir` is replaced only if it is a run directory of this project, unless `force`
    (io.RefusedOverwrite). A run whose loss or weights become non-finite raises DivergedRun and
    publishes nothing.
    """
    out_dir = Path(out_dir)
    work = io.partial_dir(out_dir)
    io.check_replaceable(out_dir, force=force)  # refuse before training, not after
    if work.exists() or work.is_symlink():
        io.check_replaceable(work, force=force)
    training = config["training"]
    device = resolve_device(config["device"])
    dataset = dataset if dataset is not None else load_dataset(**config["dataset"])
    train: Split = dataset.train
    n = len(train)
    spe = steps_per_epoch(n, training["batch_size"], training["sampling"])
    if schedule is None:
        lrs = learning_rates(training, spe)
    else:
        lrs = np.asarray(schedule, dtype=np.float64)
        if lrs.shape != (training["epochs"] * spe,) or not np.all(np.isfinite(lrs)) or np.any(lrs < 0):
            raise ValueError(
                f"schedule must hold one finite lr >= 0 per step, {training['epochs']} epochs x {spe} "
                f"steps = {training['epochs'] * spe}, got shape {lrs.shape}"
            )
    if init_optimizer_state is not None:
        for group in init_optimizer_state.get("param_groups", []):
            for key in ("momentum", "weight_decay"):
                if key in group and not math.isclose(group[key], training[key], rel_tol=1e-12, abs_tol=0.0):
                    raise ValueError(
                        f"init_optimizer_state has {key} {group[key]!r}, config key training.{key} "
                        f"is {training[key]!r}: a continued run must keep the recipe"
                    )
    save_at = set(checkpoint_steps(training["checkpoints"], spe, training["epochs"]))
    optimizer_at = optimizer_state_step(config, spe)
    fingerprint = _run_fingerprint(
        config,
        seed,
        dataset,
        device,
        init_state,
        init_optimizer_state=init_optimizer_state,
        schedule=None if schedule is None else lrs,
        optimizer_state_at=optimizer_at,
    )
    el2n_epoch = early_epoch(training)

    def fresh_work_dir(why: str) -> None:
        if work.exists() or work.is_symlink():
            if work.is_dir() and any(work.iterdir()):
                print(f"discarding the partial run in {work}: {why}", file=sys.stderr)
            io.remove_path(work, force=True)  # checked above: a marked run, empty, or forced
        (work / "checkpoints").mkdir(parents=True)
        io.write_run_marker(work, "training run", fingerprint)

    def fresh_state():
        model = _initial_model(config, dataset, seed)
        if init_state is not None:
            model.load_state_dict(init_state)
        model = model.to(device)
        optimizer = SGD(
            model.parameters(),
            lr=training["lr"],
            momentum=training["momentum"],
            weight_decay=training["weight_decay"],
        )
        if init_optimizer_state is not None:
            optimizer.load_state_dict(init_optimizer_state)  # moves the buffers to the parameters' device
        batch_gen = torch.Generator().manual_seed(seed)
        noise_gen = torch.Generator(device=device).manual_seed(seed + 1_000_003)
        return model, optimizer, batch_gen, noise_gen

    resume_path = work / RESUME_FILE
    state, why = _read_resume(work, fingerprint) if io.is_run_dir(work) else (None, "it is not a marked run")
    if state is None:
        fresh_work_dir(why)
    model, optimizer, batch_gen, noise_gen = fresh_state()
    recorder = _Recorder.empty()
    history: list[dict] = []
    checkpoint_rows: list[dict] = []
    early_logits = torch.empty(0)
    start_epoch, elapsed = 0, 0.0

    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            batch_gen.set_state(state["batch_gen"])
            noise_gen.set_state(state["noise_gen"])
            recorder = _Recorder.from_state(state["recorder"])
            history, checkpoint_rows = list(state["history"]), list(state["checkpoint_rows"])
            early_logits, start_epoch, elapsed = (
                state["early_logits"],
                int(state["epoch"]),
                float(state["elapsed"]),
            )
        except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as err:
            fresh_work_dir(f"its {RESUME_FILE} does not fit this run ({type(err).__name__})")
            model, optimizer, batch_gen, noise_gen = fresh_state()
            recorder, history, checkpoint_rows = _Recorder.empty(), [], []
            early_logits, start_epoch, elapsed = torch.empty(0), 0, 0.0
        else:
            print(f"resuming seed {seed} after epoch {start_epoch}", file=sys.stderr)

    def save_checkpoint(step: int) -> None:
        name = f"checkpoints/step_{step:07d}.pt"
        io.save_torch(model.state_dict(), work / name)
        if step == optimizer_at:  # the spawned oracle continues from here (retrain.run_spawned_oracle)
            io.save_torch(optimizer.state_dict(), work / optimizer_state_file(step))
        checkpoint_rows.append({"step": step, "epoch": step / spe, "file": name})

    if start_epoch == 0:
        if 0 in save_at:
            save_checkpoint(0)
        history.append(_history_row(model, dataset, 0, 0, training["eval_batch_size"], device, 0.0))
    sgld = training["optimizer"] == "sgld"
    record_norms = training["dynamics"]["batch_grad_norms"]
    # Poisson sampling: sum of per-example losses / expected B, the accounted rule (module docstring)
    poisson_divisor = float(training["batch_size"]) if training["sampling"] == "poisson" else None
    epochs = tqdm(
        range(start_epoch, training["epochs"]),
        desc=f"train seed {seed}",
        disable=not progress,
        initial=start_epoch,
        total=training["epochs"],
        file=sys.stderr,
        mininterval=2.0,
    )
    model.train()
    for epoch in epochs:
        started = time.perf_counter()
        first_presentation = len(recorder.loss)
        for i, batch in enumerate(epoch_batches(n, training["batch_size"], training["sampling"], batch_gen)):
            step = epoch * spe + i
            lr = float(lrs[step])
            xb, yb = (
                train.x[batch].to(device, non_blocking=True),
                train.y[batch].to(device, non_blocking=True),
            )
            if training["augment"] == "crop_flip":
                xb = crop_flip(xb, noise_gen)
            if len(batch) == 0:  # an empty Poisson batch is a pure noise / weight-decay step
                norms, logits, losses = (
                    None,
                    torch.empty(0, dataset.num_classes, device=device),
                    torch.empty(0),
                )
                loss = sum(p.sum() * 0.0 for p in model.parameters())
            elif not record_norms:
                norms = None
                logits = model(xb)
                losses = F.cross_entropy(logits, yb, reduction="none")
                loss = losses.mean() if poisson_divisor is None else losses.sum() / poisson_divisor
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            if record_norms and len(batch) > 0:
                # The mean-loss backward of the step also yields each example's gradient norm.
                logits, losses, norms = loss_backward_with_norms(model, xb, yb)
                if poisson_divisor is not None:  # mean over b -> sum / B: scale the gradient by b / B
                    with torch.no_grad():
                        for p in model.parameters():
                            if p.grad is not None:
                                p.grad.mul_(len(batch) / poisson_divisor)
            else:
                loss.backward()
            optimizer.step()
            if sgld:
                langevin_noise_(model, lr=lr, beta=training["sgld_beta"], generator=noise_gen)
            recorder.add(step, batch, logits.detach(), yb, losses, norms)
            if step + 1 in save_at:
                save_checkpoint(step + 1)
        elapsed += time.perf_counter() - started
        done = epoch + 1
        # Once per epoch is enough: a NaN never recovers, and a diverged run must not reach a resume state.
        diverged = _divergence(recorder, first_presentation, model)
        if diverged is not None:
            what, step = diverged
            at = f"step {step}" if step is not None else f"the end of the epoch (step {done * spe})"
            io.remove_path(work)
            raise DivergedRun(
                f"training diverged for seed {seed}: non-finite {what} in epoch {done} "
                f"of {training['epochs']}, "
                f"at {at}; lower config key training.lr (now {training['lr']!r}) or check training.momentum "
                f"and training.lr_schedule. Nothing was published to {out_dir}"
            )
        if done == el2n_epoch:
            early_logits = predict_logits(model, train.x, training["eval_batch_size"], device)
        if done % training["eval_every_epochs"] == 0 or done == training["epochs"]:
            row = _history_row(model, dataset, done, done * spe, training["eval_batch_size"], device, elapsed)
            history.append(row)
            epochs.set_postfix(
                train_acc=f"{row['train_accuracy']:.3f}", test_acc=f"{row['test_accuracy']:.3f}"
            )
            tqdm.write(json.dumps(row), file=sys.stderr)
        io.save_torch(
            {
                "fingerprint": fingerprint,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "batch_gen": batch_gen.get_state(),
                "noise_gen": noise_gen.get_state(),
                "recorder": recorder.state(),
                "history": history,
                "checkpoint_rows": checkpoint_rows,
                "early_logits": early_logits,
                "epoch": done,
                "elapsed": elapsed,
            },
            resume_path,
        )
        if stop_after_epoch is not None and done >= stop_after_epoch and done < training["epochs"]:
            return work

    _write_outputs(
        work,
        config,
        seed,
        dataset,
        model,
        recorder,
        lrs,
        spe,
        el2n_epoch,
        early_logits,
        history,
        checkpoint_rows,
        elapsed,
        device,
    )
    resume_path.unlink()
    return io.publish_dir(work, out_dir, force=force)


def _write_outputs(
    work: Path,
    config,
    seed,
    dataset: Dataset,
    model,
    recorder: _Recorder,
    lrs,
    spe,
    el2n_epoch,
    early_logits,
    history,
    checkpoint_rows,
    elapsed,
    device,
) -> None:
    training = config["training"]
    dynamics = recorder.state()
    io.save_npz(
        work / DYNAMICS_FILE,
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
    io.save_table(pd.DataFrame(checkpoint_rows).sort_values("step"), work / CHECKPOINT_INDEX_FILE)
    io.save_table(pd.DataFrame(history), work / HISTORY_FILE)
    io.save_torch(model.state_dict(), work / WEIGHTS_FILE)
    final = history[-1]
    io.save_json(
        {
            "experiment": config["experiment"],
            "seed": seed,
            "dataset": dataset.name,
            "n_train": len(dataset.train),
            "n_test": len(dataset.test),
            "model": config["model"],
            "steps": int(len(lrs)),
            "steps_per_epoch": int(spe),
            "checkpoints": len(checkpoint_rows),
            "train_accuracy": final["train_accuracy"],
            "test_accuracy": final["test_accuracy"],
            "train_seconds": elapsed,
            "device": str(device),
            "torch": torch.__version__,
            "update_rule": "sum / expected B" if training["sampling"] == "poisson" else "batch mean",
            "python": platform.python_version(),
            "training": training,
        },
        work / SUMMARY_FILE,
    )


# --------------------------------------------------------------------------- reading a run directory


def run_weights(run_dir: str | Path) -> Path:
    """The final weights (state_dict) of a run directory."""
    return Path(run_dir) / WEIGHTS_FILE


def run_history(run_dir: str | Path) -> Path:
    """The history.csv of a run directory: loss and accuracy on the train and test splits over training."""
    return Path(run_dir) / HISTORY_FILE


def run_seed(run_dir: str | Path) -> int:
    """The seed a finished run was trained with, as its own summary.json records it."""
    path = Path(run_dir) / SUMMARY_FILE
    summary = io.load_json(path)
    if not isinstance(summary, dict) or not isinstance(summary.get("seed"), int):
        raise io.CorruptArtefact(
            f"{path}: records no integer 'seed' (not a summary of a training run); "
            "delete the run directory and rerun"
        )
    return summary["seed"]


def load_run_dynamics(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The dynamics.npz of a finished run directory."""
    return io.load_npz(Path(run_dir) / DYNAMICS_FILE, required=DYNAMICS_KEYS)


def load_checkpoint_index(run_dir: str | Path) -> pd.DataFrame:
    """The checkpoints.csv of a run directory (step, epoch, run-relative file); every file must exist."""
    run_dir = Path(run_dir)
    index = io.load_table(run_dir / CHECKPOINT_INDEX_FILE)
    absent = [c for c in ("step", "epoch", "file") if c not in index.columns]
    if absent:
        raise io.CorruptArtefact(
            f"{run_dir / CHECKPOINT_INDEX_FILE}: missing column(s) {', '.join(absent)}; "
            "delete the run directory and rerun"
        )
    missing = [f for f in index["file"] if not (run_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"run {run_dir} lists checkpoints that do not exist: {missing[:3]}")
    return index
