"""Predicted unlearning steps from per-instance privacy losses, and the fitted log trend reported beside them.

Langevin unlearning contracts the Renyi divergence to the oracle at rate exp(-k eta sigma^2 / (alpha' C_LSI));
with the weak triangle inequality the steps needed to forget x are

    k_hat(x) = (alpha' C_LSI / (eta sigma^2)) * log((c P(x, 4 alpha) + gamma) / (epsilon - epsilon_irr)),

where gamma and epsilon_irr come from the distance to stationarity. C_LSI is unknowable for deep nets, so
the figures show `fit_log_trend`: k ~ scale * log P + offset with one scale and offset fitted across groups.
That is a fitted trend, not the bound.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def predicted_unlearning_steps(
    privacy_loss_4alpha: np.ndarray,
    *,
    alpha_prime: float,
    c_lsi: float,
    eta: float,
    sigma2: float,
    c: float,
    gamma: float,
    epsilon: float,
    epsilon_irr: float,
) -> np.ndarray:
    """k_hat for each privacy loss P(x, 4 alpha), 0 where the log's argument is <= 1 (already forgotten).

    Raises ValueError unless epsilon > epsilon_irr, alpha_prime, c_lsi, eta, sigma2, c > 0, gamma >= 0
    and every P is finite and >= 0.
    """
    if not epsilon > epsilon_irr:
        raise ValueError(f"target epsilon={epsilon} must exceed the irreducible epsilon_irr={epsilon_irr}")
    positive = {"alpha_prime": alpha_prime, "c_lsi": c_lsi, "eta": eta, "sigma2": sigma2, "c": c}
    bad = [name for name, value in positive.items() if not value > 0]
    if bad or not gamma >= 0:
        raise ValueError(f"constants must be positive (gamma >= 0): {bad or ['gamma']}")
    p = np.asarray(privacy_loss_4alpha, dtype=np.float64)
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("privacy losses must be finite and >= 0")
    ratio = (c * p + gamma) / (epsilon - epsilon_irr)
    log_ratio = np.log(np.maximum(ratio, 1.0))  # ratio <= 1: the target is met before any step
    return alpha_prime * c_lsi / (eta * sigma2) * log_ratio


def log_trend(privacy_loss: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """The FITTED trend scale * log P + offset (see `fit_log_trend`); not the theoretical bound."""
    return scale * np.log(np.asarray(privacy_loss, dtype=np.float64)) + offset


def fit_log_trend(privacy_loss: np.ndarray, steps: np.ndarray) -> dict[str, float | int | Callable]:
    """Least-squares FIT of steps ~ scale * log P + offset, one scale and offset across all groups.

    This is a fitted trend standing in for k_hat, whose constants (C_LSI above all) are unknown; it
    shows whether measured steps grow like log P, it does not bound them. Censored steps should be
    passed as their k_max and flagged by the caller. Returns `scale`, `offset`, `r2` (NaN when the
    steps are all equal), `n` and `predict` (P -> fitted steps).
    """
    p = np.asarray(privacy_loss, dtype=np.float64).ravel()
    k = np.asarray(steps, dtype=np.float64).ravel()
    if p.shape != k.shape or p.size < 2:
        raise ValueError("need at least two (privacy loss, steps) pairs of equal length")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(k))) or np.any(p <= 0):
        raise ValueError("privacy losses must be finite and > 0, steps finite")
    x = np.log(p)
    if np.ptp(x) == 0:
        raise ValueError("all privacy losses are equal: the scale is not identifiable")
    design = np.column_stack([x, np.ones_like(x)])
    (scale, offset), *_ = np.linalg.lstsq(design, k, rcond=None)
    residual = float(np.sum((k - design @ np.array([scale, offset])) ** 2))
    total = float(np.sum((k - k.mean()) ** 2))
    scale, offset = float(scale), float(offset)
    return {
        "scale": scale,
        "offset": offset,
        "r2": 1.0 - residual / total if total > 0 else float("nan"),
        "n": int(p.size),
        "predict": lambda q: log_trend(q, scale, offset),
    }


def fit_log_trend_censored(
    privacy_loss: np.ndarray, steps: np.ndarray, censored: np.ndarray
) -> dict[str, float | int | Callable]:
    """Maximum-likelihood FIT of steps ~ scale * log P + offset + N(0, sigma^2) with right censoring (Tobit).

    A censored step count is a lower bound (the run, or example, was not unlearned by then): it enters
    the likelihood as P(steps >= value) instead of as a measured value, so censoring at K_max does not
    pull the trend down the way plugging in K_max would. Needs at least two uncensored points with
    different P. Returns `scale`, `offset`, `sigma`, `n`, `n_censored`, `converged`, `predict`.
    """
    from scipy.optimize import minimize
    from scipy.special import log_ndtr

    half_log_2pi = 0.5 * np.log(2 * np.pi)

    p = np.asarray(privacy_loss, dtype=np.float64).ravel()
    k = np.asarray(steps, dtype=np.float64).ravel()
    c = np.asarray(censored, dtype=bool).ravel()
    if not p.shape == k.shape == c.shape:
        raise ValueError("privacy losses, steps and censored flags must have the same length")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(k))) or np.any(p <= 0):
        raise ValueError("privacy losses must be finite and > 0, steps finite")
    x = np.log(p)
    if (~c).sum() < 2 or np.ptp(x[~c]) == 0:
        raise ValueError("need at least two uncensored points with different privacy losses")
    design = np.column_stack([x, np.ones_like(x)])
    start, *_ = np.linalg.lstsq(design[~c], k[~c], rcond=None)
    spread = np.std(k[~c] - design[~c] @ start) or np.std(k) or 1.0

    def negative_log_likelihood(theta: np.ndarray) -> tuple[float, np.ndarray]:
        mu = design @ theta[:2]
        sigma = np.exp(theta[2])
        r = (k[~c] - mu[~c]) / sigma  # measured runs: normal density
        z = (k[c] - mu[c]) / sigma  # censored runs: P(steps >= value)
        log_sf = log_ndtr(-z)
        mills = np.exp(-0.5 * z**2 - half_log_2pi - log_sf)  # d(-log sf)/dz, stable far in the tail
        value = -((-0.5 * r**2 - half_log_2pi).sum() - r.size * theta[2] + log_sf.sum())
        grad_mu = np.concatenate([r / sigma, mills / sigma])
        grad = -np.array([(grad_mu * x_order).sum(), grad_mu.sum(), (r**2 - 1).sum() + (mills * z).sum()])
        return float(value), grad

    x_order = np.concatenate([x[~c], x[c]])
    # sigma is kept off 0: a sample that fits a line exactly (a bootstrap replicate of two points) has no
    # finite maximum, and a floor of 1e-3 steps changes no fitted scale or offset
    span = float(np.ptp(k)) + 1.0
    bounds = [(None, None), (None, None), (np.log(1e-3), np.log(100 * span))]
    start_log_sigma = float(np.clip(np.log(spread + 1e-9), *bounds[2]))
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        result = minimize(
            negative_log_likelihood,
            np.array([*start, start_log_sigma]),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
        )
    scale, offset, log_sigma = (float(v) for v in result.x)
    return {
        "scale": scale,
        "offset": offset,
        "sigma": float(np.exp(log_sigma)),
        "n": int(p.size),
        "n_censored": int(c.sum()),
        "converged": bool(result.success),
        "predict": lambda q: log_trend(q, scale, offset),
    }
