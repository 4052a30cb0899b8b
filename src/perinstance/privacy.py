"""Per-instance privacy losses P(x, alpha) from training dynamics (Thudi et al. 2024 estimator).

Noise model of one update: theta <- theta - eta_t * mean_batch grad + N(0, tau_t^2 I) with
tau_t = sqrt(2 eta_t / beta). Adding x changes the step by at most Delta_t(x) = eta_t g_t(x) / B,
so one step is a Poisson-subsampled Gaussian mechanism at rate q = B/n with noise multiplier
z_t(x) = tau_t / Delta_t(x) = B sqrt(2 / (eta_t beta)) / g_t(x). Its Renyi DP comes from Opacus'
analysis (never re-derived here); per-instance losses compose by summation over steps.

The checkpoint estimator takes g_t(x) from the norms at checkpoint j for every step until
checkpoint j+1. The online estimator takes it from the in-batch norm observed when x was last
presented, one value per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as opacus_rdp

# log-log interpolation grid density; tests bound the resulting error
_GRID_POINTS_PER_DECADE = 1000
# Beyond this noise multiplier RDP is quadratic in 1/z up to a relative 1/z^2; Opacus' series lose
# precision out there (1e-5 relative at z = 1e4) and its fractional orders can fail outright.
_ASYMPTOTIC_Z = 1.0e3


def rdp_orders(alpha: float, orders: Sequence[float]) -> np.ndarray:
    """The sorted order grid, always holding alpha and 4*alpha."""
    grid = {float(o) for o in orders} | {float(alpha), 4.0 * float(alpha)}
    if min(grid) <= 1.0:
        raise ValueError(f"Renyi orders must be > 1 (config key privacy.orders), got {min(grid)}")
    return np.array(sorted(grid), dtype=np.float64)


def _opacus_rdp(q: float, z: float, orders: np.ndarray) -> np.ndarray:
    # float64 on purpose: Opacus silently returns wrong values for float32 noise multipliers
    rdp = opacus_rdp.compute_rdp(q=float(q), noise_multiplier=float(np.float64(z)), steps=1, orders=orders.tolist())
    return np.asarray(rdp, dtype=np.float64)


_GRID_CACHE: dict[tuple[float, tuple[float, ...]], dict[int, np.ndarray]] = {}


def _grid_rdp(q: float, orders: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Opacus RDP at the grid points z = 10^(k / points-per-decade), memoised per (q, orders).

    The grid is global, so every checkpoint and learning rate of a run reuses the same calls.
    """
    cache = _GRID_CACHE.setdefault((float(q), tuple(orders.tolist())), {})
    for k in ks.tolist():
        if k not in cache:
            cache[k] = _opacus_rdp(q, 10.0 ** (k / _GRID_POINTS_PER_DECADE), orders)
    return np.stack([cache[k] for k in ks.tolist()])


def subsampled_gaussian_rdp(q: float, noise_multiplier: np.ndarray, orders: np.ndarray,
                            method: str = "auto") -> np.ndarray:
    """RDP of one Poisson-subsampled Gaussian step, for every noise multiplier: [..., len(orders)].

    method: `exact` calls Opacus for every value; `interpolate` calls it on a fixed log-spaced
    grid of noise multipliers and interpolates log RDP linearly in log z (RDP is smooth and
    monotone in z; the grid density keeps the relative error below 1e-4, also across the sharp
    regime change of high orders near z ~ 2); `auto` picks exact for few values.
    A zero gradient norm (z = inf) costs nothing; beyond z = 1e3 the 1/z^2 asymptote is used.
    """
    z = np.asarray(noise_multiplier, dtype=np.float64)
    out = np.zeros(z.shape + (len(orders),), dtype=np.float64)
    finite = np.isfinite(z)
    if not finite.any():
        return out
    if np.any(z[finite] <= 0):
        raise ValueError("noise multipliers must be positive")
    values = np.minimum(z[finite], _ASYMPTOTIC_Z)
    scale = (values / z[finite])[:, None] ** 2
    if method == "auto":
        method = "exact" if values.size <= 500 else "interpolate"
    if method == "exact":
        unique, inverse = np.unique(values, return_inverse=True)
        table = np.stack([_opacus_rdp(q, v, orders) for v in unique])
        out[finite] = table[inverse.reshape(-1)] * scale
        return out
    if method != "interpolate":
        raise ValueError(f"unknown rdp method {method!r} (config key privacy.rdp_method): exact, interpolate, auto")
    position = np.log10(values) * _GRID_POINTS_PER_DECADE
    ks = np.arange(int(np.floor(position.min())), int(np.ceil(position.max())) + 1)
    if len(ks) == 1:
        ks = np.array([ks[0], ks[0] + 1])
    log_table = np.log(np.maximum(_grid_rdp(q, orders, ks), 1e-300))
    out[finite] = np.exp(np.stack([np.interp(position, ks, log_table[:, k]) for k in range(len(orders))], axis=-1)) * scale
    return out


