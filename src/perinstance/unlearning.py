"""Unlearning runs: fine-tuning, SGLD and L1-sparse fine-tuning on the retain set D minus G.

Each method is one function that takes one step on a batch of the retain set, registered in
METHODS under its config name (unlearning.methods; plan.UNLEARNING_METHODS and the config schema
list the same names). Each run starts from an original model, takes such steps, and is
evaluated every `eval_every` steps (step 0 included) on the forget group G, a fixed subset of the
retain set and the test split. With an oracle band given, a run may stop once the forget loss has
held inside the band for the required number of consecutive evaluations (plus a margin), which
keeps already-unlearned groups cheap; the curve then ends there. The loss-barrier endpoint is the
model after exactly `barrier.unlearning_steps` steps of every run, stopped early or not (see `unlearn`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import io
from .data import Dataset, load_dataset
from .evaluation import oracle_band
from .groups import forget_rows
from .inference import load_model, resolve_device, rows_subset, save_evaluation, split_metrics
from .optim import SGD
from .plan import original_seed
from .training import epoch_batches, langevin_noise_, run_weights


@dataclass(frozen=True)
class UnlearningRecipe:
    """One method's settings for an unlearning run (config keys unlearning.*)."""

    method: str
    lr: float
    momentum: float
    weight_decay: float
    batch_size: int
    sgld_beta: float
    l1_gamma: float
    k_max: int
    eval_every: int

    @classmethod
    def from_config(cls, config: dict[str, Any], method: str) -> UnlearningRecipe:
        """Unlearning settings; unset optimizer keys fall back to the training recipe."""
        if method not in METHODS:
            raise ValueError(
                f"unknown unlearning method {method!r} (config key unlearning.methods); "
                f"available: {', '.join(METHODS)}"
            )
        spec, training = config["unlearning"], config["training"]

        def pick(key: str):
            return spec[key] if spec[key] is not None else training[key]

        return cls(
            method=method,
            lr=pick("lr"),
            momentum=pick("momentum"),
            weight_decay=pick("weight_decay"),
            batch_size=pick("batch_size"),
            sgld_beta=spec["sgld_beta"],
            l1_gamma=spec["l1_gamma"],
            k_max=spec["k_max"],
            eval_every=spec["eval_every"],
        )


# --------------------------------------------------------------------------- the methods


class UnlearningStep(Protocol):
    """One unlearning step on a retain-set batch (xb, yb): update `model` in place through `optimizer`
    (plain SGD with the recipe's lr, momentum and weight decay); `noise` is the run's noise stream."""

    def __call__(
        self,
        model: torch.nn.Module,
        optimizer: SGD,
        xb: torch.Tensor,
        yb: torch.Tensor,
        recipe: UnlearningRecipe,
        noise: torch.Generator,
    ) -> None: ...


