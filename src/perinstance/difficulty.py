"""Per-example unlearning difficulty: criterion, uncensored gap statistics, survival and correlations.

The project's protocol (SCIENCE.md, "Per-example unlearning difficulty"), pure numpy / pandas:

- Oracle reference of example x in forget group G: the R oracles retrained without G give losses
  l_r(x); centre c(x) = mean_r l_r(x), spread sd_r(x) (ddof = 1), half width
  h(x) = max(tol_abs, z * sd_r(x)).
- Per-example steps to unlearn: the first evaluation step that starts `consecutive` evaluations with
  |l_k(x) - c(x)| <= h(x). A run that ends (k_max, or an early stop) before that is censored at its
  last evaluated step; censored values are lower bounds and are kept, flagged.
- Uncensored difficulty, defined for every example that needed unlearning: the normalised gap
  g_k(x) = |l_k(x) - c(x)| / |l_0(x) - c(x)|; the remaining gap g_K at a fixed budget K (1 = no
  progress, 0 = closed; can exceed 1 when the loss moves away), and the mean normalised gap over
  [0, K] (area under the curve divided by K, trapezoidal). Examples already inside their band at step
  0 have no gap to close: they are flagged `inside_at_step0` and get no gap statistic (they are not
  "easy", they needed no unlearning).
- Survival: Kaplan-Meier estimate of the fraction of examples (or runs) not yet unlearned by step k.
- Claims as correlations: Spearman rho(difficulty, score) with a bootstrap that resamples unlearning
  seeds and examples, and the paired difference rho(P) - rho(proxy) on the same resamples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

VERDICTS = ("holds", "contradicted", "not resolved at this scale")
# below this many forget examples a bootstrap interval is not trusted to carry a verdict
MIN_UNITS_FOR_VERDICT = 20


def oracle_reference(oracle_losses: np.ndarray, *, tol_abs: float, z: float) -> dict[str, np.ndarray]:
    """Per-example centre, spread and band half width from the oracles' losses [R, m]."""
    losses = np.asarray(oracle_losses, dtype=np.float64)
    if losses.ndim != 2 or losses.shape[0] < 1 or losses.shape[1] < 1 or not np.all(np.isfinite(losses)):
        raise ValueError(f"oracle losses must be a finite [R, m] array, got shape {losses.shape}")
    sd = losses.std(axis=0, ddof=1) if losses.shape[0] > 1 else np.zeros(losses.shape[1])
    return {"center": losses.mean(axis=0), "sd": sd, "half_width": np.maximum(float(tol_abs), z * sd)}


def first_passage(
    steps: np.ndarray, losses: np.ndarray, center: np.ndarray, half_width: np.ndarray, *, consecutive: int
) -> dict[str, np.ndarray]:
    """Per-example steps to unlearn from losses [E, m] at evaluation `steps` [E] (starting at 0).

    Returns `steps` (first step of the first run of `consecutive` inside evaluations, else the last
    evaluated step), `censored` and `inside_at_step0`, each [m].
    """
    steps = np.asarray(steps)
    losses = np.asarray(losses, dtype=np.float64)
    if steps.ndim != 1 or losses.shape[0] != steps.size or steps[0] != 0 or np.any(np.diff(steps) <= 0):
        raise ValueError(
            "evaluation steps must be 1-d, start at 0, increase strictly and match the losses' rows"
        )
    if consecutive < 1:
        raise ValueError(f"consecutive must be >= 1, got {consecutive}")
    inside = np.abs(losses - center[None]) <= half_width[None]  # NaN (diverged) counts as outside
    run = np.zeros(inside.shape, dtype=np.int64)
    for e in range(inside.shape[0]):
        run[e] = np.where(inside[e], (run[e - 1] if e else 0) + 1, 0)
    reached = run >= consecutive
    done = reached.any(axis=0)
    first_done = reached.argmax(axis=0)
    start = np.where(done, steps[np.maximum(first_done - consecutive + 1, 0)], steps[-1])
    return {"steps": start.astype(np.int64), "censored": ~done, "inside_at_step0": inside[0].copy()}


def normalised_gap(losses: np.ndarray, center: np.ndarray) -> np.ndarray:
    """|l_k - c| / |l_0 - c| for losses [E, m]; NaN where the step-0 gap is zero."""
    gap = np.abs(np.asarray(losses, dtype=np.float64) - np.asarray(center, dtype=np.float64)[None])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap[0] > 0, gap / gap[0], np.nan)


def gap_statistics(
    steps: np.ndarray, losses: np.ndarray, center: np.ndarray, budgets: Sequence[int]
) -> dict[str, np.ndarray]:
    """Remaining normalised gap at each budget and its mean over [0, max(budgets)], each [m].

    Every budget must be an evaluated step: runs are evaluated every `eval_every` steps and never stop
    before the largest budget, so each run has these numbers whether or not it was censored.
    """
    steps = np.asarray(steps)
    gap = normalised_gap(losses, center)
    out: dict[str, np.ndarray] = {}
    for budget in budgets:
        at = np.flatnonzero(steps == budget)
        if at.size == 0:
            raise ValueError(
                f"no evaluation at step {budget} (evaluated up to {int(steps[-1])}; budgets must be "
                "multiples of unlearning.eval_every and runs must reach them)"
            )
        out[f"remaining_gap_{budget}"] = gap[at[0]]
    horizon = max(budgets)
    keep = steps <= horizon
    g, k = gap[keep], steps[keep].astype(np.float64)
    out[f"mean_gap_{horizon}"] = ((g[1:] + g[:-1]) / 2 * np.diff(k)[:, None]).sum(axis=0) / horizon
    return out


