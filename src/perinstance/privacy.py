"""Per-instance privacy losses P(x, alpha) from training dynamics (Thudi et al. 2024 estimator).

Noise model of one update: theta <- theta - eta_t * (1/B) sum_batch grad + N(0, tau_t^2 I) with
tau_t = sqrt(2 eta_t / beta) (beta = privacy.beta, the accounting inverse temperature). Adding x
changes the step by at most Delta_t(x) = eta_t g_t(x) / B ("sum" rule), so one step is a
Poisson-subsampled Gaussian mechanism at rate q = B/n with noise multiplier
z_t(x) = tau_t / Delta_t(x) = B sqrt(2 / (eta_t beta)) / g_t(x). Its Renyi DP comes from Opacus'
analysis (never re-derived here; beyond z ~ 22 .. 1e3, where Opacus loses precision, from the
mechanism's 1/z^2 expansion, see subsampled_gaussian_rdp); per-instance losses compose by summation
over steps.

The checkpoint estimator takes g_t(x) from the norms at checkpoint j (clean inputs, model in eval
mode) for every step until checkpoint j+1. The online estimator takes it from the in-batch norm
observed when x was presented (the training inputs, augmented if training.augment is on), the
mean over each epoch standing for every step of that epoch.

What the accounting leaves out (docs/accounting.md); the numbers are per-instance ESTIMATES of
how much one example moves the training run, not differential-privacy guarantees:
- momentum: the update accounted is plain SGD (momentum carries each gradient into later steps;
  the accounting counts it once, at its own step; weight decay does not depend on x);
- the sampling: shuffled epochs (training.sampling: shuffle, each example exactly once per epoch)
  are treated as Poisson subsampling at rate q = B/n, and the short last batch of an epoch, whose
  mean-loss step moves x by eta g / b with b < B, as a batch of B. Under `poisson` training uses
  the accounted rule (sum of per-example losses / expected B);
- data augmentation: the checkpoint estimator sees clean inputs, the online one augmented ones;
- the noise: training is noiseless SGD (or SGLD at another beta); the accounting assumes the noise
  of privacy.beta, and g_t(x) between checkpoints is taken as constant;
- gradient norms are not clipped unless privacy.clip is set, so no worst case bounds them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as opacus_rdp

from .settings import Settings, as_settings

# Interpolation (method `interpolate`): per (sample rate, order), log RDP is interpolated linearly in
# log10 z between knots: a coarse log-spaced base grid whose intervals are checked at their two
# trisection points and split in three, recursively, wherever the chord misses the exact value there
# by more than _CHECK_TOL (in log RDP, i.e. relative). Two check points, not one midpoint: near the
# regime change log RDP has inflection points, where a midpoint can sit on the chord while the curve
# leaves it on both sides. Every check point becomes a knot, so a final interval is a third of a
# checked one: its error is about 1/8 of the check's (curvature) or at most 0.4 of it (an inflection).
# The knots are memoised per (q, order): built once per process for the z range a run needs.
_BASE_POINTS_PER_DECADE = 100
_CHECK_TOL = 1.0e-4
_MAX_REFINEMENTS = 10
# The bound tests/test_privacy.py checks on dense z grids (every order and sample rate the project uses).
INTERPOLATION_RTOL = 1.0e-4
# Beyond a switch point the expansion eps = (alpha q^2 / 2) u (1 + c u), u = 1/z^2, replaces Opacus:
# Opacus' log A loses relative precision as A -> 1 (1e-5 at z = 1e4 for integer orders; its series for
# fractional orders lose 1e-4 .. 1e-2 at z = 1e2 .. 1e3 when q is small, and can fail outright). The
# expansion's remainder is about (c u)^2: the switch is where |c| u <= _EXPANSION_TOL (remainder
# <= 1e-6), and for integer orders, whose Opacus sums stay accurate, not before z = _ASYMPTOTIC_Z.
_ASYMPTOTIC_Z = 1.0e3
_EXPANSION_TOL = 1.0e-3


def rdp_orders(alpha: float, orders: Sequence[float]) -> np.ndarray:
    """The sorted order grid, always holding alpha and 4*alpha."""
    grid = {float(o) for o in orders} | {float(alpha), 4.0 * float(alpha)}
    if min(grid) <= 1.0:
        raise ValueError(f"Renyi orders must be > 1 (config key privacy.orders), got {min(grid)}")
    return np.array(sorted(grid), dtype=np.float64)


def _opacus_rdp(q: float, z: float, order: float) -> float:
    # float64 on purpose: Opacus silently returns wrong values for float32 noise multipliers
    rdp = opacus_rdp.compute_rdp(
        q=float(q), noise_multiplier=float(np.float64(z)), steps=1, orders=[float(order)]
    )
    return float(np.asarray(rdp, dtype=np.float64).reshape(-1)[0])


def _expansion_coefficients(q: float, order: float) -> tuple[float, float]:
    """(b, c) of eps = b u (1 + c u) + O(u^3), u = 1/z^2, for the Poisson-subsampled Gaussian.

    From A = E[(1 + q D)^alpha], D = exp(w) - 1, w ~ N(-u/2, u): A - 1 = C(alpha,2) q^2 (e^u - 1)
    + 3 C(alpha,3) q^3 u^2 + 3 C(alpha,4) q^4 u^2 + O(u^3), and eps = log(A) / (alpha - 1).
    At q = 1 it gives c = 0 (eps = alpha u / 2, exact).
    """
    a = float(order)
    return a * q * q / 2.0, 0.5 + (a - 2.0) * q + ((a - 2.0) * (a - 3.0) - a * (a - 1.0)) * q * q / 4.0


def asymptotic_switch(q: float, order: float) -> float:
    """The noise multiplier from which the 1/z^2 expansion replaces Opacus (both methods)."""
    _, c = _expansion_coefficients(float(q), order)
    z = math.sqrt(max(abs(c), 0.5) / _EXPANSION_TOL)
    return max(z, _ASYMPTOTIC_Z) if float(order).is_integer() else z


def _expansion_rdp(q: float, z: np.ndarray, order: float) -> np.ndarray:
    b, c = _expansion_coefficients(float(q), order)
    u = 1.0 / np.asarray(z, dtype=np.float64) ** 2
    return b * u * (1.0 + c * u)


class _OrderGrid:
    """Interpolation knots (log10 z, log RDP) of one (q, order), built lazily and memoised."""

    def __init__(self, q: float, order: float):
        self.q, self.order = q, order
        self.base: dict[int, float] = {}  # k -> log RDP at z = 10^(k / base density)
        self.inner: dict[int, tuple[list[float], list[float]]] = {}  # knots strictly inside base interval k
        self.span: tuple[int, int] | None = None
        self.knots: tuple[np.ndarray, np.ndarray] = (np.empty(0), np.empty(0))

    def _log_rdp(self, position: float) -> float:
        return math.log(max(_opacus_rdp(self.q, 10.0**position, self.order), 1e-300))

    def _base(self, k: int) -> float:
        if k not in self.base:
            self.base[k] = self._log_rdp(k / _BASE_POINTS_PER_DECADE)
        return self.base[k]

    def _refine(self, a: float, fa: float, b: float, fb: float, depth: int, xs: list, fs: list) -> None:
        t1, t2 = a + (b - a) / 3.0, a + 2.0 * (b - a) / 3.0
        f1, f2 = self._log_rdp(t1), self._log_rdp(t2)
        missed = max(abs(f1 - (2.0 * fa + fb) / 3.0), abs(f2 - (fa + 2.0 * fb) / 3.0))
        if depth < _MAX_REFINEMENTS and missed > _CHECK_TOL:
            self._refine(a, fa, t1, f1, depth + 1, xs, fs)
            xs.append(t1), fs.append(f1)
            self._refine(t1, f1, t2, f2, depth + 1, xs, fs)
            xs.append(t2), fs.append(f2)
            self._refine(t2, f2, b, fb, depth + 1, xs, fs)
        else:
            xs.extend((t1, t2)), fs.extend((f1, f2))

    def _interval(self, k: int) -> tuple[list[float], list[float]]:
        if k not in self.inner:
            xs: list[float] = []
            fs: list[float] = []
            self._refine(
                k / _BASE_POINTS_PER_DECADE,
                self._base(k),
                (k + 1) / _BASE_POINTS_PER_DECADE,
                self._base(k + 1),
                0,
                xs,
                fs,
            )
            self.inner[k] = (xs, fs)
        return self.inner[k]

    def covering(self, k0: int, k1: int) -> tuple[np.ndarray, np.ndarray]:
        """Knots covering base points k0 .. k1 (a superset: the union of every span asked for)."""
        if self.span is None or k0 < self.span[0] or k1 > self.span[1]:
            lo, hi = (k0, k1) if self.span is None else (min(k0, self.span[0]), max(k1, self.span[1]))
            xs: list[float] = []
            fs: list[float] = []
            for k in range(lo, hi):
                inner_x, inner_f = self._interval(k)
                xs.append(k / _BASE_POINTS_PER_DECADE), fs.append(self._base(k))
                xs.extend(inner_x), fs.extend(inner_f)
            xs.append(hi / _BASE_POINTS_PER_DECADE), fs.append(self._base(hi))
            self.span, self.knots = (lo, hi), (np.array(xs), np.array(fs))
        return self.knots


_GRID_CACHE: dict[tuple[float, float], _OrderGrid] = {}


def _interpolated_rdp(q: float, values: np.ndarray, order: float) -> np.ndarray:
    grid = _GRID_CACHE.setdefault((float(q), float(order)), _OrderGrid(float(q), float(order)))
    position = np.log10(values)
    k0 = int(np.floor(position.min() * _BASE_POINTS_PER_DECADE))
    k1 = max(int(np.ceil(position.max() * _BASE_POINTS_PER_DECADE)), k0 + 1)
    xs, fs = grid.covering(k0, k1)
    return np.exp(np.interp(position, xs, fs))


def subsampled_gaussian_rdp(
    q: float, noise_multiplier: np.ndarray, orders: np.ndarray, method: str = "auto"
) -> np.ndarray:
    """RDP of one Poisson-subsampled Gaussian step, for every noise multiplier: [..., len(orders)].

    method: `exact` calls Opacus for every distinct value; `interpolate` interpolates log RDP
    linearly in log z between memoised Opacus knots, refined (trisection, checked at two points
    per interval) where the curve bends: the sharp regime change of high orders at z ~ 0.4-3;
    `auto` picks exact for <= 500 values.
    Tested bound: relative error below INTERPOLATION_RTOL = 1e-4 against `exact`, on dense z
    grids over 1e-2 .. 1e4, for the orders (1.25 .. 64) and sample rates (128/50000 .. 1) the
    project uses (tests/test_privacy.py; measured worst case 3.6e-5).
    A zero gradient norm (z = inf) costs nothing. From z = asymptotic_switch(q, order) on (1e3
    for integer orders, ~22 for fractional ones, where Opacus' series lose precision) both
    methods use the expansion eps = (alpha q^2 / 2) u (1 + c u), u = 1/z^2 (remainder <= 1e-6
    relative, checked against high-precision quadrature in the tests).
    """
    z = np.asarray(noise_multiplier, dtype=np.float64)
    orders = np.asarray(orders, dtype=np.float64)
    out = np.zeros(z.shape + (len(orders),), dtype=np.float64)
    finite = np.isfinite(z)
    if not finite.any():
        return out
    values = z[finite]
    if np.any(values <= 0):
        raise ValueError("noise multipliers must be positive")
    if method == "auto":
        method = "exact" if values.size <= 500 else "interpolate"
    if method not in ("exact", "interpolate"):
        raise ValueError(
            f"unknown rdp method {method!r} (config key privacy.rdp_method): exact, interpolate, auto"
        )
    columns = np.empty((values.size, len(orders)), dtype=np.float64)
    for j, order in enumerate(orders.tolist()):
        far = values >= asymptotic_switch(q, order)
        columns[far, j] = _expansion_rdp(q, values[far], order)
        near = values[~far]
        if near.size == 0:
            continue
        if method == "exact":
            unique, inverse = np.unique(near, return_inverse=True)
            columns[~far, j] = np.array([_opacus_rdp(q, v, order) for v in unique.tolist()])[
                inverse.reshape(-1)
            ]
        else:
            columns[~far, j] = _interpolated_rdp(q, near, order)
    out[finite] = columns
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


def checkpoint_step_groups(
    checkpoint_steps: Sequence[int], lr: np.ndarray, *, include_step0: bool = False, max_lr_levels: int = 16
) -> tuple[np.ndarray, StepGroups]:
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


def per_instance_rdp(
    norms: np.ndarray,
    groups: StepGroups,
    *,
    sample_rate: float,
    batch_size: int,
    beta: float,
    orders: np.ndarray,
    clip: float | None = None,
    method: str = "auto",
) -> np.ndarray:
    """Composed per-instance RDP, float64 [n, len(orders)]: P(x, alpha) = sum_t eps_t(alpha; x).

    norms: [n, J] gradient norm of every example at each of the J observations in `groups`
    (the checkpoint estimator: clean inputs, eval mode); observation j stands for every step of
    group j, each step a Poisson-subsampled Gaussian step at rate `sample_rate` with noise
    multiplier z = B sqrt(2 / (lr beta)) / g (noise_multiplier). An estimate, not a DP guarantee:
    momentum, the shuffled sampling and its short last batch, augmentation and the norm's change
    between observations are left out (module docstring, docs/accounting.md).
    """
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim != 2 or norms.shape[1] != len(groups.lrs):
        raise ValueError(
            f"norms must be [n, {len(groups.lrs)}] (one column per step group), got {norms.shape}"
        )
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


def worst_case_rdp(
    max_norms: np.ndarray,
    groups: StepGroups,
    *,
    sample_rate: float,
    batch_size: int,
    beta: float,
    orders: np.ndarray,
    delta: float,
) -> tuple[np.ndarray, float, float]:
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
            rdp += np.asarray(
                opacus_rdp.compute_rdp(q=q, noise_multiplier=z, steps=steps, orders=orders.tolist())
            )
    epsilon, best = opacus_rdp.get_privacy_spent(orders=orders.tolist(), rdp=rdp.tolist(), delta=delta)
    return rdp, float(epsilon), float(best)


def online_norms(
    presentation_step: np.ndarray,
    presentation_example: np.ndarray,
    presentation_grad_norm: np.ndarray,
    n: int,
    steps_per_epoch: int,
    epochs: int,
) -> np.ndarray:
    """In-batch gradient norms as [n, epochs]: the mean of each example's presentations per epoch.

    Epochs in which an example was never drawn (Poisson sampling) reuse its latest earlier
    observation, or the first later one.
    """
    if np.isnan(presentation_grad_norm).all():
        raise ValueError(
            "the run recorded no in-batch gradient norms (training.dynamics.batch_grad_norms was false)"
        )
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
    chunks = [lr[a : a + steps_per_epoch] for a in range(0, len(lr), steps_per_epoch)]
    lrs, counts = zip(*(_lr_levels(c, max_lr_levels) for c in chunks))
    return StepGroups(list(lrs), list(counts))


def online_rdp(
    dynamics: dict[str, np.ndarray],
    *,
    beta: float,
    orders: np.ndarray,
    clip: float | None = None,
    method: str = "auto",
    max_lr_levels: int = 16,
) -> np.ndarray:
    """The online estimator, float64 [n, len(orders)]: P composed from the in-batch norms a
    training run recorded, each epoch's mean norm standing for every step of that epoch.

    The in-batch norms are those of the training inputs (augmented when training.augment is on)
    at the weights of the step that presented them. Same accounting and
    the same omissions as per_instance_rdp (module docstring): an estimate, not a DP guarantee.
    """
    steps_per_epoch = int(dynamics["steps_per_epoch"])
    epochs = len(dynamics["lr"]) // steps_per_epoch
    observed = online_norms(
        dynamics["presentation_step"],
        dynamics["presentation_example"],
        dynamics["presentation_grad_norm"].astype(np.float64),
        len(dynamics["train_index"]),
        steps_per_epoch,
        epochs,
    )
    batch_size, sample_rate = sampling_of_run(dynamics)
    return per_instance_rdp(
        observed,
        epoch_step_groups(dynamics["lr"], steps_per_epoch, max_lr_levels),
        sample_rate=sample_rate,
        batch_size=batch_size,
        beta=beta,
        orders=orders,
        clip=clip,
        method=method,
    )


def privacy_settings(config: Mapping[str, Any] | Settings) -> dict[str, Any]:
    """The accounting parameters of an experiment, resolved from its config (a dict or Settings)."""
    privacy = as_settings(config).privacy
    return {
        "alpha": float(privacy.alpha),
        "orders": rdp_orders(privacy.alpha, privacy.orders),
        "beta": float(privacy.beta),
        "clip": privacy.clip,
        "include_step0": privacy.include_step0,
        "method": privacy.rdp_method,
        "delta": float(privacy.delta),
    }
