"""Two metrics the machine-unlearning community reports, as pure numpy functions.

* ToW, "tug of war" (Zhao et al., "What makes unlearning hard and what to do about it", NeurIPS 2024;
  code kairanzhao/RUM): the product over forget / retain / test of one minus the absolute accuracy
  gap between the unlearned model and the retrained reference. 1 means "indistinguishable from
  retraining by accuracy", 0 means a full gap on some split. See `tug_of_war`.

* The NeurIPS 2023 Machine Unlearning Challenge score (Triantafillou et al., "Are we making progress
  in unlearning? Findings from the first NeurIPS unlearning competition", arXiv:2406.09073; reference
  code google-deepmind/unlearning_evaluation, metric.py and main.py): a per-example epsilon from
  hypothesis tests that tell unlearned from retrained models apart by the logit-scaled confidence
  phi = log(p_y / (1 - p_y)) of the example (`challenge_epsilons`), points per epsilon bucket averaged
  over the forget set (`challenge_forget_score`), and a utility adjustment by retain and test accuracy
  ratios (`challenge_score`).

This is an independent implementation written from the published definitions; the reference code was
read to pin down constants and edge cases, and each module constant says where it comes from.
The module imports numpy only (no torch / scipy / sklearn), so short workflow jobs can import it cheaply.
src/perinstance/evaluation.py has a simplified single-threshold `per_example_epsilon`; this module is
the challenge's own estimator (both rule families, its threshold grids, its zero-rate and peakiness
rules, its cap and its buckets).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

# --------------------------------------------------------------------------------------------------
# Constants. "metric.py" / "main.py" are the files of google-deepmind/unlearning_evaluation.

TOW_KEYS: tuple[str, ...] = ("forget", "retain", "test")
"""The three accuracies ToW multiplies (RUM's analysis script: forget, retain and test splits)."""

CHALLENGE_DELTA = 1e-5
"""delta of the (epsilon, delta) tests: metric.py's module-level DELTA."""

CHALLENGE_EPSILON_CAP = 50.0
"""Largest per-example epsilon: metric.py's EPSILON_CAP. Perfect separation (infinite epsilon) and
the 'peaky distribution' shortcut both give this value, and every epsilon is clipped to [0, cap]."""

CHALLENGE_THRESHOLDS_PER_UNIT = 100
"""Threshold grid density per unit of phi: metric.py's NUM_THRESHOLDS_PER_UNIT."""

CHALLENGE_DOUBLE_THRESHOLD_BUFFER = 2.0
"""Half-width (in phi units) of the windows the double-threshold grid scans around the peakier
sample's extremes: the `buffer` local to metric.py's double-threshold rate function."""

CHALLENGE_LEFT_THRESHOLDS = int(
    math.ceil(2 * CHALLENGE_DOUBLE_THRESHOLD_BUFFER * CHALLENGE_THRESHOLDS_PER_UNIT)
)
"""Left thresholds per right threshold in the double-threshold grid (= 400), as metric.py counts them."""

CHALLENGE_PEAKY_RATIO = 0.01
"""When the smaller of the two samples' ranges (max - min of phi over models) is below this fraction
of the larger one, metric.py skips the tests and assigns the epsilon cap to the example."""

CHALLENGE_BUCKET_WIDTH = 0.5
"""Width of the epsilon buckets of the forget score: metric.py's `bucket_size`."""

CHALLENGE_FIRST_BUCKET_POINTS = 1.0
"""Points of the first bucket [0, 0.5); each further bucket is worth half the previous one (metric.py),
i.e. `1 / 2**k` for bucket k counted from 0, or equivalently `2 / 2**n` counted from n = 1."""

CHALLENGE_NUM_MODELS = 512
"""Models per side in the challenge (main.py's default `num_models`): 512 unlearned, 512 retrained."""

_EXACT_CHUNK = 1024  # examples per batch in the vectorised "exact" mode

RuleFamily = Literal["single", "double"]
ThresholdMode = Literal["grid", "exact"]


# --------------------------------------------------------------------------------------------------
# ToW


def tug_of_war_array(
    unlearned: Mapping[str, np.ndarray | float], retrained: Mapping[str, np.ndarray | float]
) -> np.ndarray:
    """Vectorised ToW: `tug_of_war` over arrays that broadcast against each other.

    `unlearned` and `retrained` map "forget", "retain" and "test" to accuracies in [0, 1], each a
    scalar or an array; all six broadcast to one shape, which the result has. Use it for one ToW per
    unlearning run (e.g. [S] arrays over seeds against scalar retrained means) or for RUM's
    seed-paired convention ([S] against [S]). Raises ValueError on missing or unexpected keys and on
    accuracies that are not finite numbers in [0, 1] (percentages must be divided by 100 first).
    """
    u = _tow_values(unlearned, "unlearned")
    r = _tow_values(retrained, "retrained")
    try:
        arrays = np.broadcast_arrays(*(u[k] for k in TOW_KEYS), *(r[k] for k in TOW_KEYS))
    except ValueError as err:
        raise ValueError(f"ToW accuracies do not broadcast to one shape: {err}") from None
    gaps = [np.abs(arrays[i] - arrays[i + 3]) for i in range(3)]
    return (1.0 - gaps[0]) * (1.0 - gaps[1]) * (1.0 - gaps[2])


def tug_of_war(unlearned: Mapping[str, float], retrained: Mapping[str, float]) -> float:
    """ToW = (1 - |FA_u - FA_r|) (1 - |RA_u - RA_r|) (1 - |TA_u - TA_r|), a number in [0, 1].

    FA, RA, TA are the accuracies on the forget, retain and test sets, as fractions in [0, 1] (RUM
    stores percentages and divides the gaps by 100; here the caller converts). `unlearned` holds the
    unlearned model's accuracies and `retrained` the reference: in this project the mean accuracy over
    the retrained (oracle) models, playing the role of RUM's retrained-from-scratch reference. RUM's
    own script pairs each unlearning run with the retrained run of the same seed, computes ToW per
    pair and reports the mean over seeds with a t-interval; with a mean reference the gaps ignore the
    retrained models' spread, so ToW = 1 needs an exact match of the means. Use `tug_of_war_array`
    for per-seed values.

    Both mappings need exactly the keys "forget", "retain" and "test"; a missing or extra key, or a
    value outside [0, 1] or not finite, raises ValueError.
    """
    tow = tug_of_war_array(unlearned, retrained)
    if tow.ndim != 0:
        raise ValueError(f"tug_of_war takes scalar accuracies, got shape {tow.shape}: use tug_of_war_array")
    return float(tow)


def _tow_values(acc: Mapping[str, np.ndarray | float], name: str) -> dict[str, np.ndarray]:
    if not isinstance(acc, Mapping):
        raise ValueError(f"{name} accuracies must be a mapping with keys {list(TOW_KEYS)}, got {type(acc)}")
    missing = [k for k in TOW_KEYS if k not in acc]
    extra = sorted(str(k) for k in acc if k not in TOW_KEYS)
    if missing or extra:
        raise ValueError(
            f"{name} accuracies need exactly the keys {list(TOW_KEYS)}; missing {missing}, unexpected {extra}"
        )
    out = {}
    for key in TOW_KEYS:
        try:
            value = np.asarray(acc[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} accuracy {key!r} is not numeric: {acc[key]!r}") from None
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} accuracy {key!r} must be finite, got {acc[key]!r}")
        if np.any(value < 0) or np.any(value > 1):
            hint = " (percentages? divide by 100)" if np.all(value <= 100) else ""
            raise ValueError(f"{name} accuracy {key!r} must lie in [0, 1]{hint}, got {acc[key]!r}")
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------------
# NeurIPS 2023 challenge: per-example epsilon


def challenge_epsilons(
    unlearned_phi: np.ndarray,
    retrained_phi: np.ndarray,
    *,
    delta: float = CHALLENGE_DELTA,
    cap: float = CHALLENGE_EPSILON_CAP,
    thresholds: ThresholdMode = "grid",
    families: Sequence[RuleFamily] = ("single", "double"),
) -> np.ndarray:
    """The challenge's per-example epsilon of N unlearned models [N, m] against R retrained ones [R, m].

    Inputs are the logit-scaled confidences phi = log(p_y / (1 - p_y)) of each of m forget examples
    under each model (rows = models), e.g. the `forget_phi` arrays from inference.logit_confidence.
    (metric.py's own confidence adds 1e-45 inside both logs, which bounds phi to about +-103.6 and
    ties saturated models; this only differs for p_y within ~1e-45 of 0 or 1.) Returns m epsilons
    in [0, cap]. For each example:

    1. Peakiness shortcut. If the smaller of the two samples' ranges (max - min over models) is below
       CHALLENGE_PEAKY_RATIO times the larger, the example gets `cap` directly (one side is nearly
       constant, which the tests may be too coarse to detect). Two constant samples (0/0) are not
       caught here and go through the tests.
    2. Orientation. The "positive" side is the sample with the larger median (the unlearned one on a
       tie). Single-threshold rules predict "positive" when phi >= t. Double-threshold rules predict
       the peakier side (the smaller range; on equal ranges the side that is not "positive") when
       t1 <= phi <= t2. Each rule is scored with this one labelling, as in metric.py; the
       label-swapped rule (rates 1 - FPR, 1 - FNR) is not scored.
    3. Rates. FPR is the fraction of the side not predicted that falls in the predicted region, FNR
       the fraction of the predicted side outside it.
    4. Per rule: FPR = FNR = 0 (perfect separation) gives epsilon = inf; exactly one zero rate drops
       the rule (too few samples to tell); otherwise epsilon = max(log(1 - delta - FPR) - log(FNR),
       log(1 - delta - FNR) - log(FPR)) clipped below at 0: the smallest epsilon for which the
       observed rates satisfy both (epsilon, delta) inequalities FPR + e^eps FNR >= 1 - delta and
       FNR + e^eps FPR >= 1 - delta, so the rule refutes every smaller epsilon (a rule whose two
       logs are both undefined is dropped).
    5. The example's epsilon is the largest over the surviving rules, clipped to [0, cap]. When no
       rule survives (e.g. all 2 (N + R) values equal) metric.py stops with an assertion; here the
       epsilon is 0 (no evidence of a difference).

    `thresholds` picks the rules:

    * "grid" (default, the challenge's rules): single thresholds on an evenly spaced grid of
      ceil(100 * (max - min)) points from the pooled minimum to the pooled maximum (rounded to
      float32, because metric.py's torch.linspace returns the default float32 dtype), and double
      thresholds on metric.py's grid: ceil(100 * 4) = 400 right thresholds (401 when rounding
      makes the span exceed 4) from max_P - 2 to max_P + 2 (P the peakier side, w its range) and,
      for each right threshold r, 400 left thresholds from r - w - 2 to r - w + 2: about 160,000
      intervals whose widths lie within 2 of w and whose endpoints lie within 2 (right) or 4 (left)
      phi units of P's extremes, at a resolution of 0.01.
    * "exact": every threshold and every closed interval on the real line (the supremum over the
      unrestricted families, computed exactly on the pooled values). It is always >= "grid" (a
      superset of rules) and does not depend on the grid's resolution or windows; it is not what
      the challenge computed.

    `families` restricts the maximum to single- or double-threshold rules (diagnostics; the challenge
    uses both). The peakiness shortcut applies either way.

    What this leaves out or approximates: metric.py requires N == R (np.where over the two arrays);
    here N != R works, each side's rates are over its own count. metric.py computes rates and logs in
    float32 on a GPU; this computes in float64, so values agree to ~1e-6. The single-threshold grid
    is float64 numpy linspace rounded to float32: its end points equal torch's exactly, interior
    points can differ from torch's float32 arithmetic by ~1e-7 times the largest |phi|, which only
    changes a rule when a phi value lies that close to a grid point. The challenge used 512 models
    per side; with few models the rates move in steps of 1/N and 1/R, perfect separation is common
    (giving the cap), and the maximum over hundreds of thousands of rules is a coarse, upward-biased
    plug-in estimate, not a confidence bound: two samples from the same distribution routinely get
    epsilon > 0. Compare values with the same estimator on two disjoint halves of the retrained
    models, and forget scores only at equal model counts.

    Cost (one core): "grid" loops over examples in Python at ~5-15 ms each, whatever N and R (the
    ~160,000 intervals dominate); "exact" is vectorised over examples and evaluates n(n + 1) / 2
    interval windows per example, n the size of the non-peaky side: ~1 ms per example at
    N = R = 200, ~6 ms at N = R = 512.

    Raises ValueError unless both inputs are finite 2-D arrays with the same number of columns
    m >= 1 and at least 2 rows each, 0 <= delta < 1, cap > 0, and `thresholds` / `families` are
    valid.
    """
    u, r = _validate_phi(unlearned_phi, retrained_phi)
    if not 0 <= delta < 1:
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    if not cap > 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    if thresholds not in ("grid", "exact"):
        raise ValueError(f"thresholds must be 'grid' or 'exact', got {thresholds!r}")
    fams = tuple(families)
    if not fams or any(f not in ("single", "double") for f in fams):
        raise ValueError(f"families must be a non-empty subset of ('single', 'double'), got {families!r}")

    m = u.shape[1]
    # orientation (step 2): positive = larger median; the unlearned side wins ties
    retrained_pos = np.median(r, axis=0) > np.median(u, axis=0)
    range_u = u.max(axis=0) - u.min(axis=0)
    range_r = r.max(axis=0) - r.min(axis=0)
    # peakiness shortcut (step 1): smallest / largest < 0.01; 0/0 is NaN and compares False
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.minimum(range_u, range_r) / np.maximum(range_u, range_r)
    peaky = ratio < CHALLENGE_PEAKY_RATIO
    # the double rules' inside side: the larger-median side if its range is strictly smaller, else the
    # other one; so the peakier side is the retrained one iff exactly one of these holds
    range_pos = np.where(retrained_pos, range_r, range_u)
    range_neg = np.where(retrained_pos, range_u, range_r)
    inside_retrained = retrained_pos ^ (range_pos >= range_neg)

    tables = {}

    def table(n_neg: int, n_pos: int) -> np.ndarray:
        if (n_neg, n_pos) not in tables:
            tables[n_neg, n_pos] = _rule_table(n_neg, n_pos, delta)
        return tables[n_neg, n_pos]

    best = np.full(m, -np.inf)
    for family, flag in (("single", retrained_pos), ("double", inside_retrained)):
        if family not in fams:
            continue
        # groups of examples sharing the orientation, so that every array in a group is rectangular
        for pos_is_retrained in (True, False):
            cols = np.flatnonzero((flag == pos_is_retrained) & ~peaky)
            if cols.size == 0:
                continue
            pos = (r if pos_is_retrained else u)[:, cols]
            neg = (u if pos_is_retrained else r)[:, cols]
            tab = table(neg.shape[0], pos.shape[0])
            if thresholds == "exact":
                scorer = _single_exact if family == "single" else _double_exact
                # chunks of examples bound the [chunk, N + R] work arrays
                values = np.concatenate(
                    [
                        scorer(pos[:, i : i + _EXACT_CHUNK], neg[:, i : i + _EXACT_CHUNK], tab)
                        for i in range(0, cols.size, _EXACT_CHUNK)
                    ]
                )
            else:
                scorer = _single_grid if family == "single" else _double_grid
                values = np.array([scorer(pos[:, i], neg[:, i], tab) for i in range(cols.size)])
            best[cols] = np.maximum(best[cols], values)

    eps = np.where(np.isneginf(best), 0.0, best)  # no surviving rule: 0 (metric.py asserts instead)
    eps = np.clip(eps, 0.0, cap)
    eps[peaky] = cap
    return eps


def _validate_phi(unlearned_phi: np.ndarray, retrained_phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(unlearned_phi, dtype=np.float64)
    r = np.asarray(retrained_phi, dtype=np.float64)
    if u.ndim != 2 or r.ndim != 2:
        raise ValueError(
            f"expected 2-D arrays [N, m] and [R, m] (models x examples), got {u.shape} and {r.shape}"
        )
    if u.shape[1] != r.shape[1]:
        raise ValueError(f"unlearned and retrained phi cover different examples: {u.shape} vs {r.shape}")
    if u.shape[1] == 0:
        raise ValueError("phi arrays have no examples (m = 0)")
    if u.shape[0] < 2 or r.shape[0] < 2:
        raise ValueError(
            f"the challenge epsilon needs at least 2 unlearned and 2 retrained models, got N={u.shape[0]}, "
            f"R={r.shape[0]} (the challenge used {CHALLENGE_NUM_MODELS} per side)"
        )
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(r))):
        raise ValueError("phi values must be finite (no NaN or inf)")
    return u, r


