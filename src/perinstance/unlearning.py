"""Unlearning runs: fine-tuning, SGLD, L1-sparse, NegGrad+, SCRUB, random-label and SalUn.

Each method is one function, registered in METHODS under its config name (unlearning.methods;
plan.UNLEARNING_METHODS and the config schema list the same names), that prepares a run (SCRUB's
teacher, SalUn's saliency mask) and returns its step: one update per batch of the retain set
D minus G, which may also use batches of G (NegGrad+, SCRUB, random-label, SalUn). Steps-to-unlearn
counts these steps for every method, under the same oracle criterion. Each run starts from an
original model, takes such steps, and is evaluated every `eval_every` steps (step 0 included)
on the forget group G, a fixed subset of the retain set and the test split. With an oracle band
given, a run may stop once the forget loss has held inside the band for the required number of
consecutive evaluations (plus a margin), which keeps already-unlearned groups cheap, or, with
unlearning.stop_when_overshot, once it has stayed above the band (an over-forgetting method that
will not come back to it); the curve then ends there. The loss-barrier endpoint is the
model after exactly `barrier.unlearning_steps` steps of every run, stopped early or not (see `unlearn`).
"""

from __future__ import annotations

import copy
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
from .training import epoch_batches, langevin_noise_, run_weights, steps_per_epoch

# the config keys unlearning.<key> that only some methods read (UnlearningRecipe's last fields)
METHOD_SETTINGS = (
    "neggrad_alpha",
    "scrub_alpha",
    "scrub_gamma",
    "scrub_temperature",
    "scrub_max_epochs",
    "salun_fraction",
)


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
    # the methods' own settings; the defaults are the config schema's (unlearning.<key>)
    neggrad_alpha: float = 0.99
    scrub_alpha: float = 0.001
    scrub_gamma: float = 0.99
    scrub_temperature: float = 4.0
    scrub_max_epochs: int = 2
    salun_fraction: float = 0.5

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
            **{key: spec[key] for key in METHOD_SETTINGS},
        )


# --------------------------------------------------------------------------- the methods


class UnlearningStep(Protocol):
    """One unlearning step on a retain-set batch (xb, yb): update the run's model in place through
    `optimizer` (plain SGD with the recipe's lr, momentum and weight decay); `noise` is the run's
    noise stream. Steps-to-unlearn counts these calls, whatever a method does inside one."""

    def __call__(
        self, optimizer: SGD, xb: torch.Tensor, yb: torch.Tensor, noise: torch.Generator
    ) -> None: ...


class UnlearningMethod(Protocol):
    """Prepares one run of a method: gets the original model (already on the run's device), the
    forget group's batch stream and the recipe; returns the run's step."""

    def __call__(self, model: torch.nn.Module, data: RunData, recipe: UnlearningRecipe) -> UnlearningStep: ...