@dataclass(frozen=True)
class StepGroups:
    """The training steps a set of gradient-norm observations stands for.

    `lrs[j]` and `counts[j]` are the distinct learning rates of the steps that observation j
    stands for and how many steps used each (so constant and multistep schedules are exact).
    """

    lrs: list[np.ndarray]
    counts: list[np.ndarray]

    @property
    def total_steps(self) -> int:
        return int(sum(c.sum() for c in self.counts))


def _lr_levels(step_lrs: np.ndarray, max_levels: int) -> tuple[np.ndarray, np.ndarray]:
    levels, counts = np.unique(step_lrs, return_counts=True)
    if len(levels) <= max_levels:
        return levels, counts
    # smooth schedules (cosine): summarise the steps by the means of equal-count chunks
    chunks = np.array_split(np.sort(step_lrs), max_levels)
    return np.array([c.mean() for c in chunks]), np.array([len(c) for c in chunks])


def checkpoint_step_groups(checkpoint_steps: Sequence[int], lr: np.ndarray, *, include_step0: bool = False,
                           max_lr_levels: int = 16) -> tuple[np.ndarray, StepGroups]:
    """Which checkpoints enter P and which steps each one stands for.

    Checkpoint j stands for steps [t_j, t_{j+1}); the first used checkpoint also stands for
    the steps before it (step 0 excluded: its norms are seed noise), so every one of the
    len(lr) training steps is counted exactly once. Returns the positions of the used
    checkpoints and their step groups.
    """
    steps = np.asarray(checkpoint_steps, dtype=np.int64)
    total = len(lr)
    used = np.flatnonzero((steps < total) & ((steps > 0) | include_step0))
    if used.size == 0:
        raise ValueError("no checkpoint before the final step enters the privacy loss; save more checkpoints")
    bounds = list(steps[used]) + [total]
    bounds[0] = 0
    lrs, counts = zip(*(_lr_levels(lr[a:b], max_lr_levels) for a, b in zip(bounds[:-1], bounds[1:])))
    return used, StepGroups(list(lrs), list(counts))


def sampling_of_run(dynamics: dict[str, np.ndarray]) -> tuple[int, float]:
    """(batch size B, Poisson sampling rate q = B / n) of a training run's dynamics."""
    batch_size = int(dynamics["batch_size"])
    return batch_size, min(1.0, batch_size / len(dynamics["train_index"]))