def _rule_table(n_neg: int, n_pos: int, delta: float) -> np.ndarray:
    """Epsilon of a rule with fp of n_neg false positives and fn of n_pos false negatives: [n_neg+1, n_pos+1].

    +inf for fp = fn = 0 (perfect separation), -inf for a dropped rule (exactly one zero rate, or both
    log bounds undefined), otherwise the larger log bound clipped below at 0. Every rule of a family
    is scored by looking its two counts up here, so the logs are evaluated once per (fp, fn) pair.
    """
    fpr = (np.arange(n_neg + 1) / n_neg)[:, None]
    fnr = (np.arange(n_pos + 1) / n_pos)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        b1 = np.log(1.0 - delta - fpr) - np.log(fnr)
        b2 = np.log(1.0 - delta - fnr) - np.log(fpr)
    bound = np.fmax(b1, b2)  # NaN only where both are NaN
    tab = np.where(np.isnan(bound), -np.inf, np.maximum(bound, 0.0))
    tab[0, :] = -np.inf
    tab[:, 0] = -np.inf
    tab[0, 0] = np.inf
    return tab


def _single_exact(pos: np.ndarray, neg: np.ndarray, tab: np.ndarray) -> np.ndarray:
    """Best single-threshold rule (phi >= t predicts `pos`) over all real t; pos [n_p, g], neg [n_n, g].

    The counts (#neg >= t, #pos < t) only change at pooled values, so t ranges over the n_p + n_n
    pooled values of each example (t above all of them gives FPR = 0, FNR = 1: a dropped rule). For a
    threshold equal to the i-th sorted pooled value, "#pos < t" is the number of positives before the
    first element of its tie group.
    """
    n_p, n_n = pos.shape[0], neg.shape[0]
    n = n_p + n_n
    vals = np.concatenate([pos, neg], axis=0).T  # [g, n]
    order = np.argsort(vals, axis=1, kind="stable")
    z = np.take_along_axis(vals, order, axis=1)
    is_pos = order < n_p
    pos_before = np.cumsum(is_pos, axis=1) - is_pos  # positives strictly before each position
    neg_before = np.arange(n)[None, :] - pos_before
    idx = np.broadcast_to(np.arange(n), z.shape)
    new_group = np.ones(z.shape, dtype=bool)
    new_group[:, 1:] = z[:, 1:] != z[:, :-1]
    start = np.maximum.accumulate(np.where(new_group, idx, 0), axis=1)  # first index of the tie group
    fn = np.take_along_axis(pos_before, start, axis=1)  # positives with phi < t
    fp = n_n - np.take_along_axis(neg_before, start, axis=1)  # negatives with phi >= t
    return tab[fp, fn].max(axis=1)


