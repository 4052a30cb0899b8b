"""Predicted unlearning budgets for forget requests, calibrated on the experiment's steps table.

The paper's adaptive-unlearning reading of claim 3: the per-instance privacy loss P(x, 4 alpha) of a
forget set predicts how many unlearning steps it needs. This module turns the measured
steps-to-unlearn of every forget group (steps.py) into a budget for a new request, validates the
rule on groups left out of the fit, and runs it (`forget`, the `perinstance forget` command).

Model (this project's choice). For a request G with mean privacy loss P_G (the mean of
P(x, 4 alpha) over its examples, as the steps table records for every group) the steps needed are a
latent T with

    T = slope * (log P_G - center) + intercept + N(0, sigma^2),

the fitted form of k_hat ~ log P(x, 4 alpha) + const (theory.py), with the theory's clipping at 0
(ratio <= 1) as left censoring. Each unlearning run is one observation, known only as an interval:

- a run whose group already sat inside the oracle band at step 0 needed no unlearning: T <= 0;
- a measured first passage at evaluation step k: T in (k - eval_every, k] (the criterion is only
  checked every eval_every steps);
- a censored run: T > L, where L is the latest evaluation that could still start a run of
  oracles.consecutive inside evaluations before the run ended (k_max - (consecutive - 1) eval_every
  on the default grid), so that a censored run is a lower bound and never a plain value.

The parameters maximise the interval-censored normal likelihood (`fit_budget_model`). A request's
budget is the smallest evaluation step b with P(T <= b) >= coverage under the predictive
distribution N(mu(P_G), sigma^2 + var mu(P_G)) (parameter uncertainty from the observed
information), 0 when that quantile is <= 0, and at most L: a larger budget could not be checked
against any run the experiment made. The naive policy gives every request one fixed budget, the
smallest step by which a `coverage` fraction of the calibration runs were unlearned
(`fixed_budget`).

Group level, not per example: a request is unlearned when the mean forget loss of the whole request
sits inside its oracle band (the criterion of steps.py), which per-example first passages do not
compose into; the per-example references are also far noisier (three oracles, most examples inside
their own band at step 0).

What the calibration leaves out, wherever its budgets are used:
- request size and composition: it is fitted on groups of groups.size examples chosen along one
  ranking (or at random) and sees a request only through its mean P(x, 4 alpha); a smaller request
  has a noisier mean loss and a different band, a request mixing very high and very low P examples
  is summarised by one mean;
- everything but P: the class mix, the step-0 gap and the distance to stationarity of the original
  model enter only through the residual sigma;
- the original model: runs from different training seeds pool into one fit (P is the mean over
  seeds), and the criterion is measured against that experiment's oracles;
- the recipe: a calibration applies only to the dataset, model, training, privacy accounting and
  unlearning recipe it was measured with (`forget` refuses any other);
- normality of the residual and linearity in log P, and extrapolation outside the calibrated range
  of P (flagged, never refused).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import log_ndtr, ndtri
from scipy.stats import rankdata

from . import io

DEFAULT_COVERAGE = 0.9  # budget rule: the 90 % quantile, so that most requests are unlearned
FEATURE = "privacy_loss_4alpha"
OVERLAP_POLICIES = ("exclude", "keep")
# interval kinds of a run's steps needed, in the validation table
NONE, MEASURED, CENSORED = "none", "measured", "censored"
CALIBRATION_FORMAT = 1
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_STEPS_COLUMNS = ("score", "group", "method", "seed", "steps", "censored", "inside_at_step0", FEATURE)


# --------------------------------------------------------------------------- observation grid


def evaluation_steps(k_max: int, eval_every: int) -> np.ndarray:
    """The steps an unlearning run of k_max steps is evaluated at: every eval_every steps and k_max."""
    if k_max < 0 or eval_every < 1:
        raise ValueError(f"need k_max >= 0 and eval_every >= 1, got {k_max}, {eval_every}")
    return np.union1d(np.arange(0, k_max + 1, eval_every), [k_max]).astype(np.int64)


def observation_limit(k_max: int, eval_every: int, consecutive: int) -> int:
    """The latest step at which a run of k_max steps can still be seen to start its first passage.

    The criterion needs `consecutive` evaluations inside the band, so a passage starting later than
    the consecutive-th last evaluation is never confirmed: a censored run needed more than this.
    """
    grid = evaluation_steps(k_max, eval_every)
    if consecutive < 1 or grid.size < consecutive:
        raise ValueError(
            f"a run of {k_max} steps evaluated every {eval_every} has {grid.size} evaluations, fewer than "
            f"the {consecutive} consecutive ones the criterion needs (config keys unlearning.k_max, "
            "unlearning.eval_every, oracles.consecutive)"
        )
    return int(grid[-consecutive])


def step_intervals(
    steps: pd.DataFrame, *, eval_every: int, consecutive: int, k_max: int | None = None
) -> pd.DataFrame:
    """The interval (lower, upper] holding each run's steps needed, from the steps table.

    Columns added: `kind` (none: inside the band at step 0, T <= 0; measured: first passage at
    `steps`, T in (steps - eval_every, steps]; censored: T > the run's observation limit), `lower`,
    `upper` (-inf / inf where open) and `steps_truncated` = min(T, limit) clipped at 0, which is known
    exactly for every run (0, `steps`, or the limit). A run's limit comes from its `steps_run` (else
    `k_max`, else the table's k_max column).
    """
    missing = [c for c in _STEPS_COLUMNS if c not in steps]
    if missing:
        raise ValueError(f"the steps table lacks columns {missing}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    table = steps.copy()
    p = table[FEATURE].to_numpy(np.float64)
    bad = ~(np.isfinite(p) & (p > 0))
    if bad.any():
        named = table.loc[bad, ["method", "score", "group"]].drop_duplicates().to_dict("records")
        raise ValueError(f"the steps table's {FEATURE} must be finite and > 0; it is not for {named[:3]}")
    table["censored"] = table["censored"].astype(bool)
    table["inside_at_step0"] = table["inside_at_step0"].astype(bool)
    if "steps_run" in table:
        ran = table["steps_run"].to_numpy(np.int64)
    elif k_max is not None:
        ran = np.full(len(table), int(k_max))
    elif "k_max" in table:
        ran = table["k_max"].to_numpy(np.int64)
    else:
        raise ValueError("the steps table has neither steps_run nor k_max, and no k_max was given")
    limits = np.array([observation_limit(int(r), eval_every, consecutive) for r in ran], dtype=np.int64)
    inside = table["inside_at_step0"].to_numpy()
    censored = table["censored"].to_numpy() & ~inside
    measured = ~inside & ~censored
    k = table["steps"].to_numpy(np.float64)
    if np.any(measured & (k <= 0)):
        bad = table.loc[measured & (k <= 0), ["score", "group", "seed"]].to_dict("records")
        raise ValueError(f"runs outside the band at step 0 with a first passage at step <= 0: {bad[:3]}")
    table["kind"] = np.where(inside, NONE, np.where(censored, CENSORED, MEASURED))
    table["lower"] = np.where(inside, -np.inf, np.where(censored, limits, k - eval_every)).astype(np.float64)
    table["upper"] = np.where(inside, 0.0, np.where(censored, np.inf, k)).astype(np.float64)
    table["limit"] = limits
    table["steps_truncated"] = np.where(inside, 0, np.where(censored, limits, np.minimum(k, limits)))
    return table


# --------------------------------------------------------------------------- the censored fit


def _log_interval_probability(z_lo: np.ndarray, z_hi: np.ndarray) -> np.ndarray:
    """log(Phi(z_hi) - Phi(z_lo)), computed on the tail that keeps it accurate (z_lo < z_hi)."""
    upper_tail = z_lo > 0
    # upper tail: Phi(-z_lo) - Phi(-z_hi); lower tail: Phi(z_hi) - Phi(z_lo)
    big = np.where(upper_tail, log_ndtr(-z_lo), log_ndtr(z_hi))
    small = np.where(upper_tail, log_ndtr(-z_hi), log_ndtr(z_lo))
    with np.errstate(divide="ignore"):
        return big + np.log(-np.expm1(small - big))


def interval_log_likelihood(
    mu: np.ndarray, sigma: float, lower: np.ndarray, upper: np.ndarray
) -> tuple[float, np.ndarray, float]:
    """Log-likelihood of intervals (lower, upper] under N(mu, sigma^2), with d/dmu and d/dlog(sigma).

    lower may be -inf (left censored) and upper inf (right censored). Returns (value, gradient with
    respect to each mu [n], derivative with respect to log sigma).
    """
    mu = np.asarray(mu, dtype=np.float64)
    z_lo = (np.asarray(lower, dtype=np.float64) - mu) / sigma
    z_hi = (np.asarray(upper, dtype=np.float64) - mu) / sigma
    log_p = _log_interval_probability(z_lo, z_hi)

    def density_ratio(z: np.ndarray) -> np.ndarray:  # phi(z) / P, 0 at an open end
        with np.errstate(over="ignore", invalid="ignore"):
            return np.where(np.isfinite(z), np.exp(-0.5 * z**2 - _HALF_LOG_2PI - log_p), 0.0)

    r_lo, r_hi = density_ratio(z_lo), density_ratio(z_hi)
    grad_mu = (r_lo - r_hi) / sigma
    with np.errstate(invalid="ignore"):  # inf * 0 at an open end, replaced by 0
        zr_lo = np.where(np.isfinite(z_lo), z_lo * r_lo, 0.0)
        zr_hi = np.where(np.isfinite(z_hi), z_hi * r_hi, 0.0)
    return float(log_p.sum()), grad_mu, float((zr_lo - zr_hi).sum())


def _field_values(cls, values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The values of a dataclass's fields from a saved mapping; every field must be there."""
    names = list(cls.__dataclass_fields__)
    missing = [n for n in names if n not in values]
    if missing:
        raise ValueError(f"{what} needs the keys {missing}")
    return {n: values[n] for n in names}


@dataclass(frozen=True)
class BudgetModel:
    """A fitted steps ~ log P(x, 4 alpha) relation with interval-censored normal residuals.

    mu(P) = intercept + slope * (log P - center); `covariance` is that of (intercept, slope, log
    sigma) from the observed information (2x2 block for (intercept, slope) only, padded with NaN,
    when sigma sits at its floor). A FITTED trend, not the theory's bound: its constants stand for
    the unknowable C_LSI and stationarity terms.
    """

    intercept: float
    slope: float
    sigma: float
    center: float
    covariance: tuple[tuple[float, ...], ...]
    n: int
    n_none: int
    n_measured: int
    n_censored: int
    p_min: float
    p_max: float
    sigma_floor: float
    converged: bool

    @property
    def scale(self) -> float:
        """Steps per unit of log P (the fitted trend's scale, as theory.fit_log_trend names it)."""
        return self.slope

    @property
    def offset(self) -> float:
        """Fitted steps at P = 1 (the trend's offset: scale * log P + offset)."""
        return self.intercept - self.slope * self.center

    def mean(self, privacy_loss: np.ndarray) -> np.ndarray:
        """mu(P), the fitted latent steps (may be negative: no unlearning needed)."""
        return self.intercept + self.slope * (_log_feature(privacy_loss) - self.center)

    def mean_variance(self, privacy_loss: np.ndarray) -> np.ndarray:
        """Variance of the estimated mu(P) from the parameters' covariance (0 when unavailable)."""
        d = _log_feature(privacy_loss) - self.center
        cov = np.asarray(self.covariance, dtype=np.float64)[:2, :2]
        if not np.all(np.isfinite(cov)):
            return np.zeros_like(d)
        return np.maximum(cov[0, 0] + 2 * d * cov[0, 1] + d**2 * cov[1, 1], 0.0)

    def quantile(
        self, privacy_loss: np.ndarray, q: float, *, parameter_uncertainty: bool = True
    ) -> np.ndarray:
        """The q-quantile of the latent steps needed: predictive, or plug-in without
        `parameter_uncertainty`."""
        if not 0 < q < 1:
            raise ValueError(f"a quantile needs 0 < q < 1, got {q}")
        extra = self.mean_variance(privacy_loss) if parameter_uncertainty else 0.0
        return self.mean(privacy_loss) + float(ndtri(q)) * np.sqrt(self.sigma**2 + extra)

    def probability_within(self, privacy_loss: np.ndarray, budget: np.ndarray) -> np.ndarray:
        """P(T <= budget) under the predictive distribution."""
        from scipy.special import ndtr

        sd = np.sqrt(self.sigma**2 + self.mean_variance(privacy_loss))
        return ndtr((np.asarray(budget, dtype=np.float64) - self.mean(privacy_loss)) / sd)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["covariance"] = [[_json_float(v) for v in row] for row in self.covariance]
        out.update(scale=self.scale, offset=self.offset)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> BudgetModel:
        kwargs = _field_values(cls, values, "a budget model")
        kwargs["covariance"] = tuple(
            tuple(float("nan") if v is None else float(v) for v in row) for row in values["covariance"]
        )
        return cls(**kwargs)


def _json_float(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def _log_feature(privacy_loss: np.ndarray) -> np.ndarray:
    p = np.asarray(privacy_loss, dtype=np.float64)
    if not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise ValueError("privacy losses P(x, 4 alpha) must be finite and > 0")
    return np.log(p)


def fit_budget_model(
    privacy_loss: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    sigma_floor: float,
) -> BudgetModel:
    """Maximum-likelihood fit of T ~ N(intercept + slope (log P - center), sigma^2) to intervals.

    Each observation is known only to lie in (lower, upper]: lower = -inf, upper = 0 for "no
    unlearning needed", upper = inf for a censored run. Needs at least two measured intervals (both
    ends finite) at two different P; raises ValueError otherwise (the slope would not be identified).
    sigma is kept at or above `sigma_floor` (half the evaluation spacing in `calibrate`): a spread below
    the evaluation grid is not resolved by interval data, and a sample a line fits exactly has no
    finite maximum.
    """
    x = _log_feature(privacy_loss).ravel()
    lo = np.asarray(lower, dtype=np.float64).ravel()
    hi = np.asarray(upper, dtype=np.float64).ravel()
    if not x.shape == lo.shape == hi.shape or x.size == 0:
        raise ValueError("privacy losses and interval bounds must be non-empty and of the same length")
    if np.any(~(lo < hi)) or np.any(np.isnan(lo)) or np.any(np.isnan(hi)):
        raise ValueError("every interval needs lower < upper")
    if not sigma_floor > 0:
        raise ValueError(f"sigma_floor must be > 0, got {sigma_floor}")
    measured = np.isfinite(lo) & np.isfinite(hi)
    if measured.sum() < 2 or np.ptp(x[measured]) == 0:
        raise ValueError(
            "need at least two measured first passages at different privacy losses to fit a slope "
            f"(got {int(measured.sum())} measured of {x.size} runs)"
        )
    center = float(x.mean())
    xc = x - center
    # start: least squares through the measured midpoints and the open ends' finite bounds
    target = np.where(measured, (lo + hi) / 2, np.where(np.isfinite(hi), hi, lo))
    design = np.column_stack([np.ones_like(xc), xc])
    start, *_ = np.linalg.lstsq(design, target, rcond=None)
    spread = float(np.std(target - design @ start)) or float(np.ptp(target)) or 1.0

    def negative(theta: np.ndarray) -> tuple[float, np.ndarray]:  # theta = (intercept, slope, log sigma)
        mu = theta[0] + theta[1] * xc
        value, grad_mu, grad_log_sigma = interval_log_likelihood(mu, math.exp(theta[2]), lo, hi)
        return -value, -np.array([grad_mu.sum(), (grad_mu * xc).sum(), grad_log_sigma])

    def floored(u: np.ndarray) -> tuple[float, np.ndarray]:  # sigma = floor + exp(u[2]), unconstrained
        sigma = sigma_floor + math.exp(u[2])
        value, grad = negative(np.array([u[0], u[1], math.log(sigma)]))
        return value, grad * np.array([1.0, 1.0, math.exp(u[2]) / sigma])

    u0 = np.array([start[0], start[1], math.log(max(spread - sigma_floor, sigma_floor))])
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        # BFGS on an unconstrained sigma: L-BFGS-B ran ~80x slower while its BLAS threads competed
        # for busy cores (0.3 s against 3 ms per fit, measured; the validation runs hundreds of
        # fits), and TNC stopped short of the optimum on the default experiment's runs
        result = minimize(floored, u0, jac=True, method="BFGS", options={"gtol": 1e-8})
    u = result.x
    sigma = sigma_floor + math.exp(u[2])
    theta = np.array([u[0], u[1], math.log(sigma)])
    # "precision loss" at a zero gradient is an optimum too
    converged = bool(result.success or np.max(np.abs(floored(u)[1])) < 1e-4)
    covariance = _covariance(negative, theta, sigma_free=sigma > sigma_floor * (1 + 1e-3))
    return BudgetModel(
        intercept=float(theta[0]),
        slope=float(theta[1]),
        sigma=float(sigma),
        center=center,
        covariance=covariance,
        n=int(x.size),
        n_none=int((~np.isfinite(lo)).sum()),
        n_measured=int(measured.sum()),
        n_censored=int((~np.isfinite(hi)).sum()),
        p_min=float(np.exp(x.min())),
        p_max=float(np.exp(x.max())),
        sigma_floor=float(sigma_floor),
        converged=converged,
    )


def _covariance(negative, theta: np.ndarray, *, sigma_free: bool) -> tuple[tuple[float, ...], ...]:
    """Inverse observed information at the optimum, by central differences of the analytic gradient.

    When sigma sits at its floor only the (intercept, slope) block is inverted. NaN when the
    information is not positive definite (a flat direction: the data do not pin the parameter).
    """
    free = 3 if sigma_free else 2
    hessian = np.empty((free, free))
    for j in range(free):
        h = 1e-5 * max(1.0, abs(theta[j]))
        up, down = theta.copy(), theta.copy()
        up[j] += h
        down[j] -= h
        hessian[:, j] = (negative(up)[1][:free] - negative(down)[1][:free]) / (2 * h)
    hessian = (hessian + hessian.T) / 2
    out = np.full((3, 3), np.nan)
    try:
        np.linalg.cholesky(hessian)
        out[:free, :free] = np.linalg.inv(hessian)
    except np.linalg.LinAlgError:
        pass
    return tuple(tuple(float(v) for v in row) for row in out)


# --------------------------------------------------------------------------- budgets


def round_budget(steps: np.ndarray, *, eval_every: int, limit: int) -> np.ndarray:
    """Steps as a budget: 0 when <= 0, else rounded up to the evaluation grid, at most `limit`."""
    s = np.asarray(steps, dtype=np.float64)
    # a hair below a grid step is that step (floating point in the quantile)
    grid = np.ceil(np.maximum(s, 0.0) / eval_every - 1e-9) * eval_every
    return np.minimum(grid, limit).astype(np.int64)


def fixed_budget(
    steps_truncated: np.ndarray, kind: Sequence[str], *, coverage: float, eval_every: int, limit: int
) -> int:
    """The naive policy: the smallest grid step b <= limit by which a `coverage` fraction of the
    runs were unlearned (inside at step 0, or a measured first passage <= b; a censored run never
    is), else `limit`."""
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must lie strictly between 0 and 1, got {coverage}")
    kind = np.asarray(kind)
    t = np.asarray(steps_truncated, dtype=np.float64)
    if t.size == 0:
        raise ValueError("a fixed budget needs at least one calibration run")
    for b in evaluation_steps(limit, eval_every):
        if b > limit:
            break
        unlearned = (kind == NONE) | ((kind == MEASURED) & (t <= b))
        if unlearned.mean() >= coverage - 1e-12:
            return int(b)
    return int(limit)


@dataclass(frozen=True)
class Calibration:
    """One method's budget rule: the fitted model (None when it could not be fitted), the fixed
    budget of the naive policy on the same runs, and the grid both live on."""

    method: str
    coverage: float
    eval_every: int
    consecutive: int
    k_max: int
    limit: int
    fixed_budget: int
    model: BudgetModel | None
    reason: str
    n_runs: int
    groups: tuple[str, ...]
    group_sizes: tuple[int, ...]

    def budget(self, privacy_loss: float, coverage: float | None = None) -> dict[str, Any]:
        """The budget for a request of mean P(x, 4 alpha) `privacy_loss`.

        `rule` says which rule gave it: `quantile` (the fitted model's predictive coverage-quantile,
        rounded up to the evaluation grid, 0 below 0, at most `limit`) or `fixed` (no model: the
        naive policy's budget, computed at the calibration's own coverage). Also returned:
        `predicted_steps` (the median, clipped to [0, limit]), `quantile_steps` (before rounding
        and capping), `capped` (the quantile exceeded `limit`) and `extrapolated` (P outside the
        calibrated range).
        """
        q = self.coverage if coverage is None else float(coverage)
        if not 0 < q < 1:
            raise ValueError(f"coverage must lie strictly between 0 and 1, got {q}")
        p = float(privacy_loss)
        if self.model is None:
            return {
                "rule": "fixed",
                "budget": int(self.fixed_budget),
                "coverage": self.coverage,
                "predicted_steps": float("nan"),
                "quantile_steps": float("nan"),
                "capped": False,
                "extrapolated": False,
                "why": self.reason,
            }
        quantile = float(self.model.quantile(np.array([p]), q)[0])
        return {
            "rule": "quantile",
            "budget": int(
                round_budget(np.array([quantile]), eval_every=self.eval_every, limit=self.limit)[0]
            ),
            "coverage": q,
            "predicted_steps": float(np.clip(self.model.mean(np.array([p]))[0], 0, self.limit)),
            "quantile_steps": quantile,
            "capped": quantile > self.limit,
            "extrapolated": not self.model.p_min <= p <= self.model.p_max,
            "why": "",
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model"] = None if self.model is None else self.model.to_dict()
        out["groups"], out["group_sizes"] = list(self.groups), list(self.group_sizes)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Calibration:
        kwargs = _field_values(cls, values, "a method's calibration")
        kwargs["model"] = None if values["model"] is None else BudgetModel.from_dict(values["model"])
        kwargs["groups"], kwargs["group_sizes"] = tuple(values["groups"]), tuple(values["group_sizes"])
        return cls(**kwargs)


def _grid(config: Mapping[str, Any]) -> dict[str, int]:
    spec = config["unlearning"]
    eval_every, consecutive, k_max = spec["eval_every"], config["oracles"]["consecutive"], spec["k_max"]
    return {
        "eval_every": int(eval_every),
        "consecutive": int(consecutive),
        "k_max": int(k_max),
        "limit": observation_limit(int(k_max), int(eval_every), int(consecutive)),
    }


def calibrate(
    runs: pd.DataFrame,
    *,
    method: str,
    coverage: float,
    eval_every: int,
    consecutive: int,
    k_max: int,
    group_sizes: Mapping[tuple[str, str], int] | None = None,
) -> Calibration:
    """Calibrate one method's budget rule on the runs given (rows of `step_intervals` output).

    The fit failing (too few measured first passages) is not an error: the calibration then holds
    no model, says why in `reason`, and its budgets come from the fixed rule.
    """
    limit = observation_limit(k_max, eval_every, consecutive)
    if runs.empty:
        raise ValueError(f"no unlearning runs of method {method!r} to calibrate on")
    fixed = fixed_budget(
        runs["steps_truncated"].to_numpy(),
        runs["kind"].to_numpy(),
        coverage=coverage,
        eval_every=eval_every,
        limit=limit,
    )
    model, reason = None, ""
    try:
        model = fit_budget_model(
            runs[FEATURE].to_numpy(),
            runs["lower"].to_numpy(),
            runs["upper"].to_numpy(),
            sigma_floor=eval_every / 2,
        )
    except ValueError as err:
        reason = str(err)
    keys = sorted({(s, g) for s, g in zip(runs["score"], runs["group"])})
    return Calibration(
        method=method,
        coverage=float(coverage),
        eval_every=eval_every,
        consecutive=consecutive,
        k_max=k_max,
        limit=limit,
        fixed_budget=fixed,
        model=model,
        reason=reason,
        n_runs=len(runs),
        groups=tuple(f"{s}/{g}" for s, g in keys),
        group_sizes=tuple(sorted({int(group_sizes[k]) for k in keys if k in group_sizes}))
        if group_sizes
        else (),
    )


def _applies_to(config: Mapping[str, Any], method: str) -> dict[str, Any]:
    """What a calibration was measured with and applies to: data, model, training, accounting and the
    method's effective unlearning recipe (unset optimizer keys fall back to training, as the runs do)."""
    spec, training = config["unlearning"], config["training"]
    recipe = {
        k: spec[k] if spec[k] is not None else training[k]
        for k in ("lr", "momentum", "weight_decay", "batch_size")
    }
    recipe.update(method=method, sgld_beta=spec["sgld_beta"], l1_gamma=spec["l1_gamma"])
    privacy = {k: v for k, v in config["privacy"].items() if not k.startswith("robustness")}
    return {
        "dataset": config["dataset"],
        "model": config["model"],
        "training": config["training"],
        "privacy": privacy,
        "recipe": recipe,
        "oracles": config["oracles"],
    }


def calibrations(
    config: Mapping[str, Any],
    steps: pd.DataFrame,
    groups: pd.DataFrame | None = None,
    *,
    coverage: float = DEFAULT_COVERAGE,
) -> dict[str, Any]:
    """The calibration file's content: one budget rule per unlearning method, fitted on every run."""
    grid = _grid(config)
    table = step_intervals(steps, eval_every=grid["eval_every"], consecutive=grid["consecutive"])
    sizes = _group_sizes(groups)
    methods = {}
    for method, runs in table.groupby("method", sort=True):
        calibration = calibrate(
            runs,
            method=str(method),
            coverage=coverage,
            eval_every=grid["eval_every"],
            consecutive=grid["consecutive"],
            k_max=grid["k_max"],
            group_sizes=sizes,
        )
        methods[str(method)] = {
            **calibration.to_dict(),
            "applies_to": _json_safe(_applies_to(config, str(method))),
        }
    return {
        "format": CALIBRATION_FORMAT,
        "experiment": config["experiment"],
        "feature": "log of the mean P(x, 4 alpha) over the request (scores column privacy_loss_4alpha)",
        "rule": (
            "smallest evaluation step b with P(T <= b) >= coverage under the fitted predictive "
            "distribution, 0 below 0, at most limit; fixed budget when no model could be fitted"
        ),
        "methods": methods,
    }


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _group_sizes(groups: pd.DataFrame | None) -> dict[tuple[str, str], int]:
    if groups is None:
        return {}
    missing = [c for c in ("score", "group", "index") if c not in groups]
    if missing:
        raise ValueError(f"the groups table lacks columns {missing}")
    return {(str(s), str(g)): len(part) for (s, g), part in groups.groupby(["score", "group"])}


def load_calibration(path: str | Path, method: str) -> tuple[Calibration, dict[str, Any]]:
    """One method's Calibration from a calibration file, with what it applies to.

    FileNotFoundError names a missing file; ValueError names the method when it is not calibrated.
    """
    content = io.load_json(path)
    if (
        not isinstance(content, dict)
        or content.get("format") != CALIBRATION_FORMAT
        or "methods" not in content
    ):
        raise io.CorruptArtefact(
            f"{path}: not a budget calibration file (format {CALIBRATION_FORMAT}); delete it and rerun"
        )
    methods = content["methods"]
    if method not in methods:
        raise ValueError(
            f"{path} has no calibration for unlearning method {method!r} "
            f"(calibrated: {', '.join(sorted(methods)) or 'none'})"
        )
    entry = dict(methods[method])
    applies = entry.pop("applies_to", {})
    try:
        return Calibration.from_dict(entry), applies
    except (TypeError, ValueError) as err:
        raise io.CorruptArtefact(
            f"{path}: the calibration of {method!r} is incomplete ({err}); delete it and rerun"
        ) from None


# --------------------------------------------------------------------------- held-out validation


def _members(groups: pd.DataFrame | None) -> dict[tuple[str, str], frozenset[int]]:
    if groups is None:
        return {}
    return {
        (str(s), str(g)): frozenset(part["index"].astype(int))
        for (s, g), part in groups.groupby(["score", "group"])
    }


def leave_one_group_out(
    config: Mapping[str, Any],
    steps: pd.DataFrame,
    groups: pd.DataFrame | None = None,
    *,
    coverage: float = DEFAULT_COVERAGE,
    overlap: str = "exclude",
) -> pd.DataFrame:
    """Predict every group of every method from a calibration that never saw it.

    For each method and each of its groups G: calibrate on the runs of the method's other groups
    (with `overlap` = "exclude", also without any group that shares an example with G, since their
    measurements say something about G's examples; needs `groups`), predict G's budget from its mean
    P(x, 4 alpha), and score both policies on G's own runs. One row per (method, held-out group,
    run): the measured interval, `steps_truncated` (exact), `predicted_steps` (median clipped to
    [0, limit]), `predicted_latent` (mu before clipping, used for ranks), `budget` and
    `budget_rule` (quantile, or fixed when the fold's fit failed), `budget_fixed`,
    `unlearned_budget` / `unlearned_fixed` (T <= budget: decidable for every run since budgets never
    exceed the observation limit), `abs_error` (|predicted_steps - steps_truncated|), and what
    the fold was fitted on.
    """
    if overlap not in OVERLAP_POLICIES:
        raise ValueError(f"overlap must be one of {OVERLAP_POLICIES}, got {overlap!r}")
    if overlap == "exclude" and groups is None:
        raise ValueError("overlap='exclude' needs the groups table (which examples each group holds)")
    grid = _grid(config)
    table = step_intervals(steps, eval_every=grid["eval_every"], consecutive=grid["consecutive"])
    members = _members(groups)
    rows = []
    for method, runs in table.groupby("method", sort=True):
        keys = sorted({(str(s), str(g)) for s, g in zip(runs["score"], runs["group"])})
        key_of = list(zip(runs["score"].astype(str), runs["group"].astype(str)))
        for held in keys:
            dropped = []
            if overlap == "exclude":
                if held not in members:
                    raise ValueError(f"group {held[0]}/{held[1]} is not in the groups table")
                dropped = [k for k in keys if k != held and members.get(k, frozenset()) & members[held]]
            keep = np.array([k != held and k not in dropped for k in key_of])
            test = runs[np.array([k == held for k in key_of])]
            fold = runs[keep]
            if fold.empty:
                continue
            calibration = calibrate(
                fold,
                method=str(method),
                coverage=coverage,
                eval_every=grid["eval_every"],
                consecutive=grid["consecutive"],
                k_max=grid["k_max"],
            )
            p = float(test[FEATURE].iloc[0])
            prediction = calibration.budget(p)
            latent = float(calibration.model.mean(np.array([p]))[0]) if calibration.model else float("nan")
            for run in test.itertuples(index=False):
                t = float(run.steps_truncated)
                rows.append(
                    {
                        "overlap": overlap,
                        "method": method,
                        "score": held[0],
                        "group": held[1],
                        "seed": int(run.seed),
                        FEATURE: p,
                        "kind": run.kind,
                        "steps": int(run.steps),
                        "steps_truncated": t,
                        "limit": calibration.limit,
                        "predicted_steps": prediction["predicted_steps"],
                        "predicted_latent": latent,
                        "budget": prediction["budget"],
                        "budget_rule": prediction["rule"],
                        "budget_fixed": calibration.fixed_budget,
                        "unlearned_budget": _unlearned(run.kind, t, prediction["budget"]),
                        "unlearned_fixed": _unlearned(run.kind, t, calibration.fixed_budget),
                        "abs_error": abs(prediction["predicted_steps"] - t),
                        "extrapolated": prediction["extrapolated"],
                        "fold_fitted": calibration.model is not None,
                        "fold_runs": calibration.n_runs,
                        "fold_groups": len(calibration.groups),
                        "fold_overlapping_dropped": len(dropped),
                        "fold_slope": calibration.model.slope if calibration.model else float("nan"),
                        "fold_sigma": calibration.model.sigma if calibration.model else float("nan"),
                    }
                )
    return pd.DataFrame(rows)


def _unlearned(kind: str, steps_truncated: float, budget: float) -> bool:
    return kind == NONE or (kind == MEASURED and steps_truncated <= budget)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rho with average ranks for ties; NaN when either side is constant or n < 3."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 3:
        return float("nan")
    ra, rb = rankdata(a) - (a.size + 1) / 2, rankdata(b) - (b.size + 1) / 2
    denominator = math.sqrt(float((ra**2).sum() * (rb**2).sum()))
    return float(ra @ rb / denominator) if denominator > 0 else float("nan")


def _policy_statistics(columns: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, float]:
    """rho over the rows whose fold was fitted, and both policies' totals, for the rows drawn."""
    latent, truth = columns["latent"][rows], columns["truth"][rows]
    fitted = np.isfinite(latent)
    return {
        "rho": spearman(latent[fitted], truth[fitted]),
        "steps_budget": float(columns["budget"][rows].sum()),
        "steps_fixed": float(columns["fixed"][rows].sum()),
        "not_unlearned_budget": float((~columns["unlearned_budget"][rows]).sum()),
        "not_unlearned_fixed": float((~columns["unlearned_fixed"][rows]).sum()),
    }


def validation_summary(
    validation: pd.DataFrame, *, coverage: float, n_boot: int = 1000, ci: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """One row per (overlap policy, method): rank correlation, error and both policies' totals.

    `rho`: Spearman of the held-out predicted latent steps with the measured steps truncated at the
    observation limit (inside at step 0 = 0, censored = the limit: the exact rank order up to ties
    among censored runs), over the `n_predicted` requests whose fold could be fitted (a fold
    without a fit has no predicted steps, only the fixed budget). `rho_low`/`rho_high`: percentile
    bootstrap over held-out groups (a group's runs are drawn together). `mae`, `bias`: error of the
    predicted median clipped to [0, limit] against the truncated measurement (exact for inside and
    censored runs, to within one evaluation interval for measured ones), over the same requests.
    Totals: steps spent (every request run for its whole budget, since no oracle tells when to
    stop) and requests left not unlearned, for the predicted budgets and the fixed budget;
    `steps_saved` (fixed minus predicted) and `extra_not_unlearned` (predicted minus fixed) with
    bootstrap intervals.
    `steps_needed_truncated`: what an oracle policy would spend at least (sum of truncated steps).
    """
    if n_boot < 1 or not 0 < ci < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < ci < 1, got {n_boot}, {ci}")
    tail = (1 - ci) / 2 * 100
    out = []
    for (overlap, method), part in validation.groupby(["overlap", "method"], sort=False):
        part = part.reset_index(drop=True)
        columns = {
            "latent": part["predicted_latent"].to_numpy(np.float64),
            "truth": part["steps_truncated"].to_numpy(np.float64),
            "budget": part["budget"].to_numpy(np.float64),
            "fixed": part["budget_fixed"].to_numpy(np.float64),
            "unlearned_budget": part["unlearned_budget"].to_numpy(bool),
            "unlearned_fixed": part["unlearned_fixed"].to_numpy(bool),
        }
        point = _policy_statistics(columns, np.arange(len(part)))
        key = (part["score"] + "/" + part["group"]).to_numpy()
        names = pd.unique(key)
        rows_of = [np.flatnonzero(key == name) for name in names]
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(n_boot):
            chosen = rng.integers(0, len(names), len(names))
            draws.append(_policy_statistics(columns, np.concatenate([rows_of[i] for i in chosen])))
        boot = pd.DataFrame(draws)
        saved = boot["steps_fixed"] - boot["steps_budget"]
        extra = boot["not_unlearned_budget"] - boot["not_unlearned_fixed"]

        def interval(values: pd.Series) -> tuple[float, float]:
            finite = values.dropna()
            if len(finite) < max(10, n_boot // 2):
                return float("nan"), float("nan")
            low, high = np.percentile(finite, [tail, 100 - tail])
            return float(low), float(high)

        rho_low, rho_high = interval(boot["rho"])
        saved_low, saved_high = interval(saved)
        extra_low, extra_high = interval(extra)
        n = len(part)
        error = (part["predicted_steps"] - part["steps_truncated"]).dropna()
        out.append(
            {
                "overlap": overlap,
                "method": method,
                "coverage": coverage,
                "n_requests": n,
                "n_groups": len(names),
                "n_inside_at_step0": int((part["kind"] == NONE).sum()),
                "n_censored": int((part["kind"] == CENSORED).sum()),
                "n_folds_fitted": int(part.drop_duplicates(["score", "group"])["fold_fitted"].sum()),
                "limit": int(part["limit"].iloc[0]),
                "n_predicted": int(np.isfinite(columns["latent"]).sum()),
                "rho": point["rho"],
                "rho_low": rho_low,
                "rho_high": rho_high,
                "mae": float(error.abs().mean()) if len(error) else float("nan"),
                "bias": float(error.mean()) if len(error) else float("nan"),
                "steps_budget": point["steps_budget"],
                "steps_fixed": point["steps_fixed"],
                "steps_needed_truncated": float(part["steps_truncated"].sum()),
                "steps_saved": point["steps_fixed"] - point["steps_budget"],
                "steps_saved_low": saved_low,
                "steps_saved_high": saved_high,
                "not_unlearned_budget": int(point["not_unlearned_budget"]),
                "not_unlearned_fixed": int(point["not_unlearned_fixed"]),
                "extra_not_unlearned": int(point["not_unlearned_budget"] - point["not_unlearned_fixed"]),
                "extra_not_unlearned_low": extra_low,
                "extra_not_unlearned_high": extra_high,
                "fraction_unlearned_budget": float(part["unlearned_budget"].mean()),
                "fraction_unlearned_fixed": float(part["unlearned_fixed"].mean()),
                "n_boot": n_boot,
                "ci": ci,
            }
        )
    return pd.DataFrame(out)


def write_budget_tables(
    config: dict[str, Any],
    steps_path: str | Path,
    groups_path: str | Path,
    calibration_out: str | Path,
    validation_out: str | Path,
    summary_out: str | Path,
    *,
    coverage: float = DEFAULT_COVERAGE,
) -> list[Path]:
    """The calibration file (every run, per method) and the held-out validation tables.

    Validation is computed twice, with overlapping groups excluded from each fold and kept; the
    bootstrap uses config keys proxies.bootstrap, proxies.ci and groups.seed.
    """
    steps, groups = io.load_table(steps_path), io.load_table(groups_path)
    validation = pd.concat(
        [leave_one_group_out(config, steps, groups, coverage=coverage, overlap=o) for o in OVERLAP_POLICIES],
        ignore_index=True,
    )
    spec = config["proxies"]
    summary = (
        validation_summary(
            validation,
            coverage=coverage,
            n_boot=spec["bootstrap"],
            ci=spec["ci"],
            seed=config["groups"]["seed"],
        )
        if not validation.empty
        else pd.DataFrame()
    )
    return [
        io.save_json(calibrations(config, steps, groups, coverage=coverage), calibration_out),
        io.save_table(validation, validation_out),
        io.save_table(summary, summary_out),
    ]


# --------------------------------------------------------------------------- forget requests

_LIST = re.compile(r"^[\s\d,]+$")


def parse_request(ids: str | Path | Sequence[int]) -> np.ndarray:
    """Example ids (dataset indices) of a forget request, in the order given, duplicates removed.

    `ids` is a sequence of integers, a comma list ("3,17,256"), or the path of a text file (ids
    separated by commas, spaces or newlines; lines starting with # are comments) or CSV file with a
    header row and an `index` (or `id`) column. Raises ValueError on an empty request or a token
    that is not a non-negative integer (naming it), FileNotFoundError on a missing file.
    """
    if isinstance(ids, (str, Path)):
        text = str(ids)
        if isinstance(ids, str) and _LIST.match(text):
            tokens = [t for t in re.split(r"[\s,]+", text) if t]
            source = "the id list"
        else:
            tokens, source = _read_id_file(Path(text)), str(text)
        values = []
        for token in tokens:
            if not re.fullmatch(r"\d+", token):
                raise ValueError(f"{source}: {token!r} is not an example id (a non-negative integer)")
            values.append(int(token))
    else:
        values = [int(v) for v in ids]
        source = "the id list"
        if any(v < 0 for v in values):
            raise ValueError(
                f"{source}: example ids must be non-negative, got {[v for v in values if v < 0][:5]}"
            )
    if not values:
        raise ValueError(f"empty forget request: {source} holds no example ids")
    return np.array(list(dict.fromkeys(values)), dtype=np.int64)


def _read_id_file(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"id file {path} does not exist (give a file or a comma list of ids)")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if lines and not _LIST.match(lines[0]):
        header = [h.strip() for h in lines[0].split(",")]
        column = next((h for h in ("index", "id") if h in header), None)
        if column is None:
            raise ValueError(f"{path}: a CSV request needs an 'index' or 'id' column, the header is {header}")
        at = header.index(column)
        return [ln.split(",")[at].strip() for ln in lines[1:]]
    return [t for ln in lines for t in re.split(r"[\s,]+", ln) if t]


def _differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        out = []
        for key in sorted(set(expected) | set(actual)):
            where = f"{path}.{key}" if path else str(key)
            if key not in expected or key not in actual:
                out.append(where)
            else:
                out += _differences(expected[key], actual[key], where)
        return out
    return [] if expected == actual else [path]


def request_budget(
    calibration: Calibration, scores: pd.DataFrame, ids: np.ndarray, *, coverage: float | None = None
) -> dict[str, Any]:
    """The budget of a request (`Calibration.budget`) from the mean P(x, 4 alpha) of its examples.

    Ids missing from the scores table raise ValueError naming them. Also returned: `n_examples`,
    `privacy_loss_4alpha` (the request's mean), and `size_differs` (the request is not of a size the
    calibration was measured on).
    """
    missing = [c for c in ("index", FEATURE) if c not in scores]
    if missing:
        raise ValueError(f"the scores table lacks columns {missing}")
    values = scores.set_index("index")[FEATURE]
    absent = [int(i) for i in ids if int(i) not in values.index]
    if absent:
        raise ValueError(f"example ids not in the scores table: {_named(absent)}")
    p = float(values.loc[ids].mean())
    return {
        **calibration.budget(p, coverage),
        "n_examples": len(ids),
        FEATURE: p,
        "size_differs": bool(calibration.group_sizes) and len(ids) not in calibration.group_sizes,
    }


def _named(ids: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def forget(
    config: dict[str, Any],
    run_dir: str | Path,
    scores_path: str | Path,
    calibration_path: str | Path,
    ids: str | Path | Sequence[int],
    out: str | Path,
    *,
    method: str = "finetune",
    seed: int | None = None,
    coverage: float | None = None,
    model_out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Unlearn a forget request: predict its budget, fine-tune the original model on the retain set for
    that many steps, report and save what happened.

    run_dir: a finished training run (the original model) of `config`'s experiment; scores_path: its
    scores table (P(x, 4 alpha) per example); calibration_path: the budget calibration of an
    experiment with the same data, model, training, accounting and `method` recipe (anything else is
    refused, naming the keys that differ); ids: see `parse_request`. The run uses
    unlearning.unlearn with the config's recipe for `method`, batches and noise seeded by `seed`
    (default unlearning.seed_offset), and stops after exactly the budget. Writes the report JSON to
    `out` (and the unlearned weights to `model_out` when given) and returns it: the request, its
    mean P, the budget and rule, the steps run, and loss / accuracy on the forget set, the full
    retain set and the test split before and after, with the evaluation curve.

    What the budget leaves out is in the module docstring; no oracle is trained, so nothing here
    checks that the request was in fact unlearned.
    """
    from .data import load_dataset
    from .groups import rows_of
    from .inference import load_model, resolve_device, rows_subset, split_metrics
    from .training import SUMMARY_FILE, run_seed, run_weights
    from .unlearning import UnlearningRecipe, unlearn

    request = parse_request(ids)
    calibration, applies = load_calibration(calibration_path, method)
    differing = _differences(applies, _json_safe(_applies_to(config, method)))
    if differing:
        raise ValueError(
            f"{calibration_path} was measured with other settings than the config: "
            f"{', '.join(differing[:8])} differ (a calibration only applies to its own data, model, "
            "training, accounting and recipe)"
        )
    run_dir = Path(run_dir)
    weights = run_weights(run_dir)
    if not weights.is_file():
        raise FileNotFoundError(
            f"training run {run_dir} has no weights file {weights.name} (not a finished run)"
        )
    original_seed = run_seed(run_dir)
    summary = io.load_json(run_dir / SUMMARY_FILE)
    trained = summary.get("model") if isinstance(summary.get("model"), dict) else {}
    if summary.get("dataset") != config["dataset"]["name"] or any(
        config["model"].get(k) != v for k, v in trained.items()
    ):
        raise ValueError(
            f"training run {run_dir} holds a {summary.get('dataset')} / {summary.get('model')} model, "
            f"not the config's {config['dataset']['name']} / {config['model']} (config keys dataset, model)"
        )
    scores = io.load_table(scores_path)
    dataset = load_dataset(**config["dataset"])
    train_index = dataset.train.index.numpy()
    known = set(train_index.tolist())
    absent = [int(i) for i in request if int(i) not in known]
    if absent:
        raise ValueError(
            f"example ids not in the training split of {config['dataset']['name']} "
            f"({len(train_index)} examples): {_named(absent)}"
        )
    prediction = request_budget(calibration, scores, request, coverage=coverage)
    rows = np.sort(rows_of(train_index, request))
    device = resolve_device(config["device"])
    model = load_model(config, dataset, weights, device)
    batch = config["training"]["eval_batch_size"]
    retain = rows_subset(dataset.train, np.setdiff1d(np.arange(len(train_index)), rows))
    splits = {"forget": rows_subset(dataset.train, rows), "retain": retain, "test": dataset.test}

    def metrics() -> dict[str, dict[str, float]]:
        out = {}
        for name, split in splits.items():
            m = split_metrics(model, split, batch, device)
            out[name] = {"loss": float(m["losses"].mean()), "accuracy": float(m["correct"].mean())}
        return out

    before = metrics()
    spec = config["unlearning"]
    recipe = replace(UnlearningRecipe.from_config(config, method), k_max=int(prediction["budget"]))
    run_seed_value = spec["seed_offset"] if seed is None else int(seed)
    result = unlearn(
        model,
        dataset,
        rows,
        recipe,
        seed=run_seed_value,
        device=device,
        eval_retain_size=spec["eval_retain_size"],
        eval_test_size=spec["eval_test_size"],
        eval_batch_size=batch,
        band=None,
        progress=progress,
    )
    model.eval()
    after = metrics()
    report = {
        "experiment": config["experiment"],
        "method": method,
        "run": str(run_dir),
        "original_seed": original_seed,
        "unlearning_seed": run_seed_value,
        "ids": [int(i) for i in request],
        "prediction": _json_safe(prediction),
        "predicted_budget": int(prediction["budget"]),
        "steps_run": int(result["steps_run"]),
        "before": before,
        "after": after,
        "curve": _json_safe(result["curve"].to_dict("records")),
        "calibration": str(calibration_path),
        "leaves_out": (
            "no oracle is trained: the budget is a prediction from the calibration, not a check that "
            "the request was unlearned"
        ),
    }
    if model_out is not None:
        io.save_torch(model.state_dict(), model_out)
        report["model"] = str(model_out)
    io.save_json(report, out)
    return report


def describe(report: Mapping[str, Any]) -> str:
    """A few lines for the terminal from a `forget` report."""
    p = report["prediction"]
    lines = [
        f"request: {len(report['ids'])} examples, mean P(x, 4 alpha) = {p[FEATURE]:.4g}",
        f"predicted budget: {report['predicted_budget']} steps ({p['rule']} rule, coverage {p['coverage']:g}"
        + (", capped at the largest measured budget" if p["capped"] else "")
        + (", P outside the calibrated range" if p["extrapolated"] else "")
        + ")",
        f"steps run: {report['steps_run']}",
    ]
    for name in ("forget", "retain", "test"):
        b, a = report["before"][name], report["after"][name]
        lines.append(
            f"{name:>6}: loss {b['loss']:.4f} -> {a['loss']:.4f}, "
            f"accuracy {b['accuracy']:.4f} -> {a['accuracy']:.4f}"
        )
    return "\n".join(lines)
