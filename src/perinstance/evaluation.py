"""Steps-to-unlearn criterion and attack metrics (pure numpy / pandas); the community's metrics
(ToW, the challenge's per-example epsilon) are in community_metrics.

The criterion is this project's choice (the paper does not pin one down): a forget group G counts as
unlearned at evaluation step k when the unlearned model's mean loss on G lies inside the band of R
oracles retrained without G, |mean_G loss(theta_k) - center| <= max(tol_abs, z * sd over oracles),
and stays there for `consecutive` evaluations, because first passage into the band is noisy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

SUMMARY_KEYS = ["score", "group", "method"]


def oracle_band(oracle_forget_losses: np.ndarray, *, tol_abs: float, z: float) -> tuple[float, float, float]:
    """(center, half_width, sd) of the oracles' mean forget loss.

    `oracle_forget_losses` is [R] (each oracle's mean loss on G) or [R, m] (per-example losses, averaged
    over G first). sd uses ddof=1 and is 0 for a single oracle, so the band is then tol_abs wide.
    """
    losses = np.asarray(oracle_forget_losses, dtype=np.float64)
    if losses.ndim == 2:
        losses = losses.mean(axis=1)
    if losses.ndim != 1 or losses.size == 0 or not np.all(np.isfinite(losses)):
        raise ValueError("oracle_forget_losses must be a non-empty finite [R] or [R, m] array")
    if tol_abs < 0 or z < 0:
        raise ValueError(f"tol_abs and z must be >= 0, got tol_abs={tol_abs}, z={z}")
    sd = float(losses.std(ddof=1)) if losses.size > 1 else 0.0
    return float(losses.mean()), max(float(tol_abs), z * sd), sd


def steps_to_unlearn(
    steps: np.ndarray,
    forget_loss: np.ndarray,
    band: tuple[float, ...],
    *,
    consecutive: int = 3,
    k_max: int | None = None,
) -> dict:
    """First evaluation step starting a run of `consecutive` evaluations inside the oracle band.

    `band` is (center, half_width, ...) as returned by `oracle_band`. Only evaluations at steps <= k_max
    (default: the last step) count, and the whole run must be observed there; otherwise the result is
    censored: `steps` = k_max, `censored` = True. A non-finite loss (diverged run) counts as outside.
    Also returned: `step0_gap` (loss at step 0 minus center), `inside_at_step0`, `final_gap` (at the
    last evaluation <= k_max), and the band itself.
    """
    steps = np.asarray(steps)
    loss = np.asarray(forget_loss, dtype=np.float64)
    if steps.ndim != 1 or steps.shape != loss.shape or steps.size == 0:
        raise ValueError("steps and forget_loss must be 1-d arrays of the same non-zero length")
    if steps[0] != 0 or np.any(np.diff(steps) <= 0):
        raise ValueError("evaluation steps must start at 0 and increase strictly")
    if consecutive < 1:
        raise ValueError(f"consecutive must be >= 1, got {consecutive}")
    k_max = int(steps[-1]) if k_max is None else int(k_max)
    if not 0 <= k_max <= steps[-1]:
        raise ValueError(f"k_max={k_max} lies outside the evaluated steps [0, {int(steps[-1])}]")
    center, half_width = float(band[0]), float(band[1])
    keep = steps <= k_max
    steps, loss = steps[keep], loss[keep]
    # NaN compares False, so a diverged evaluation is outside the band
    inside = np.abs(loss - center) <= half_width
    # run[i] = number of consecutive inside evaluations ending at i
    run = np.zeros(len(inside), dtype=np.int64)
    for i, hit in enumerate(inside):
        run[i] = (run[i - 1] + 1 if i else 1) if hit else 0
    done = np.flatnonzero(run >= consecutive)
    censored = done.size == 0
    k = k_max if censored else int(steps[done[0] - consecutive + 1])
    return {
        "steps": k,
        "censored": bool(censored),
        "step0_gap": float(loss[0] - center),
        "inside_at_step0": bool(inside[0]),
        "final_gap": float(loss[-1] - center),
        "center": center,
        "half_width": half_width,
    }


def summarise_steps(records: pd.DataFrame) -> pd.DataFrame:
    """Per (score, group, method) summary of one-row-per-seed results.

    Censored runs enter the mean and median at their k_max (their stored `steps`), so both are lower
    bounds whenever `n_censored` > 0; they are counted, never dropped. Optional columns `step0_gap`,
    `inside_at_step0` and `overshot` are carried as their mean and counts.
    """
    missing = {*SUMMARY_KEYS, "seed", "steps", "censored"} - set(records.columns)
    if missing:
        raise ValueError(f"records lack columns {sorted(missing)}")
    agg = {
        "steps_mean": ("steps", "mean"),
        "steps_median": ("steps", "median"),
        "steps_min": ("steps", "min"),
        "steps_max": ("steps", "max"),
        "n_censored": ("censored", "sum"),
        "n_seeds": ("seed", "nunique"),
        "n_runs": ("steps", "size"),
    }
    if "step0_gap" in records.columns:
        agg["step0_gap_mean"] = ("step0_gap", "mean")
    if "inside_at_step0" in records.columns:
        agg["n_inside_at_step0"] = ("inside_at_step0", "sum")
    if "overshot" in records.columns:
        agg["n_overshot"] = ("overshot", "sum")
    data = records.assign(censored=records["censored"].astype(bool))
    out = data.groupby(SUMMARY_KEYS, sort=True, dropna=False).agg(**agg).reset_index()
    out["n_censored"] = out["n_censored"].astype(np.int64)
    if "n_overshot" in out.columns:
        out["n_overshot"] = out["n_overshot"].astype(np.int64)
    out["lower_bound"] = out["n_censored"] > 0
    return out


def loss_threshold_mia_auc(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
    """AUC of the attack that calls "member" when the loss is low (1 perfect, 0.5 chance, ties count 1/2)."""
    members = np.asarray(member_losses, dtype=np.float64).ravel()
    nonmembers = np.asarray(nonmember_losses, dtype=np.float64).ravel()
    if members.size == 0 or nonmembers.size == 0:
        raise ValueError("both member and non-member losses are needed")
    if not (np.all(np.isfinite(members)) and np.all(np.isfinite(nonmembers))):
        raise ValueError("losses must be finite")
    # Mann-Whitney form of the ROC AUC: P(member loss < non-member loss) + P(equal) / 2. (Not
    # sklearn: importing sklearn.metrics costs every unlearning job ~1.7 s of start-up.)
    others = np.sort(nonmembers)
    not_above = np.searchsorted(others, members, side="right")
    tied = not_above - np.searchsorted(others, members, side="left")
    return float(((others.size - not_above).sum() + 0.5 * tied.sum()) / (members.size * others.size))


def mia_auc_gap(
    unlearned_forget_losses: np.ndarray,
    unlearned_test_losses: np.ndarray,
    oracle_forget_losses_list: Sequence[np.ndarray],
    oracle_test_losses_list: Sequence[np.ndarray],
) -> dict:
    """Loss-threshold MIA AUC (forget group vs held-out test points) of the unlearned model minus the
    oracles' mean AUC: `auc_unlearned`, `auc_oracle` (mean), `auc_oracle_sd` (ddof=1), `gap`."""
    if len(oracle_forget_losses_list) != len(oracle_test_losses_list) or not oracle_forget_losses_list:
        raise ValueError("need the same non-zero number of oracle forget and test loss arrays")
    unlearned = loss_threshold_mia_auc(unlearned_forget_losses, unlearned_test_losses)
    oracles = np.array(
        [loss_threshold_mia_auc(f, t) for f, t in zip(oracle_forget_losses_list, oracle_test_losses_list)]
    )
    mean = float(oracles.mean())
    return {
        "auc_unlearned": unlearned,
        "auc_oracle": mean,
        "auc_oracle_sd": float(oracles.std(ddof=1)) if oracles.size > 1 else 0.0,
        "gap": unlearned - mean,
    }


def forget_accuracy_gap(unlearned_accuracy: float, oracle_accuracies: Sequence[float]) -> float:
    """Forget-set accuracy of the unlearned model minus the oracles' mean (positive = still remembers)."""
    oracles = np.asarray(oracle_accuracies, dtype=np.float64)
    if oracles.size == 0:
        raise ValueError("need at least one oracle accuracy")
    return float(unlearned_accuracy) - float(oracles.mean())