def _count_below(sorted_a: np.ndarray, sorted_b: np.ndarray, *, strict: bool) -> np.ndarray:
    """For each row and each value of sorted_b [g, n_b]: how many of sorted_a [g, n_a] are < it (strict)
    or <= it. A stable argsort of the concatenation puts tied elements in concatenation order, so
    placing b first (strict) or last (<=) decides on which side of a tie the a's count."""
    n_a, n_b = sorted_a.shape[1], sorted_b.shape[1]
    vals = np.concatenate([sorted_b, sorted_a] if strict else [sorted_a, sorted_b], axis=1)
    order = np.argsort(vals, axis=1, kind="stable")
    is_b = order < n_b if strict else order >= n_a
    # np.nonzero walks row by row, and the b's keep their sorted order: column k is b's k-th value
    positions = np.nonzero(is_b)[1].reshape(sorted_b.shape)
    return positions - np.arange(n_b)[None, :]


def _double_exact(inside: np.ndarray, other: np.ndarray, tab: np.ndarray) -> np.ndarray:
    """Best interval rule (t1 <= phi <= t2 predicts `inside`) over all closed intervals; [n_p, g], [n_q, g].

    Write P for the inside side (n_p values) and Q for the other (n_q). A rule's false positives are
    the q Q-values in the interval and its false negatives the n_p - p P-values outside it. Enumerating
    all O((n_p + n_q)^2) intervals per example would cost ~5e5 rules for 512 + 512 models, so instead:

    * q = 0 is only kept if p = n_p (perfect separation, inf): that happens iff no Q-value lies in
      [min P, max P]. Any other q = 0 rule has FPR = 0 < FNR and is dropped.
    * q >= 1: the interval holds a run of sorted Q-values with ranks a..b (q = b - a + 1) that does
      not split a tie group, and no other Q-value. The most P-values such an interval can hold are
      those strictly between Q[a-1] and Q[b+1] (p_full). The rule table is non-increasing in the
      false-negative count for fp >= 1, so p_full is the best choice, unless p_full = n_p, which has
      FNR = 0 < FPR and is dropped; then the best is to give up the smallest outermost tie group of
      P, i.e. the block at min P if it lies below Q[a], or the one at max P if it lies above Q[b].
      (If both P extremes lie inside [Q[a], Q[b]], every interval with these Q-values holds all of
      P and the window has no surviving rule.)

    This evaluates n_q (n_q + 1) / 2 windows per example, vectorised over examples, one q at a time,
    with O(g n_q) memory: exact for the family at a fraction of the all-intervals cost.
    """
    n_p, n_q = inside.shape[0], other.shape[0]
    ps = np.sort(inside.T, axis=1)  # [g, n_p]
    qs = np.sort(other.T, axis=1)  # [g, n_q]
    g = ps.shape[0]
    p_lt = _count_below(ps, qs, strict=True)  # #P < Q[k]
    p_le = _count_below(ps, qs, strict=False)  # #P <= Q[k]
    # hi[b] = #P < Q[b+1] (all P for the last rank), lo[a] = #P <= Q[a-1] (none for the first rank)
    hi = np.concatenate([p_lt[:, 1:], np.full((g, 1), n_p)], axis=1)
    lo = np.concatenate([np.zeros((g, 1), dtype=p_le.dtype), p_le[:, :-1]], axis=1)
    start_ok = np.ones((g, n_q), dtype=bool)
    start_ok[:, 1:] = qs[:, 1:] > qs[:, :-1]  # a window may start at rank a: Q[a-1] < Q[a]
    end_ok = np.ones((g, n_q), dtype=bool)
    end_ok[:, :-1] = qs[:, :-1] < qs[:, 1:]  # ... and end at rank b: Q[b] < Q[b+1]
    p_min, p_max = ps[:, :1], ps[:, -1:]
    n_at_min = (ps == p_min).sum(axis=1, keepdims=True)
    n_at_max = (ps == p_max).sum(axis=1, keepdims=True)
    none = n_p + 1  # "cannot drop" marker, larger than any block

    best = np.full(g, -np.inf)
    for q in range(1, n_q + 1):
        a = slice(0, n_q - q + 1)
        b = slice(q - 1, n_q)
        p_full = hi[:, b] - lo[:, a]
        drop = np.minimum(
            np.where(p_min < qs[:, a], n_at_min, none), np.where(p_max > qs[:, b], n_at_max, none)
        )
        full = p_full == n_p
        p_best = np.where(full, n_p - drop, p_full)
        valid = start_ok[:, a] & end_ok[:, b] & ~(full & (drop == none))
        e = np.where(valid, p_best, -1).max(axis=1)
        ok = e >= 0
        value = tab[q, n_p - np.where(ok, e, 0)]
        best = np.maximum(best, np.where(ok, value, -np.inf))
    perfect = ~np.any((qs >= p_min) & (qs <= p_max), axis=1)
    best[perfect] = np.inf
    return best