def kaplan_meier(times: np.ndarray, censored: np.ndarray) -> pd.DataFrame:
    """Kaplan-Meier survival S(k) = P(not yet unlearned after step k) with Greenwood's standard error.

    An event at k (first passage) and a censoring at k are ordered event first, as usual. Returns a
    first row (k = 0, S = 1, before anything happens), then one row per distinct time: `step`,
    `survival` (right after that time), `se`, `at_risk`, `events`, `censored`.
    """
    times = np.asarray(times, dtype=np.float64)
    censored = np.asarray(censored, dtype=bool)
    if times.shape != censored.shape or times.ndim != 1 or times.size == 0:
        raise ValueError("times and censored must be 1-d arrays of the same non-zero length")
    rows = [{"step": 0.0, "survival": 1.0, "se": 0.0, "at_risk": times.size, "events": 0, "censored": 0}]
    survival, greenwood = 1.0, 0.0
    for t in np.unique(times):
        at_risk = int((times >= t).sum())
        events = int(((times == t) & ~censored).sum())
        if events:
            survival *= 1.0 - events / at_risk
            if at_risk > events:
                greenwood += events / (at_risk * (at_risk - events))
        rows.append(
            {
                "step": float(t),
                "survival": survival,
                "se": survival * np.sqrt(greenwood) if survival > 0 else 0.0,
                "at_risk": at_risk,
                "events": events,
                "censored": int(((times == t) & censored).sum()),
            }
        )
    return pd.DataFrame(rows)


def _spearman_columns(difficulty: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Spearman rho of `difficulty` [n] with every column of `scores` [n, s] (average ranks for ties)."""
    d = rankdata(difficulty)
    d = d - d.mean()
    ranked = np.apply_along_axis(rankdata, 0, scores)
    ranked = ranked - ranked.mean(axis=0)
    denominator = np.sqrt((d**2).sum() * (ranked**2).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, d @ ranked / denominator, np.nan)


def verdict(low: float, high: float) -> str:
    """holds: the CI lies above 0; contradicted: below 0; else not resolved at this scale."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return VERDICTS[2]
    return VERDICTS[0] if low > 0 else VERDICTS[1] if high < 0 else VERDICTS[2]


def difficulty_correlations(
    table: pd.DataFrame,
    difficulty: str,
    scores: Sequence[str],
    *,
    reference: str,
    unit: Sequence[str] = ("score", "group", "index"),
    seed_column: str = "seed",
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Spearman rho(difficulty, score) for every score, and the paired rho(reference) - rho(score).

    `table` has one row per (unit, unlearning seed). Each bootstrap replicate draws the unlearning
    seeds with replacement, then the units (forget examples) with replacement, and computes every rho
    on the same rows, so the differences are paired. Rows with a missing difficulty or score are
    dropped first (the count is reported). Returns one row per score: `rho`, its CI, `n_units`,
    `n_seeds`, and for scores other than the reference `rho_minus_reference` (reference - score) with
    its CI and `verdict` ("holds" when the reference correlates better). With fewer than
    MIN_UNITS_FOR_VERDICT examples every verdict is "not resolved at this scale".
    """
    if n_boot < 1 or not 0 < ci < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < ci < 1, got {n_boot}, {ci}")
    columns = [reference, *[s for s in scores if s != reference]]
    missing = [c for c in [difficulty, seed_column, *unit, *columns] if c not in table]
    if missing:
        raise ValueError(f"the per-example table lacks columns {missing}")
    data = table.dropna(subset=[difficulty, *columns])
    dropped = len(table) - len(data)
    unit_id = data.groupby(list(unit), sort=False).ngroup().to_numpy()
    n_units = int(unit_id.max()) + 1 if len(unit_id) else 0
    seeds = np.sort(data[seed_column].unique())
    seed_id = np.searchsorted(seeds, data[seed_column].to_numpy())
    values = data[columns].to_numpy(np.float64)
    d = data[difficulty].to_numpy(np.float64)
    point = _spearman_columns(d, values)
    # rows of each (unit, seed) cell, to assemble a replicate as counts per cell
    cell = unit_id * len(seeds) + seed_id
    rng = np.random.default_rng(seed)
    draws = np.empty((n_boot, len(columns)))
    for b in range(n_boot):
        seed_count = np.bincount(rng.integers(0, len(seeds), len(seeds)), minlength=len(seeds))
        unit_count = np.bincount(rng.integers(0, n_units, n_units), minlength=n_units)
        weight = (unit_count[:, None] * seed_count[None, :]).reshape(-1)[cell]
        rows = np.repeat(np.arange(len(d)), weight)
        draws[b] = _spearman_columns(d[rows], values[rows]) if rows.size > 2 else np.nan
    tail = (1 - ci) / 2 * 100
    low, high = np.nanpercentile(draws, [tail, 100 - tail], axis=0)
    out = []
    for j, name in enumerate(columns):
        enough = n_units >= MIN_UNITS_FOR_VERDICT
        row = {
            "difficulty": difficulty,
            "score": name,
            "rho": point[j],
            "rho_low": low[j],
            "rho_high": high[j],
            "rho_verdict": verdict(low[j], high[j]) if enough else VERDICTS[2],
            "n_units": n_units,
            "n_seeds": len(seeds),
            "n_rows": len(d),
            "n_dropped": dropped,
            "n_boot": n_boot,
            "ci": ci,
            "reference": reference,
        }
        if j:
            diff = draws[:, 0] - draws[:, j]
            d_low, d_high = np.nanpercentile(diff, [tail, 100 - tail])
            row.update(
                rho_minus_reference=point[0] - point[j],
                difference_low=d_low,
                difference_high=d_high,
                verdict=verdict(d_low, d_high) if enough else VERDICTS[2],
            )
        out.append(row)
    return pd.DataFrame(out)
