"""Per-instance privacy losses for any PyTorch training loop: `PrivacyTracker`.

The tracker is the workflow's online estimator (`privacy.online_rdp`) packaged for a training
loop the user writes: each call of `PrivacyTracker.backward` runs one forward and one backward
of the batch (the user then calls ``optimizer.step()``), and records every example's gradient
norm in that batch, obtained from the same backward by `pergrad.loss_backward_with_norms`, and
the step's learning rate. `PrivacyTracker.privacy_losses` composes them into P(x, alpha):

- one step is the Poisson-subsampled Gaussian mechanism at rate q = B / n with sensitivity
  lr * g(x) / B and noise std sqrt(2 lr / beta) (beta = the accounting inverse temperature,
  config key privacy.beta), its RDP from Opacus (`privacy.subsampled_gaussian_rdp`);
- the mean of an example's in-batch norms over an epoch stands for every step of that epoch,
  those where it was not in the batch included; an epoch in which it was never drawn reuses its
  latest earlier observation, or the first later one (`privacy.online_norms`);
- steps compose by summation.

Per-epoch sums and counts of the norms are accumulated as the run goes (float64 [epochs, n]),
so memory does not grow with the number of steps (one float per step for the learning rates).

What the estimate leaves out (docs/accounting.md, docs/tracker.md): momentum (the update
accounted is plain SGD), shuffled batches treated as Poisson subsampling at rate q (and a short
last batch as a batch of B), augmentation (the norms are those of the inputs as trained on), the
change of g(x) between the steps of an epoch, and the noise itself (training is noiseless unless
the user adds it; the accounting assumes the noise of beta). The numbers are per-instance
estimates of how much one example moves the run, not differential-privacy guarantees.

Models with BatchNorm are refused: in train mode an example's gradient depends on the other
examples of its batch, so a per-instance loss is not defined
(`perinstance.model_checks.batchnorm_to_groupnorm` converts them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .pergrad import LossFn, loss_backward_with_norms, unsupported_modules
from .privacy import epoch_step_groups, per_instance_rdp, rdp_orders
from .training import steps_per_epoch as _default_steps_per_epoch

__all__ = ["DEFAULT_ORDERS", "SAMPLINGS", "PrivacyTracker", "TrackedBatch"]

# The defaults of the config keys privacy.orders / alpha / beta / rdp_method / max_lr_levels
# (tests/test_tracker.py checks them against the schema).
DEFAULT_ORDERS = (1.25, 1.5, 2.0, 3.0, 4.0, 8.0, 16.0, 32.0, 64.0)
SAMPLINGS = ("shuffle", "poisson")
_STATE_VERSION = 1
# What a saved state must share with the tracker that loads it: the norms and step count mean
# nothing under another sampling structure. The accounting parameters (alpha, beta, orders, clip,
# rdp_method, max_lr_levels) may differ: P is recomputed from the stored norms.
_STRUCTURE_KEYS = ("n", "batch_size", "steps_per_epoch", "sampling", "keep_presentations")


@dataclass(frozen=True)
class TrackedBatch:
    """What `PrivacyTracker.backward` returns, all detached.

    loss: the objective whose gradient was added to ``.grad`` (0-dim): the batch mean of the
    per-example losses (sampling "shuffle") or their sum over the expected batch size B
    ("poisson"). logits: the model output. losses: per-example losses [b]. norms: per-example
    gradient norms [b], float32. An empty batch gives empty logits, losses and norms.
    """

    loss: torch.Tensor
    logits: torch.Tensor
    losses: torch.Tensor
    norms: torch.Tensor


def _batchnorm_names(model: torch.nn.Module) -> list[str]:
    from .model_checks import batchnorm_modules

    return list(batchnorm_modules(model))


class PrivacyTracker:
    """Per-instance privacy accounting of a training loop (the online estimator; accounting only).

    Usage::

        tracker = PrivacyTracker(model, n=len(train), batch_size=64, optimizer=optimizer)
        for epoch in range(epochs):
            for x, y, ids in loader:          # ids: each example's position in 0 .. n-1
                optimizer.zero_grad()
                out = tracker.backward(x, y, ids)
                optimizer.step()
        table = tracker.privacy_losses()       # index, label, privacy_loss, ...

    Args:
        model: the network being trained, without BatchNorm (refused, see the module docstring).
            Its trainable parameters receive the batch gradient in `backward`.
        n: number of training examples; ids passed to `backward` lie in 0 .. n-1.
        batch_size: the batch size B (the expected one under Poisson sampling); q = B / n.
        optimizer: read for the learning rate of each step (``param_groups[*]["lr"]``, which must
            agree across groups) when `backward` gets no `lr`.
        steps_per_epoch: steps that make one epoch (default ceil(n / B); round(n / B) for
            "poisson", as the workflow's training does). Step t belongs to epoch t // steps_per_epoch.
        sampling: "shuffle" (each example once per epoch; the backward is the batch mean) or
            "poisson" (each example joins each step with probability q; the backward is the sum
            of the losses over the expected B, the rule the accounting assumes).
        alpha: the Renyi order of `privacy_loss` (config key privacy.alpha); 4 * alpha is always
            computed too.
        beta: accounting inverse temperature, noise std sqrt(2 lr / beta) per step (privacy.beta).
        orders: extra Renyi orders (privacy.orders); alpha and 4 * alpha are added.
        clip: clip the observed norms at C before accounting (privacy.clip); training gradients
            are never clipped by the tracker.
        loss_fn: per-example loss (logits, targets) -> [b] (default cross-entropy); example i's
            loss may depend only on its own logits and target.
        index: the dataset index of each id (e.g. `data.Split.index`), used for the `index`
            column of the tables; default the ids themselves.
        rdp_method: how the RDP curve is evaluated (config key privacy.rdp_method).
        max_lr_levels: learning-rate levels kept per epoch for smooth schedules
            (privacy.max_lr_levels).
        keep_presentations: also keep every presentation (step, id, norm, loss): memory grows with
            the steps; `dynamics()` then returns them in the layout of a training run's dynamics.
        strategy: the fast engine's form choice (`pergrad.per_example_grad_norms_fast`).

    Attributes:
        steps: steps recorded so far (calls of `backward`).
        sample_rate: q = min(1, B / n).
        orders: the float64 order grid P is computed on (sorted, with alpha and 4 * alpha).
        fast_engine_problems: why the fast per-example engine cannot handle the model (empty when
            it can); if not empty, every step also runs the slower torch.func reference engine.

    Raises:
        ValueError: a BatchNorm layer in `model`, or an argument out of range (the message names it).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        n: int,
        batch_size: int,
        *,
        optimizer: Any | None = None,
        steps_per_epoch: int | None = None,
        sampling: str = "shuffle",
        alpha: float = 2.0,
        beta: float = 200.0,
        orders: Sequence[float] = DEFAULT_ORDERS,
        clip: float | None = None,
        loss_fn: LossFn | None = None,
        index: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        rdp_method: str = "auto",
        max_lr_levels: int = 16,
        keep_presentations: bool = False,
        strategy: str = "auto",
    ):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"PrivacyTracker: model must be a torch.nn.Module, got {type(model).__name__}")
        batchnorm = _batchnorm_names(model)
        if batchnorm:
            raise ValueError(
                f"PrivacyTracker: the model has BatchNorm layers ({', '.join(batchnorm)}). In train "
                "mode BatchNorm normalises each example with statistics of its whole batch, so an "
                "example's gradient depends on the other examples drawn with it and a per-instance "
                "privacy loss is not defined. Replace them with GroupNorm, e.g. "
                "perinstance.model_checks.batchnorm_to_groupnorm(model), before building the optimizer."
            )
        n, batch_size = _positive_int(n, "n"), _positive_int(batch_size, "batch_size")
        if sampling not in SAMPLINGS:
            raise ValueError(f"PrivacyTracker: sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if steps_per_epoch is None:
            steps_per_epoch = _default_steps_per_epoch(n, batch_size, sampling)
        steps_per_epoch = _positive_int(steps_per_epoch, "steps_per_epoch")
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"PrivacyTracker: beta must be a positive number, got {beta!r}")
        if clip is not None and not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"PrivacyTracker: clip must be a positive number or None, got {clip!r}")
        if rdp_method not in ("auto", "exact", "interpolate"):
            raise ValueError(
                f"PrivacyTracker: rdp_method must be 'auto', 'exact' or 'interpolate', got {rdp_method!r}"
            )
        self.model = model
        self.optimizer = optimizer
        self.n = n
        self.batch_size = batch_size
        self.sample_rate = min(1.0, batch_size / n)
        self.steps_per_epoch = steps_per_epoch
        self.sampling = sampling
        self.alpha = float(alpha)
        self.orders = rdp_orders(self.alpha, orders)  # validates the orders (> 1)
        self.beta = float(beta)
        self.clip = None if clip is None else float(clip)
        self.loss_fn = loss_fn
        self.rdp_method = rdp_method
        self.max_lr_levels = _positive_int(max_lr_levels, "max_lr_levels")
        self.keep_presentations = bool(keep_presentations)
        self.strategy = strategy
        self.index = self._check_index(index)
        self.fast_engine_problems = unsupported_modules(model)  # non-empty: the reference engine runs
        self._reset_records()

    @classmethod
    def from_config(
        cls,
        model: torch.nn.Module,
        config: Mapping[str, Any],
        n: int,
        **kwargs: Any,
    ) -> PrivacyTracker:
        """A tracker with the accounting and sampling of a validated experiment config.

        Reads training.batch_size, training.sampling and privacy.alpha / beta / orders / clip /
        rdp_method / max_lr_levels; `kwargs` (optimizer, loss_fn, index, ...) pass through and
        override.
        """
        training, privacy = config["training"], config["privacy"]
        settings: dict[str, Any] = dict(
            batch_size=training["batch_size"],
            sampling=training["sampling"],
            alpha=privacy["alpha"],
            beta=privacy["beta"],
            orders=privacy["orders"],
            clip=privacy["clip"],
            rdp_method=privacy["rdp_method"],
            max_lr_levels=privacy["max_lr_levels"],
        )
        settings.update(kwargs)
        return cls(model, n, **settings)

    # ------------------------------------------------------------------ recording

    def _reset_records(self) -> None:
        self.steps = 0
        self._lrs: list[float] = []
        # Finished epochs, epoch-major so that each epoch is one contiguous row.
        self._sums = torch.zeros((0, self.n), dtype=torch.float64)
        self._counts = torch.zeros((0, self.n), dtype=torch.int64)
        self._stored_epochs = 0
        # The epoch being recorded, on the device of the norms (no host sync per step).
        self._epoch: int | None = None
        self._epoch_sums: torch.Tensor | None = None
        self._epoch_counts: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None  # int64 [n], -1 where not seen; None: not class labels
        self._class_labels: bool | None = None
        self._presentations: dict[str, list[torch.Tensor]] = {
            "step": [],
            "example": [],
            "grad_norm": [],
            "loss": [],
        }

    def backward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        ids: torch.Tensor | np.ndarray | Sequence[int],
        *,
        lr: float | None = None,
    ) -> TrackedBatch:
        """One training step's forward and backward on a batch, recorded for the accounting.

        Runs the model in its current mode and adds the gradient of the batch objective to each
        trainable parameter's ``.grad`` (zero the gradients before, call ``optimizer.step()``
        after, as with ``loss.backward()``): the batch mean of the per-example losses, or under
        sampling "poisson" their sum over the expected batch size. Records the examples `ids`,
        their gradient norms and the step's learning rate; every call is one step.

        Args:
            x: the batch inputs [b, ...]; an empty batch (Poisson sampling) is a step without
                examples: every trainable parameter gets a zero gradient.
            y: targets [b, ...] (class indices for the default cross-entropy).
            ids: each example's position 0 .. n-1 in the training set (an int tensor, array or
                list of length b).
            lr: the learning rate of this step; default the optimizer's current one.

        Returns:
            A `TrackedBatch` (loss, logits, losses, norms), detached.

        Raises:
            ValueError: mismatched lengths, ids out of range or not integers, no learning rate.
        """
        step_lr = self._step_lr(lr)
        ids_cpu = self._check_batch(x, y, ids)
        epoch = self.steps // self.steps_per_epoch
        if len(x) == 0:
            params = [p for p in self.model.parameters() if p.requires_grad]
            if params:
                # backward() of a zero objective: .grad becomes (or keeps) what it was plus
                # zeros, so momentum and weight decay still take their step.
                torch.autograd.backward(sum(p.sum() * 0.0 for p in params))
            empty = x.new_zeros((0,), dtype=torch.float32)
            self._lrs.append(step_lr)
            self._roll_epoch(epoch, x.device)
            self.steps += 1
            return TrackedBatch(empty.new_zeros(()), empty, empty, empty)
        if self.sampling == "poisson":
            logits, losses, norms = self._poisson_backward(x, y)
            loss = losses.sum() / self.batch_size
        else:
            logits, losses, norms = loss_backward_with_norms(
                self.model, x, y, strategy=self.strategy, loss_fn=self.loss_fn
            )
            loss = losses.mean()
        self._lrs.append(step_lr)
        self._record(epoch, ids_cpu, y, norms, losses)
        self.steps += 1
        return TrackedBatch(loss, logits, losses, norms)

    def _poisson_backward(self, x, y):
        # The accounted rule: sum of the losses over the expected B, i.e. the mean-loss gradient
        # scaled by b / B, applied to this batch's contribution only (as training.py does it).
        params = [p for p in self.model.parameters() if p.requires_grad]
        before = [p.grad for p in params]
        for p in params:
            p.grad = None
        try:
            out = loss_backward_with_norms(self.model, x, y, strategy=self.strategy, loss_fn=self.loss_fn)
        finally:
            scale = len(x) / self.batch_size
            with torch.no_grad():
                for p, previous in zip(params, before):
                    if p.grad is not None:
                        p.grad.mul_(scale)
                        if previous is not None:
                            p.grad = previous.add_(p.grad)
                    else:
                        p.grad = previous
        return out

    def _step_lr(self, lr: float | None) -> float:
        if lr is None:
            if self.optimizer is None:
                raise ValueError(
                    "PrivacyTracker.backward: no learning rate; pass lr=..., or give the tracker "
                    "the optimizer (PrivacyTracker(..., optimizer=optimizer))"
                )
            lrs = {float(group["lr"]) for group in self.optimizer.param_groups}
            if len(lrs) != 1:
                raise ValueError(
                    f"PrivacyTracker.backward: the optimizer's parameter groups have different "
                    f"learning rates {sorted(lrs)}; pass the one to account with as lr=..."
                )
            lr = lrs.pop()
        lr = float(lr)
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"PrivacyTracker.backward: lr must be finite and >= 0, got {lr!r}")
        return lr

    def _check_batch(self, x, y, ids) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError("PrivacyTracker.backward: x and y must be tensors")
        if not isinstance(ids, torch.Tensor):
            values = np.asarray(ids)
            ids = torch.as_tensor(values.astype(np.int64) if values.size == 0 else values)
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise ValueError(f"PrivacyTracker.backward: ids must be integers, got dtype {ids.dtype}")
        ids = ids.reshape(-1).to("cpu", torch.int64)
        if not len(x) == len(y) == len(ids):
            raise ValueError(
                f"PrivacyTracker.backward: x, y and ids must have the same length, "
                f"got {len(x)}, {len(y)} and {len(ids)}"
            )
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.n):
            bad = ids[(ids < 0) | (ids >= self.n)]
            raise ValueError(
                f"PrivacyTracker.backward: ids must lie in 0 .. n-1 = {self.n - 1}, got "
                f"{bad[:5].tolist()}{' ...' if len(bad) > 5 else ''}"
            )
        return ids

    def _roll_epoch(self, epoch: int, device: torch.device) -> None:
        """Make `epoch` the one being recorded, storing the finished one."""
        if self._epoch == epoch:
            return
        self._flush()
        if device.type not in ("cpu", "cuda"):  # no float64 on some devices (MPS)
            device = torch.device("cpu")
        self._epoch = epoch
        self._epoch_sums = torch.zeros(self.n, dtype=torch.float64, device=device)
        self._epoch_counts = torch.zeros(self.n, dtype=torch.int64, device=device)

    def _flush(self) -> None:
        """Move the epoch being recorded into the stored table (rows for every epoch up to it)."""
        if self._epoch is None:
            return
        rows = self._epoch + 1
        if rows > self._sums.shape[0]:
            grow = max(rows, 2 * self._sums.shape[0])
            self._sums = torch.cat(
                [self._sums, torch.zeros((grow - self._sums.shape[0], self.n), dtype=torch.float64)]
            )
            self._counts = torch.cat(
                [self._counts, torch.zeros((grow - self._counts.shape[0], self.n), dtype=torch.int64)]
            )
        self._sums[self._epoch] = self._epoch_sums.cpu()
        self._counts[self._epoch] = self._epoch_counts.cpu()
        self._stored_epochs = max(self._stored_epochs, rows)
        self._epoch = self._epoch_sums = self._epoch_counts = None

    def _record(self, epoch, ids_cpu, y, norms, losses) -> None:
        self._roll_epoch(epoch, norms.device)
        ids = ids_cpu.to(self._epoch_sums.device, non_blocking=True)
        self._epoch_sums.index_add_(0, ids, norms.to(self._epoch_sums.device, torch.float64))
        self._epoch_counts.index_add_(0, ids, torch.ones_like(ids))
        class_labels = y.dim() == 1 and not (y.dtype.is_floating_point or y.dtype.is_complex)
        if self._class_labels is None:
            self._class_labels = class_labels
            if class_labels:
                self._labels = torch.full((self.n,), -1, dtype=torch.int64, device=self._epoch_sums.device)
        if self._class_labels and class_labels:
            # (labels loaded from a saved state stay on the CPU, the epoch's sums follow the batch)
            self._labels[ids.to(self._labels.device)] = y.to(self._labels.device, torch.int64)
        if self.keep_presentations:
            record = self._presentations
            record["step"].append(torch.full((len(ids_cpu),), self.steps, dtype=torch.int64))
            record["example"].append(ids_cpu.clone())
            record["grad_norm"].append(norms.detach().float().cpu())
            record["loss"].append(losses.detach().float().cpu())

    # ------------------------------------------------------------------ results

    @property
    def epochs(self) -> int:
        """Epochs begun so far: ceil(steps / steps_per_epoch)."""
        return -(-self.steps // self.steps_per_epoch)

    @property
    def learning_rates(self) -> np.ndarray:
        """float64 [steps]: the learning rate of every recorded step."""
        return np.asarray(self._lrs, dtype=np.float64)

    def _tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-epoch norm sums and presentation counts, float64 / int64 [n, epochs]."""
        epochs = self.epochs
        sums = self._sums[: min(self._stored_epochs, epochs)].numpy()
        counts = self._counts[: min(self._stored_epochs, epochs)].numpy()
        sums = np.concatenate([sums, np.zeros((epochs - len(sums), self.n))])
        counts = np.concatenate([counts, np.zeros((epochs - len(counts), self.n), dtype=np.int64)])
        if self._epoch is not None and self._epoch < epochs:
            sums[self._epoch] = self._epoch_sums.cpu().numpy()
            counts[self._epoch] = self._epoch_counts.cpu().numpy()
        return sums.T.copy(), counts.T.copy()

    def epoch_norms(self) -> tuple[np.ndarray, np.ndarray]:
        """The per-epoch record: (mean in-batch norm, presentations), [n, epochs] each.

        The means are NaN where an example was not presented in that epoch (before the fill
        that `privacy_losses` applies, see `filled_epoch_norms`).
        """
        sums, counts = self._tables()
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / counts, counts

    def filled_epoch_norms(self) -> np.ndarray:
        """float64 [n, epochs]: the norm that stands for every step of each epoch.

        An example's mean in-batch norm of that epoch; where it was not drawn, its latest earlier
        epoch's value, else the first later one (the rule of `privacy.online_norms`). Rows of
        examples never presented stay NaN.
        """
        means, counts = self.epoch_norms()
        values = means.copy()
        for e in range(1, values.shape[1]):  # forward fill, then backward fill
            missing = counts[:, e] == 0
            values[missing, e] = values[missing, e - 1]
        for e in range(values.shape[1] - 2, -1, -1):
            missing = np.isnan(values[:, e])
            values[missing, e] = values[missing, e + 1]
        return values

    def presented(self) -> np.ndarray:
        """bool [n]: which examples have been presented at least once."""
        return self._tables()[1].sum(axis=1) > 0

    def labels(self) -> np.ndarray | None:
        """int64 [n]: each example's class label as last seen (-1 if never), None for non-class targets."""
        if self._labels is None:
            return None
        return self._labels.cpu().numpy().copy()

    def rdp(self, *, unseen: str = "raise") -> np.ndarray:
        """float64 [n, len(orders)]: P(x, order) composed over every recorded step.

        unseen: "raise" (default) if an example was never presented, or "nan" to give such
        examples NaN rows (e.g. a run over a subset of the ids).
        """
        if unseen not in ("raise", "nan"):
            raise ValueError(f"unseen must be 'raise' or 'nan', got {unseen!r}")
        if self.steps == 0:
            raise ValueError("PrivacyTracker: no steps recorded yet (call backward() during training)")
        norms = self.filled_epoch_norms()
        seen = ~np.isnan(norms).any(axis=1)
        if not seen.all() and unseen == "raise":
            missing = np.flatnonzero(~seen)
            raise ValueError(
                f"PrivacyTracker: {len(missing)} of {self.n} examples were never presented (ids "
                f"{missing[:5].tolist()}{' ...' if len(missing) > 5 else ''}); train on them or "
                "pass unseen='nan'"
            )
        out = np.full((self.n, len(self.orders)), np.nan)
        out[seen] = per_instance_rdp(
            norms[seen],
            self._step_groups(),
            sample_rate=self.sample_rate,
            batch_size=self.batch_size,
            beta=self.beta,
            orders=self.orders,
            clip=self.clip,
            method=self.rdp_method,
        )
        return out

    def _step_groups(self):
        return epoch_step_groups(self.learning_rates, self.steps_per_epoch, self.max_lr_levels)

    def privacy_losses(self, *, long: bool = False, seed: int = 0, unseen: str = "raise") -> pd.DataFrame:
        """The privacy table of the run, in the workflow's layout (privacy_scores.privacy_tables).

        Wide (default), one row per example: `index` (the dataset index of each id, see the
        constructor's `index`), `label` (when the targets are class labels), `privacy_loss`
        = P(x, alpha), `privacy_loss_4alpha` = P(x, 4 alpha) and `sum_sq_grad_norm` = sum over
        steps of g_t(x)^2 (clipped if `clip`), each epoch's norm standing for its steps. The
        workflow's privacy table names its checkpoint estimate `privacy_loss` and this online
        estimate `privacy_loss_online`; this table has the columns that the project's group and
        figure functions read.

        long=True: the workflow's long table (`privacy_long`): one row per example and order,
        columns index, label, seed (`seed`), estimator ("online"), order, rdp.

        unseen: see `rdp`. An estimate, not a DP guarantee (module docstring).
        """
        values = self.rdp(unseen=unseen)
        index = self.index if self.index is not None else np.arange(self.n, dtype=np.int64)
        labels = self.labels()
        if long:
            columns: dict[str, Any] = {"index": np.repeat(index, len(self.orders))}
            if labels is not None:
                columns["label"] = np.repeat(labels, len(self.orders))
            columns.update(
                seed=seed,
                estimator="online",
                order=np.tile(self.orders, self.n),
                rdp=values.reshape(-1),
            )
            return pd.DataFrame(columns)
        at_alpha = int(np.flatnonzero(self.orders == self.alpha)[0])
        at_4alpha = int(np.flatnonzero(self.orders == 4 * self.alpha)[0])
        table = pd.DataFrame({"index": index})
        if labels is not None:
            table["label"] = labels
        table["privacy_loss"] = values[:, at_alpha]
        table["privacy_loss_4alpha"] = values[:, at_4alpha]
        norms = self.filled_epoch_norms()
        if self.clip is not None:
            norms = np.minimum(norms, self.clip)
        steps_per_group = np.array([c.sum() for c in self._step_groups().counts], dtype=np.float64)
        table["sum_sq_grad_norm"] = (norms**2 * steps_per_group).sum(axis=1)
        return table

    def epoch_table(self) -> pd.DataFrame:
        """The per-epoch record as a tidy table: index, epoch, presentations, mean_grad_norm
        (NaN where not presented) and grad_norm (the filled value accounted for that epoch)."""
        means, counts = self.epoch_norms()
        filled = self.filled_epoch_norms()
        index = self.index if self.index is not None else np.arange(self.n, dtype=np.int64)
        epochs = means.shape[1]
        return pd.DataFrame(
            {
                "index": np.repeat(index, epochs),
                "epoch": np.tile(np.arange(epochs), self.n),
                "presentations": counts.reshape(-1),
                "mean_grad_norm": means.reshape(-1),
                "grad_norm": filled.reshape(-1),
            }
        )

    def dynamics(self) -> dict[str, np.ndarray]:
        """The recorded presentations in the layout of a training run's dynamics.npz.

        Keys presentation_step, presentation_example, presentation_grad_norm, presentation_loss,
        lr, steps_per_epoch, batch_size, train_index, train_label: what `privacy.online_rdp`
        reads, so ``online_rdp(tracker.dynamics(), ...)`` recomputes the tracker's P from the
        presentations. Needs keep_presentations=True.
        """
        if not self.keep_presentations:
            raise ValueError("PrivacyTracker.dynamics needs PrivacyTracker(..., keep_presentations=True)")
        record = self._presentations

        def cat(key: str, dtype) -> np.ndarray:
            return torch.cat(record[key]).numpy() if record[key] else np.empty(0, dtype=dtype)

        labels = self.labels()
        return {
            "presentation_step": cat("step", np.int64),
            "presentation_example": cat("example", np.int64),
            "presentation_grad_norm": cat("grad_norm", np.float32),
            "presentation_loss": cat("loss", np.float32),
            "lr": self.learning_rates,
            "steps_per_epoch": np.int64(self.steps_per_epoch),
            "batch_size": np.int64(self.batch_size),
            "train_index": self.index if self.index is not None else np.arange(self.n, dtype=np.int64),
            "train_label": labels if labels is not None else np.full(self.n, -1, dtype=np.int64),
        }

    # ------------------------------------------------------------------ saving and resuming

    def state_dict(self) -> dict[str, Any]:
        """Everything recorded so far, as tensors and plain values (``torch.save`` it; it loads
        with ``torch.load(..., weights_only=True)``). Save it with the model and optimizer: a
        tracker that loads it continues the run with identical results."""
        sums, counts = self._tables()
        state: dict[str, Any] = {
            "version": _STATE_VERSION,
            "n": self.n,
            "batch_size": self.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "sampling": self.sampling,
            "keep_presentations": self.keep_presentations,
            "accounting": {
                "alpha": self.alpha,
                "beta": self.beta,
                "orders": self.orders.tolist(),
                "clip": self.clip,
                "rdp_method": self.rdp_method,
                "max_lr_levels": self.max_lr_levels,
            },
            "steps": self.steps,
            "lr": torch.tensor(self._lrs, dtype=torch.float64),
            "epoch_sums": torch.from_numpy(sums.T.copy()),
            "epoch_counts": torch.from_numpy(counts.T.copy()),
            "labels": None if self._labels is None else self._labels.cpu().clone(),
            "class_labels": self._class_labels,
            "index": None if self.index is None else torch.from_numpy(self.index.copy()),
        }
        if self.keep_presentations:
            state["presentations"] = {
                key: torch.cat(parts) if parts else torch.empty(0)
                for key, parts in self._presentations.items()
            }
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state_dict()`'s output; the recorded steps replace this tracker's.

        The sampling structure (n, batch_size, steps_per_epoch, sampling, keep_presentations) must
        be this tracker's; its own accounting settings (alpha, beta, orders, clip, ...) apply to the
        loaded norms, so a run can also be re-accounted at another beta.

        Raises:
            ValueError: a state of another version or structure (the message names the key).
        """
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            got = state.get("version") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(
                f"PrivacyTracker.load_state_dict: expected a tracker state of version {_STATE_VERSION}, "
                f"got version {got!r}"
            )
        for key in _STRUCTURE_KEYS:
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"PrivacyTracker.load_state_dict: the state has {key}={state.get(key)!r}, this "
                    f"tracker {key}={getattr(self, key)!r}; a run resumes only under the same structure"
                )
        steps = int(state["steps"])
        lrs = torch.as_tensor(state["lr"], dtype=torch.float64)
        sums = torch.as_tensor(state["epoch_sums"], dtype=torch.float64)
        counts = torch.as_tensor(state["epoch_counts"], dtype=torch.int64)
        epochs = -(-steps // self.steps_per_epoch)
        if lrs.shape != (steps,) or sums.shape != (epochs, self.n) or counts.shape != (epochs, self.n):
            raise ValueError(
                f"PrivacyTracker.load_state_dict: inconsistent state: {steps} steps need lr [{steps}] "
                f"and epoch_sums / epoch_counts [{epochs}, {self.n}], got {tuple(lrs.shape)}, "
                f"{tuple(sums.shape)}, {tuple(counts.shape)}"
            )
        index = state.get("index")
        if index is not None:
            index = np.asarray(index, dtype=np.int64)
            if self.index is not None and not np.array_equal(index, self.index):
                raise ValueError(
                    "PrivacyTracker.load_state_dict: the state's index differs from this tracker's"
                )
        self._reset_records()
        self.index = index if index is not None else self.index
        self.steps = steps
        self._lrs = lrs.tolist()
        self._sums, self._counts = sums.clone(), counts.clone()
        self._stored_epochs = epochs
        labels = state.get("labels")
        self._labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64).clone()
        self._class_labels = state.get("class_labels")
        if self.keep_presentations:
            saved = state["presentations"]
            self._presentations = {
                key: [torch.as_tensor(saved[key])] if len(saved[key]) else [] for key in self._presentations
            }
        # The epoch in progress continues on the device of the next batch.
        if steps % self.steps_per_epoch and epochs:
            last = epochs - 1
            self._epoch = last
            self._epoch_sums = self._sums[last].clone()
            self._epoch_counts = self._counts[last].clone()

    def _check_index(self, index) -> np.ndarray | None:
        if index is None:
            return None
        values = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
        if values.shape != (self.n,) or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(
                f"PrivacyTracker: index must hold one integer per example, shape ({self.n},), "
                f"got {values.dtype} {values.shape}"
            )
        return values.astype(np.int64)


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"PrivacyTracker: {key} must be a positive integer, got {value!r}")
    return int(value)