def _single_grid(pos: np.ndarray, neg: np.ndarray, tab: np.ndarray) -> float:
    """metric.py's single-threshold grid for one example: pos [n_p], neg [n_n]."""
    pooled_min = min(pos.min(), neg.min())
    pooled_max = max(pos.max(), neg.max())
    count = int(np.ceil((pooled_max - pooled_min) * CHALLENGE_THRESHOLDS_PER_UNIT))
    if count == 0:
        return -np.inf
    # torch.linspace without a dtype returns float32 points, compared with the float64 phi
    grid = np.linspace(pooled_min, pooled_max, count).astype(np.float32).astype(np.float64)
    fn = np.searchsorted(np.sort(pos), grid, side="left")  # pos < t
    fp = neg.size - np.searchsorted(np.sort(neg), grid, side="left")  # neg >= t
    return float(tab[fp, fn].max())


def _double_grid(inside: np.ndarray, other: np.ndarray, tab: np.ndarray) -> float:
    """metric.py's double-threshold grid for one example: inside (the peakier side) [n_p], other [n_q].

    Grid points follow metric.py's float64 numpy construction (np.linspace, same operand order), so they
    are bit-identical to it. Counts come from searchsorted on the sorted samples instead of comparing
    every model with every one of the ~160,000 intervals.
    """
    buffer = CHALLENGE_DOUBLE_THRESHOLD_BUFFER
    width = inside.max() - inside.min()  # the smaller of the two ranges
    lo = inside.min() + width - buffer
    hi = inside.max() + buffer
    n_right = int(np.ceil((hi - lo) * CHALLENGE_THRESHOLDS_PER_UNIT))
    right = np.linspace(lo, hi, num=n_right)
    left = np.linspace(right - width - buffer, right - width + buffer, num=CHALLENGE_LEFT_THRESHOLDS, axis=-1)
    # one searchsorted into the pooled sorted values serves both sides: of the k pooled values below a
    # threshold, n_inside_below[k] are inside-side values (ties between the sides do not matter, all
    # k lie strictly below / at most at the threshold)
    pooled = np.concatenate([inside, other])
    order = np.argsort(pooled, kind="stable")
    z = pooled[order]
    n_inside_below = np.concatenate([[0], np.cumsum(order < inside.size)])
    k_right = np.searchsorted(z, right, side="right")[:, None]  # values <= r
    k_left = np.searchsorted(z, left, side="left")  # values < l
    p_right, p_left = n_inside_below[k_right], n_inside_below[k_left]
    # values in [l, r] = #(<= r) - #(< l); an interval with l > r holds nothing
    p_in = np.maximum(p_right - p_left, 0)
    q_in = np.maximum((k_right - p_right) - (k_left - p_left), 0)
    flat = q_in * tab.shape[1] + (inside.size - p_in)  # row-major index of tab[q_in, fn]
    return float(tab.ravel().take(flat).max())