class RunData:
    """What a method sees of its run's data: the retain epoch's length in steps, and the forget
    group G (forget_x, forget_y on the run's device) in batches of recipe.batch_size examples (all
    of G when smaller), each pass over G in a fresh order drawn from a generator of its own, so a
    run's retain-batch stream is the same whichever method runs. `forget_random_y` holds one random
    label per example, drawn once per run uniformly from all classes, as the random-label
    implementations of SalUn (Fan et al. 2024) and RUM do."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        num_classes: int,
        batch_size: int,
        steps_per_retain_epoch: int,
        seed: int,
    ):
        self.forget_x, self.forget_y = x, y
        self.steps_per_retain_epoch = steps_per_retain_epoch
        self.generator = torch.Generator().manual_seed(seed)
        self.forget_random_y = torch.randint(0, num_classes, y.shape, generator=self.generator).to(y.device)
        self.batch_size = min(batch_size, len(y))
        self._pending: list[torch.Tensor] = []

    def forget_epoch(self) -> list[torch.Tensor]:
        """Example positions of every batch of one pass over G."""
        return list(torch.randperm(len(self.forget_y), generator=self.generator).split(self.batch_size))

    def forget_batch(self) -> torch.Tensor:
        """Positions of the next batch, passing over G again when the current pass is used up."""
        if not self._pending:
            self._pending = self.forget_epoch()
        return self._pending.pop(0)


def _descend(optimizer: SGD, loss: torch.Tensor, mask: list[tuple[torch.Tensor, torch.Tensor]] = ()) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for p, keep in mask:  # SalUn: only the salient weights move (weight decay still acts on all)
        if p.grad is not None:
            p.grad.mul_(keep)
    optimizer.step()


def finetune(model, data, recipe) -> UnlearningStep:
    """Fine-tuning: an SGD step on the retain-set cross-entropy."""

    def step(optimizer, xb, yb, noise):
        _descend(optimizer, F.cross_entropy(model(xb), yb))

    return step


def sgld(model, data, recipe) -> UnlearningStep:
    """SGLD: the fine-tuning step, then N(0, 2 lr / beta) noise on every parameter (unlearning.sgld_beta)."""

    def step(optimizer, xb, yb, noise):
        _descend(optimizer, F.cross_entropy(model(xb), yb))
        langevin_noise_(model, lr=recipe.lr, beta=recipe.sgld_beta, generator=noise)

    return step


def l1sparse(model, data, recipe) -> UnlearningStep:
    """L1-sparse fine-tuning (Jia et al. 2023): an SGD step on the cross-entropy plus
    gamma ||theta||_1 (unlearning.l1_gamma)."""

    def step(optimizer, xb, yb, noise):
        penalty = sum(p.abs().sum() for p in model.parameters())
        _descend(optimizer, F.cross_entropy(model(xb), yb) + recipe.l1_gamma * penalty)

    return step


def neggrad_plus(model, data, recipe) -> UnlearningStep:
    """NegGrad+ (Kurmanji et al. 2023; RUM's `NG`): descent on the retain batch and ascent on a forget
    batch, alpha * CE(retain) - (1 - alpha) * CE(forget) with alpha = unlearning.neggrad_alpha."""
    alpha = recipe.neggrad_alpha

    def step(optimizer, xb, yb, noise):
        rows = data.forget_batch()
        ascent = F.cross_entropy(model(data.forget_x[rows]), data.forget_y[rows])
        _descend(optimizer, alpha * F.cross_entropy(model(xb), yb) - (1 - alpha) * ascent)

    return step


def _distill_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """SCRUB's distillation loss: T^2 KL(softmax(teacher / T) || softmax(student / T)), batch mean."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def scrub(model, data, recipe) -> UnlearningStep:
    """SCRUB (Kurmanji et al. 2023): the original model is a frozen teacher; the student (the run's
    model) alternates max steps, which push its outputs on G away from the teacher's (ascent on the
    distillation KL), and min steps on the retain batch, gamma CE + alpha KL(teacher || student)
    (unlearning.scrub_gamma, scrub_alpha, temperature scrub_temperature). As in SCRUB, the max
    phase runs only in the first unlearning.scrub_max_epochs epochs: a pass of max steps over G
    before the first step of each of those retain epochs (inside that step, so steps-to-unlearn
    counts retain batches, as for every method)."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    temperature = recipe.scrub_temperature
    calls = 0

    def step(optimizer, xb, yb, noise):
        nonlocal calls
        epoch, position = divmod(calls, data.steps_per_retain_epoch)
        if position == 0 and epoch < recipe.scrub_max_epochs:
            for rows in data.forget_epoch():
                fx = data.forget_x[rows]
                with torch.no_grad():
                    target = teacher(fx)
                _descend(optimizer, -_distill_kl(model(fx), target, temperature))
        calls += 1
        with torch.no_grad():
            target = teacher(xb)
        logits = model(xb)
        loss = recipe.scrub_gamma * F.cross_entropy(logits, yb) + recipe.scrub_alpha * _distill_kl(
            logits, target, temperature
        )
        _descend(optimizer, loss)

    return step


def _random_label_step(model, data, mask=()) -> UnlearningStep:
    def step(optimizer, xb, yb, noise):
        rows = data.forget_batch()
        relabelled = F.cross_entropy(model(data.forget_x[rows]), data.forget_random_y[rows])
        _descend(optimizer, F.cross_entropy(model(xb), yb) + relabelled, mask)

    return step


def random_label(model, data, recipe) -> UnlearningStep:
    """Random-label unlearning (Graves et al. 2021; RUM's and SalUn's `RL`): fine-tuning on the
    retain batch plus a forget batch under its random labels (RunData.forget_random_y),
    CE(retain) + CE(forget, random labels)."""
    return _random_label_step(model, data)


def salun(model, data, recipe) -> UnlearningStep:
    """SalUn (Fan et al. 2024): random-label unlearning restricted to the salient weights. The
    saliency of a weight is |d CE(G) / d theta| at the original model (the summed loss over G); the
    unlearning.salun_fraction of all weights with the largest saliency (one threshold over the
    whole network, as SalUn's hard threshold) get their gradient, the others' is zeroed."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) for p in params]
    for rows in data.forget_epoch():
        loss = F.cross_entropy(model(data.forget_x[rows]), data.forget_y[rows], reduction="sum")
        for g, d in zip(grads, torch.autograd.grad(loss, params)):
            g.add_(d)
    grads = [g.abs() for g in grads]
    saliency = torch.cat([g.flatten() for g in grads])
    keep = max(1, round(recipe.salun_fraction * saliency.numel()))
    threshold = torch.topk(saliency, keep, sorted=True).values[-1]
    mask = [(p, (g >= threshold).to(p.dtype)) for p, g in zip(params, grads)]
    return _random_label_step(model, data, mask)


METHODS: dict[str, UnlearningMethod] = {
    "finetune": finetune,
    "sgld": sgld,
    "l1sparse": l1sparse,
    "neggrad_plus": neggrad_plus,
    "scrub": scrub,
    "random_label": random_label,
    "salun": salun,
}


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
    overshoot_evaluations: int | None = None,
    snapshot_at: int | None = None,
    evaluate_until: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one unlearning job in place on `model`.

    forget_rows: rows of dataset.train forming G. band: (center, half_width) of the oracle band
    on the mean forget loss; when given, stop after the loss held inside it for `consecutive`
    evaluations and `stop_margin` more steps. overshoot_evaluations: with a band, also stop (as
    `overshot`, the criterion unmet) once the loss has stayed above the band's upper edge for this
    many consecutive evaluations (`overshot`: the rule fired, even where evaluate_until or
    k_max came first). Returns the curve (one row per evaluation) and the per-example
    forget records (loss, phi, correct at every evaluation).

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
    data = RunData(
        forget.x.to(device),
        forget.y.to(device),
        num_classes=dataset.num_classes,
        batch_size=recipe.batch_size,
        steps_per_retain_epoch=steps_per_epoch(len(retain_rows), recipe.batch_size, "shuffle"),
        seed=seed + 104_729,
    )
    model.train()
    take_step = METHODS[recipe.method](model, data, recipe)

    curve: list[dict[str, float]] = []
    per_example: list[pd.DataFrame] = []
    inside_run, above_run, stop_at, overshot = 0, 0, None, False

    def evaluate(step: int) -> None:
        nonlocal inside_run, above_run, stop_at, overshot
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
            above_run = above_run + 1 if row["forget_loss"] > band[0] + band[1] else 0
            if inside_run >= consecutive:
                stop_at = max(step + stop_margin, evaluate_until)
            elif overshoot_evaluations is not None and above_run >= overshoot_evaluations:
                stop_at, overshot = max(step, evaluate_until), True
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
            take_step(optimizer, xb, yb, noise_gen)
            step += 1
            bar.update(1)
            if not finished:
                if (
                    step % recipe.eval_every == 0
                    or step == recipe.k_max
                    or (stop_at is not None and step >= stop_at)
                ):
                    evaluate(step)  # the curve always ends with the final model
                    model.train()
                # an evaluation may have just set stop_at to this very step
                if step >= recipe.k_max or (stop_at is not None and step >= stop_at):
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
        "overshot": overshot,
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
        overshoot_evaluations=spec["stop_when_overshot"],
        snapshot_at=config["barrier"]["unlearning_steps"],
        evaluate_until=max(spec["gap_budgets"]),
        progress=progress,
    )
    # column `seed` holds the run index u, as the tables have always named it
    labels = dict(method=method, score=score, group=group, seed=run, original_seed=original_seed(config, run))
    curve = result["curve"].assign(
        **labels, stopped_early=result["stopped_early"], overshot=result["overshot"]
    )
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