def noise_multiplier(grad_norm: np.ndarray, lr: float, batch_size: int, beta: float) -> np.ndarray:
    """z = tau / Delta = B sqrt(2 / (lr beta)) / g; infinite for a zero norm."""
    g = np.asarray(grad_norm, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return batch_size * np.sqrt(2.0 / (lr * beta)) / g


def per_instance_rdp(norms: np.ndarray, groups: StepGroups, *, sample_rate: float, batch_size: int, beta: float,
                     orders: np.ndarray, clip: float | None = None, method: str = "auto") -> np.ndarray:
    """Composed per-instance RDP, float64 [n, len(orders)].

    norms: [n, J] gradient norm of every example at each of the J observations in `groups`.
    """
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim != 2 or norms.shape[1] != len(groups.lrs):
        raise ValueError(f"norms must be [n, {len(groups.lrs)}] (one column per step group), got {norms.shape}")
    if np.any(~np.isfinite(norms)) or np.any(norms < 0):
        raise ValueError("gradient norms must be finite and non-negative")
    if clip is not None:
        norms = np.minimum(norms, clip)
    total = np.zeros((norms.shape[0], len(orders)), dtype=np.float64)
    for j, (lrs, counts) in enumerate(zip(groups.lrs, groups.counts)):
        for lr, count in zip(lrs, counts):
            z = noise_multiplier(norms[:, j], lr, batch_size, beta)
            total += count * subsampled_gaussian_rdp(sample_rate, z, orders, method)
    return total


def worst_case_rdp(max_norms: np.ndarray, groups: StepGroups, *, sample_rate: float, batch_size: int,
                   beta: float, orders: np.ndarray, delta: float) -> tuple[np.ndarray, float, float]:
    """Data-independent baseline through Opacus' RDP accountant.

    max_norms[j] is the sensitivity bound during group j (the clip C, or the largest observed
    norm). Returns (RDP at every order, epsilon at delta, the order that achieves it).
    """
    accountant = RDPAccountant()
    for g, lrs, counts in zip(max_norms, groups.lrs, groups.counts):
        for lr, count in zip(lrs, counts):
            z = float(noise_multiplier(np.array([g]), lr, batch_size, beta)[0])
            for _ in range(int(count)):
                accountant.step(noise_multiplier=z, sample_rate=sample_rate)
    rdp = np.zeros(len(orders))
    for z, q, steps in accountant.history:
        if np.isfinite(z):
            rdp += np.asarray(opacus_rdp.compute_rdp(q=q, noise_multiplier=z, steps=steps, orders=orders.tolist()))
    epsilon, best = opacus_rdp.get_privacy_spent(orders=orders.tolist(), rdp=rdp.tolist(), delta=delta)
    return rdp, float(epsilon), float(best)


def online_norms(presentation_step: np.ndarray, presentation_example: np.ndarray, presentation_grad_norm: np.ndarray,
                 n: int, steps_per_epoch: int, epochs: int) -> np.ndarray:
    """In-batch gradient norms as [n, epochs]: the mean of each example's presentations per epoch.

    Epochs in which an example was never drawn (Poisson sampling) reuse its latest earlier
    observation, or the first later one.
    """
    if np.isnan(presentation_grad_norm).all():
        raise ValueError("the run recorded no in-batch gradient norms (training.dynamics.batch_grad_norms was false)")
    epoch = presentation_step // steps_per_epoch
    sums = np.zeros((n, epochs))
    counts = np.zeros((n, epochs))
    np.add.at(sums, (presentation_example, epoch), presentation_grad_norm)
    np.add.at(counts, (presentation_example, epoch), 1)
    with np.errstate(invalid="ignore"):
        values = sums / counts
    for e in range(1, epochs):  # forward fill, then backward fill
        missing = counts[:, e] == 0
        values[missing, e] = values[missing, e - 1]
    for e in range(epochs - 2, -1, -1):
        missing = np.isnan(values[:, e])
        values[missing, e] = values[missing, e + 1]
    if np.isnan(values).any():
        raise ValueError("some examples were never presented during training")
    return values


def epoch_step_groups(lr: np.ndarray, steps_per_epoch: int, max_lr_levels: int = 16) -> StepGroups:
    """Every epoch's steps as one group (the online estimator's observation interval)."""
    chunks = [lr[a:a + steps_per_epoch] for a in range(0, len(lr), steps_per_epoch)]
    lrs, counts = zip(*(_lr_levels(c, max_lr_levels) for c in chunks))
    return StepGroups(list(lrs), list(counts))


def online_rdp(dynamics: dict[str, np.ndarray], *, beta: float, orders: np.ndarray, clip: float | None = None,
               method: str = "auto", max_lr_levels: int = 16) -> np.ndarray:
    """The online estimator, float64 [n, len(orders)]: P composed from the in-batch norms a
    training run recorded, each epoch's mean norm standing for every step of that epoch."""
    steps_per_epoch = int(dynamics["steps_per_epoch"])
    epochs = len(dynamics["lr"]) // steps_per_epoch
    observed = online_norms(dynamics["presentation_step"], dynamics["presentation_example"],
                            dynamics["presentation_grad_norm"].astype(np.float64), len(dynamics["train_index"]),
                            steps_per_epoch, epochs)
    batch_size, sample_rate = sampling_of_run(dynamics)
    return per_instance_rdp(observed, epoch_step_groups(dynamics["lr"], steps_per_epoch, max_lr_levels),
                            sample_rate=sample_rate, batch_size=batch_size, beta=beta, orders=orders, clip=clip,
                            method=method)


def privacy_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The accounting parameters of an experiment, resolved from its config."""
    privacy = config["privacy"]
    return {
        "alpha": float(privacy["alpha"]),
        "orders": rdp_orders(privacy["alpha"], privacy["orders"]),
        "beta": float(privacy["beta"]),
        "clip": privacy["clip"],
        "include_step0": privacy["include_step0"],
        "method": privacy["rdp_method"],
        "delta": float(privacy["delta"]),
    }