# --------------------------------------------------------------------------------------------------
# NeurIPS 2023 challenge: forget score and final score


def challenge_max_epsilon(n_unlearned: int) -> float:
    """Upper end of the scored epsilon range: ceil(log(N - 1)) for N unlearned models (metric.py).

    metric.py calls it a back-of-the-envelope largest epsilon that N samples can show; for the
    challenge's N = 512 it is 7, for N = 8 it is 2. Epsilons at or above it score 0. Raises ValueError
    for N < 3 (ceil(log(1)) = 0 leaves no bucket to score).
    """
    if isinstance(n_unlearned, bool) or int(n_unlearned) != n_unlearned or n_unlearned < 3:
        raise ValueError(
            "n_unlearned must be an integer >= 3 (ceil(log(N - 1)) leaves no bucket below N = 3), "
            f"got {n_unlearned}"
        )
    return float(math.ceil(math.log(int(n_unlearned) - 1)))


def challenge_bucket_points(epsilons: np.ndarray, *, n_unlearned: int) -> np.ndarray:
    """Points of each per-example epsilon under the challenge's buckets; same shape as `epsilons`.

    Buckets are [0, 0.5), [0.5, 1), ..., [E - 0.5, E) with E = `challenge_max_epsilon(n_unlearned)`
    (2 E buckets, 14 for N = 512); bucket k (from 0) is worth `1 / 2**k`, so an epsilon exactly on an
    edge k * 0.5 belongs to the bucket that starts there, and epsilon >= E (including the cap and inf)
    scores 0. `n_unlearned` is the number of unlearned models the epsilons were estimated from
    (metric.py uses the unlearned count). Raises ValueError for NaN or negative epsilons.
    """
    eps = np.asarray(epsilons, dtype=np.float64)
    if np.any(np.isnan(eps)):
        raise ValueError("epsilons contain NaN")
    if np.any(eps < 0):
        raise ValueError(f"epsilons must be >= 0, got min {eps.min()}")
    top = challenge_max_epsilon(n_unlearned)
    with np.errstate(invalid="ignore"):
        k = np.floor(eps / CHALLENGE_BUCKET_WIDTH)  # inf stays inf; masked below
    points = CHALLENGE_FIRST_BUCKET_POINTS * np.exp2(-np.where(eps < top, k, 0.0))
    return np.where(eps < top, points, 0.0)