def _descend(optimizer: SGD, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def finetune(model, optimizer, xb, yb, recipe, noise) -> None:
    """Fine-tuning: an SGD step on the retain-set cross-entropy."""
    _descend(optimizer, F.cross_entropy(model(xb), yb))


def sgld(model, optimizer, xb, yb, recipe, noise) -> None:
    """SGLD: the fine-tuning step, then N(0, 2 lr / beta) noise on every parameter (unlearning.sgld_beta)."""
    finetune(model, optimizer, xb, yb, recipe, noise)
    langevin_noise_(model, lr=recipe.lr, beta=recipe.sgld_beta, generator=noise)


def l1sparse(model, optimizer, xb, yb, recipe, noise) -> None:
    """L1-sparse fine-tuning: an SGD step on the cross-entropy plus gamma ||theta||_1
    (unlearning.l1_gamma)."""
    loss = F.cross_entropy(model(xb), yb) + recipe.l1_gamma * sum(p.abs().sum() for p in model.parameters())
    _descend(optimizer, loss)


METHODS: dict[str, UnlearningStep] = {"finetune": finetune, "sgld": sgld, "l1sparse": l1sparse}


# --------------------------------------------------------------------------- a run


def unlearn(
    model: torch.nn.Module,
    dataset: Dataset,
    forget_rows: np.ndarray,
    recipe: UnlearningRecipe,
    *,
    seed: int,
    device: torch.device,
    eval_retain_size: int | None = 500,
    eval_test_size: int | None = None,
    eval_batch_size: int = 1024,
    band: tuple[float, float] | None = None,
    consecutive: int = 3,
    stop_margin: int = 0,
    snapshot_at: int | None = None,
    evaluate_until: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one unlearning job in place on `model`.

    forget_rows: rows of dataset.train forming G. band: (center, half_width) of the oracle band
    on the mean forget loss; when given, stop after the loss held inside it for `consecutive`
    evaluations and `stop_margin` more steps. Returns the curve (one row per evaluation) and the
    per-example forget records (loss, phi, correct at every evaluation).

    evaluate_until: a run that meets the criterion earlier is still trained and evaluated up to this
    step (the per-example gap statistics at fixed budgets need every run to reach them).
    snapshot_at: also return, as `snapshot` (CPU state_dict), the model after exactly that many
    steps (0 <= snapshot_at <= k_max), the same for every group: the loss-barrier endpoint
    (barrier.unlearning_steps). A run whose criterion stops it earlier keeps training, without
    evaluations, until that step, on the same batch and noise streams, so the snapshot equals the
    model of an identical run that never stops. The stop decision, the curve, `steps_run` and the
    model left in `model` (the final model) are those of the run without a snapshot.
    """
    if snapshot_at is not None and not 0 <= snapshot_at <= recipe.k_max:
        raise ValueError(
            f"the barrier endpoint after {snapshot_at} steps lies outside the run's 0..{recipe.k_max} "
            "steps (config keys barrier.unlearning_steps, unlearning.k_max)"
        )
    if recipe.method not in METHODS:
        raise ValueError(f"unknown unlearning method {recipe.method!r}; available: {', '.join(METHODS)}")
    take_step = METHODS[recipe.method]
    n = len(dataset.train)
    forget_rows = np.unique(np.asarray(forget_rows, dtype=np.int64))
    if forget_rows.size == 0 or forget_rows.min() < 0 or forget_rows.max() >= n:
        raise ValueError(f"forget rows must be a non-empty subset of 0..{n - 1}")
    retain_rows = np.setdiff1d(np.arange(n), forget_rows)
    rng = np.random.default_rng(seed)
    forget = rows_subset(dataset.train, forget_rows)
    retain_eval = rows_subset(
        dataset.train,
        np.sort(
            rng.choice(
                retain_rows, size=min(eval_retain_size or len(retain_rows), len(retain_rows)), replace=False
            )
        ),
    )
    test_rows = np.arange(len(dataset.test))
    if eval_test_size is not None and eval_test_size < len(test_rows):
        test_rows = np.sort(rng.choice(test_rows, size=eval_test_size, replace=False))
    test_eval = rows_subset(dataset.test, test_rows)

    model.to(device)
    optimizer = SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    batch_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 7_919)
    retain_x, retain_y = dataset.train.x[retain_rows], dataset.train.y[retain_rows]

    curve: list[dict[str, float]] = []
    per_example: list[pd.DataFrame] = []
    inside_run, stop_at = 0, None

    def evaluate(step: int) -> None:
        nonlocal inside_run, stop_at
        f = split_metrics(model, forget, eval_batch_size, device)
        r = split_metrics(model, retain_eval, eval_batch_size, device)
        t = split_metrics(model, test_eval, eval_batch_size, device)
        row = {
            "step": step,
            "forget_loss": float(f["losses"].mean()),
            "forget_accuracy": float(f["correct"].mean()),
            "retain_loss": float(r["losses"].mean()),
            "retain_accuracy": float(r["correct"].mean()),
            "test_loss": float(t["losses"].mean()),
            "test_accuracy": float(t["correct"].mean()),
        }
        curve.append(row)
        per_example.append(
            pd.DataFrame(
                {
                    "step": step,
                    "index": forget.index.numpy(),
                    "loss": f["losses"],
                    "phi": f["phi"],
                    "correct": f["correct"],
                }
            )
        )
        if band is not None and stop_at is None:
            inside_run = inside_run + 1 if abs(row["forget_loss"] - band[0]) <= band[1] else 0
            if inside_run >= consecutive:
                stop_at = max(step + stop_margin, evaluate_until)
        bar.set_postfix(forget_loss=f"{row['forget_loss']:.3f}", test_acc=f"{row['test_accuracy']:.3f}")

    def state_copy() -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    bar = tqdm(
        total=recipe.k_max,
        desc=f"{recipe.method} seed {seed}",
        disable=not progress,
        file=sys.stderr,
        mininterval=2.0,
    )
    evaluate(0)
    step = 0
    snapshot = state_copy() if snapshot_at == 0 else None
    # the run proper (curve, final model, steps_run) has ended; a criterion met at step 0 with no
    # margin ends it before any step, as without a snapshot
    finished = step >= recipe.k_max or (stop_at is not None and step >= stop_at)
    steps_run = step
    # the final model, kept aside while the run trains on to its snapshot
    final_state = state_copy() if finished and snapshot_at is not None and step < snapshot_at else None
    model.train()
    while not finished or (snapshot_at is not None and step < snapshot_at):
        for batch in epoch_batches(len(retain_rows), recipe.batch_size, "shuffle", batch_gen):
            xb, yb = retain_x[batch].to(device), retain_y[batch].to(device)
            take_step(model, optimizer, xb, yb, recipe, noise_gen)
            step += 1
            bar.update(1)
            if not finished:
                stopping = stop_at is not None and step >= stop_at
                if step % recipe.eval_every == 0 or step == recipe.k_max or stopping:
                    evaluate(step)  # the curve always ends with the final model
                    model.train()
                if step >= recipe.k_max or stopping:
                    finished, steps_run = True, step
                    if snapshot_at is not None and step < snapshot_at:
                        final_state = state_copy()
            if step == snapshot_at:
                snapshot = state_copy()
            if finished and (snapshot_at is None or step >= snapshot_at):
                break
    bar.close()
    if final_state is not None:
        model.load_state_dict(final_state)
    return {
        "curve": pd.DataFrame(curve),
        "forget_examples": pd.concat(per_example, ignore_index=True),
        "stopped_early": stop_at is not None and steps_run < recipe.k_max,
        "steps_run": steps_run,
        "snapshot": snapshot,
        "snapshot_steps": snapshot_at,
    }


def run_unlearning_job(
    config: dict[str, Any],
    method: str,
    score: str,
    group: str,
    run: int,
    groups_csv: str | Path,
    original_run: str | Path,
    oracle_evals: Sequence[str | Path],
    *,
    curve_out: str | Path,
    examples_out: str | Path,
    final_out: str | Path,
    model_out: str | Path,
    barrier_model_out: str | Path,
    progress: bool = True,
) -> list[Path]:
    """Unlearning run u = `run` of (method, group), from the original model plan.original_seed(config, u).

    curve_out: one row per evaluation; examples_out: per-example forget records at every
    evaluation (both labelled method, score, group, seed = u, original_seed); final_out: the final
    model's evaluation (inference.save_evaluation) with `steps_run`; model_out: the final weights;
    barrier_model_out: the weights after exactly barrier.unlearning_steps steps, the loss-barrier
    endpoint, the same number of steps for every group whether or not the run stopped earlier.
    The run draws its batches and noise from seed unlearning.seed_offset + u. Returns the paths written.
    """
    dataset = load_dataset(**config["dataset"])
    rows = forget_rows(dataset, groups_csv, score, group)
    device = resolve_device(config["device"])
    model = load_model(config, dataset, run_weights(original_run), device)
    oracle_losses = []
    for path in oracle_evals:
        evaluation = io.load_npz(path, required=("forget_index", "forget_losses"))
        if not np.array_equal(evaluation["forget_index"], dataset.train.index.numpy()[rows]):
            raise ValueError(
                f"oracle evaluation {path} was not retrained without group {score}/{group} "
                "(its forget examples differ)"
            )
        oracle_losses.append(evaluation["forget_losses"].mean())
    spec, bands = config["unlearning"], config["oracles"]
    center, half_width, _ = oracle_band(np.asarray(oracle_losses), tol_abs=bands["tol_abs"], z=bands["z"])
    recipe = UnlearningRecipe.from_config(config, method)
    result = unlearn(
        model,
        dataset,
        rows,
        recipe,
        seed=spec["seed_offset"] + run,
        device=device,
        eval_retain_size=spec["eval_retain_size"],
        eval_test_size=spec["eval_test_size"],
        eval_batch_size=config["training"]["eval_batch_size"],
        band=(center, half_width) if spec["stop_when_unlearned"] else None,
        consecutive=bands["consecutive"],
        stop_margin=spec["stop_margin"],
        snapshot_at=config["barrier"]["unlearning_steps"],
        evaluate_until=max(spec["gap_budgets"]),
        progress=progress,
    )
    # column `seed` holds the run index u, as the tables have always named it
    labels = dict(method=method, score=score, group=group, seed=run, original_seed=original_seed(config, run))
    curve = result["curve"].assign(**labels, stopped_early=result["stopped_early"])
    return [
        io.save_table(curve, curve_out),
        io.save_table(result["forget_examples"].assign(**labels), examples_out),
        save_evaluation(
            final_out,
            model,
            dataset,
            rows,
            batch_size=config["training"]["eval_batch_size"],
            device=device,
            steps_run=np.int64(result["steps_run"]),
        ),
        io.save_torch(model.state_dict(), model_out),
        io.save_torch(result["snapshot"], barrier_model_out),
    ]