def challenge_forget_score(epsilons: np.ndarray, *, n_unlearned: int) -> float:
    """The challenge's forget score: mean over forget examples of `challenge_bucket_points`, in [0, 1].

    `epsilons` is [m] (e.g. from `challenge_epsilons`), `n_unlearned` the number of unlearned models
    behind them, which sets the number of buckets (see `challenge_bucket_points`). 1 means every
    example has epsilon < 0.5. With few models the epsilons are coarse and biased upwards (see
    `challenge_epsilons`), so scores are only comparable at equal model counts. Raises ValueError for
    an empty or non-1-D input, NaN or negative epsilons.
    """
    eps = np.asarray(epsilons, dtype=np.float64)
    if eps.ndim != 1 or eps.size == 0:
        raise ValueError(f"epsilons must be a non-empty 1-D array [m], got shape {eps.shape}")
    return float(challenge_bucket_points(eps, n_unlearned=n_unlearned).mean())


def challenge_score(
    forget_score: float,
    *,
    retain_unlearned: float,
    retain_retrained: float,
    test_unlearned: float,
    test_retrained: float,
) -> float:
    """The challenge's final score: forget_score * (RA_u / RA_r) * (TA_u / TA_r) (main.py).

    RA and TA are retain and test accuracies in [0, 1], each the mean over the unlearned (u) or
    retrained (r) models. The ratios are not capped, so an unlearned model more accurate than
    retraining raises the score above the forget score. Raises ValueError for a forget score outside
    [0, 1], an accuracy outside [0, 1] or non-finite, or a zero retrained accuracy.
    """
    if not (math.isfinite(forget_score) and 0 <= forget_score <= 1):
        raise ValueError(f"forget_score must lie in [0, 1], got {forget_score}")
    accs = {
        "retain_unlearned": retain_unlearned,
        "retain_retrained": retain_retrained,
        "test_unlearned": test_unlearned,
        "test_retrained": test_retrained,
    }
    for name, value in accs.items():
        if not (math.isfinite(value) and 0 <= value <= 1):
            raise ValueError(f"{name} must be an accuracy in [0, 1], got {value}")
    for name in ("retain_retrained", "test_retrained"):
        if accs[name] == 0:
            raise ValueError(f"{name} is 0: the utility ratio is undefined")
    return float(forget_score * (retain_unlearned / retain_retrained) * (test_unlearned / test_retrained))
