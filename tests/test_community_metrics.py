"""ToW and the NeurIPS 2023 unlearning-challenge score (perinstance.community_metrics).

Most hand-computed cases use delta = 1e-5 (the challenge's) and N = R = 4 models, so rates are multiples of
1/4. Two epsilons recur, both the bound log(1 - delta - FPR) - log(FNR):
  LOG2 = log(0.5 - delta) - log(0.25) ~ 0.693127 (FPR = 1/2, FNR = 1/4)
  LOG3 = log(0.75 - delta) - log(0.25) ~ 1.098599 (FPR = FNR = 1/4)
The naive references below loop over every threshold / interval in plain Python (exact mode) or build
metric.py's grids one right threshold at a time and compare every model with every rule (grid mode);
they share no code with the module.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from perinstance.community_metrics import (
    CHALLENGE_DELTA,
    CHALLENGE_EPSILON_CAP,
    challenge_bucket_points,
    challenge_epsilons,
    challenge_forget_score,
    challenge_max_epsilon,
    challenge_score,
    tug_of_war,
    tug_of_war_array,
)

DELTA = CHALLENGE_DELTA
CAP = CHALLENGE_EPSILON_CAP
LOG2 = math.log(0.5 - DELTA) - math.log(0.25)
LOG3 = math.log(0.75 - DELTA) - math.log(0.25)
MODES = ("grid", "exact")


def col(*values: float) -> np.ndarray:
    """One example's phi under len(values) models, as a [models, 1] array."""
    return np.array(values, dtype=np.float64)[:, None]


# ------------------------------------------------------------------------------------------------- ToW


def test_tow_identical_accuracies_is_one():
    acc = {"forget": 0.7, "retain": 0.99, "test": 0.9}
    assert tug_of_war(acc, dict(acc)) == 1.0


def test_tow_worked_example():
    # gaps: forget |0.80 - 0.75| = 0.05, retain |0.95 - 0.97| = 0.02, test |0.85 - 0.86| = 0.01
    # ToW = 0.95 * 0.98 * 0.99 = 0.92169
    u = {"forget": 0.80, "retain": 0.95, "test": 0.85}
    r = {"forget": 0.75, "retain": 0.97, "test": 0.86}
    assert tug_of_war(u, r) == pytest.approx(0.92169, rel=1e-12)
    # a full gap on one split gives 0: forget 1.0 vs 0.0
    assert (
        tug_of_war({"forget": 1.0, "retain": 0.5, "test": 0.5}, {"forget": 0.0, "retain": 0.5, "test": 0.5})
        == 0
    )


def test_tow_array_broadcasts_over_seeds():
    # three unlearning seeds against one (mean) reference: forget gaps 0, 0.1, 0.2, no other gap
    u = {"forget": np.array([0.5, 0.6, 0.7]), "retain": 1.0, "test": 0.8}
    r = {"forget": 0.5, "retain": 1.0, "test": 0.8}
    np.testing.assert_allclose(tug_of_war_array(u, r), [1.0, 0.9, 0.8], rtol=1e-12)
    with pytest.raises(ValueError, match="use tug_of_war_array"):
        tug_of_war(u, r)
    with pytest.raises(ValueError, match="broadcast"):
        tug_of_war_array({"forget": np.zeros(2), "retain": np.zeros(3), "test": 0.0}, r)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"forget": 0.5, "retain": 0.5}, r"missing \['test'\]"),
        ({"forget": 0.5, "retain": 0.5, "test": 0.5, "val": 0.5}, r"unexpected \['val'\]"),
        ({"forget": 0.5, "retain": 0.5, "tst": 0.5}, "missing"),
        ({"forget": 85.0, "retain": 0.5, "test": 0.5}, "percentages"),
        ({"forget": -0.1, "retain": 0.5, "test": 0.5}, r"in \[0, 1\]"),
        ({"forget": float("nan"), "retain": 0.5, "test": 0.5}, "finite"),
        ({"forget": "high", "retain": 0.5, "test": 0.5}, "not numeric"),
    ],
)
def test_tow_rejects_bad_input(bad, match):
    good = {"forget": 0.5, "retain": 0.5, "test": 0.5}
    with pytest.raises(ValueError, match=match):
        tug_of_war(bad, good)
    with pytest.raises(ValueError, match=match):
        tug_of_war(good, bad)


# ------------------------------------------------------------------------- challenge epsilons, by hand


@pytest.mark.parametrize("mode", MODES)
def test_fully_separable_example_hits_the_cap(mode):
    # unlearned all above retrained: median u 3.75 > r 0.75, so "phi >= t -> unlearned"; t = 3 has
    # FPR = #r >= 3 / 4 = 0 and FNR = #u < 3 / 4 = 0: perfect separation, epsilon inf -> cap
    u, r = col(3, 3.5, 4, 4.5), col(0, 0.5, 1, 1.5)
    assert challenge_epsilons(u, r, thresholds=mode).tolist() == [CAP]
    assert challenge_epsilons(u, r, thresholds=mode, cap=10.0).tolist() == [10.0]


@pytest.mark.parametrize("mode", MODES)
def test_identical_samples_give_zero(mode):
    # same four values on both sides: every rule has FPR + FNR = 1 (or a zero rate, dropped), so both
    # log bounds are log((1 - delta - x) / (1 - x)) < 0 and clip to 0
    u = col(0, 1, 2, 3)
    assert challenge_epsilons(u, u.copy(), thresholds=mode).tolist() == [0.0]


@pytest.mark.parametrize("mode", MODES)
def test_constant_samples(mode):
    # both constant and equal: ranges 0/0 (not "peaky"), every rule has a zero rate -> no surviving
    # rule -> 0 (metric.py would stop at its assertion here)
    assert challenge_epsilons(col(2, 2, 2, 2), col(2, 2, 2, 2), thresholds=mode).tolist() == [0.0]
    # both constant but different: perfectly separable -> cap
    assert challenge_epsilons(col(1, 1, 1), col(2, 2, 2), thresholds=mode).tolist() == [CAP]


@pytest.mark.parametrize("mode", MODES)
def test_single_threshold_worked_example(mode):
    # u = {0, 2, 3, 8}, r = {1, 5, 6, 7}; median r 5.5 > u 2.5 -> "phi >= t -> retrained".
    # t = 5: FPR = #u >= 5 / 4 = 1/4 (the 8), FNR = #r < 5 / 4 = 1/4 (the 1) -> LOG3; t = 3 gives
    # (2/4, 1/4) -> LOG2, t = 6 gives (1/4, 2/4) -> LOG2, t <= 1 has FNR = 0 (dropped).
    # Intervals (inside -> r, the smaller range 6 < 8) cannot reach FNR = 0 without u's 2 and 3, so
    # the best is also (1/4, 1/4), e.g. [3, 7]. Epsilon = LOG3.
    u, r = col(0, 2, 3, 8), col(1, 5, 6, 7)
    assert challenge_epsilons(u, r, thresholds=mode)[0] == pytest.approx(LOG3, abs=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_only_the_interval_rule_separates(mode):
    # retrained in the middle, unlearned on both tails. Medians tie at 0 -> positive = unlearned.
    # Single thresholds "phi >= t -> u": the best is t = 0.5 with FPR = #r >= 0.5 / 4 = 1/4 and
    # FNR = #u < 0.5 / 4 = 2/4: max(log(0.75 - d) - log(0.5), log(0.5 - d) - log(0.25)) = LOG2;
    # t = 2.5 has FPR = 0 < FNR (dropped). The interval [-0.5, 0.5] (inside -> r, range 1 < 6) holds
    # all of r and none of u: FPR = FNR = 0 -> inf -> cap.
    u, r = col(-3, -2.5, 2.5, 3), col(-0.5, -0.2, 0.2, 0.5)
    assert challenge_epsilons(u, r, thresholds=mode).tolist() == [CAP]
    single = challenge_epsilons(u, r, thresholds=mode, families=("single",))
    assert single[0] == pytest.approx(LOG2, abs=1e-12)
    assert challenge_epsilons(u, r, thresholds=mode, families=("double",)).tolist() == [CAP]


def test_grid_window_misses_a_narrow_interval():
    # r = {0, 0.1, 0.2, 10} (range 10, inside side), u = {-6, -4, 4, 5} (range 11); median r 0.15 > 0.
    # Exact intervals: [-4, 0.2] holds r's 0, 0.1, 0.2 and u's -4: FPR = FNR = 1/4 -> LOG3.
    # metric.py's grid only has right ends in [max r - 2, max r + 2] = [8, 12] and left ends in
    # [r_end - 12, r_end - 8] within [-4, 4], so every grid interval holds u's 4 and 5 (FPR >= 2/4);
    # its best is [<= 0, < 10]: FPR = 2/4, FNR = 1/4 -> LOG2. Single thresholds give LOG2 too
    # (t = 0.1: FPR = #u >= 0.1 / 4 = 2/4, FNR = 1/4).
    u, r = col(-6, -4, 4, 5), col(0, 0.1, 0.2, 10)
    assert challenge_epsilons(u, r, thresholds="grid")[0] == pytest.approx(LOG2, abs=1e-12)
    assert challenge_epsilons(u, r, thresholds="exact")[0] == pytest.approx(LOG3, abs=1e-12)


def test_single_grid_points_are_float32():
    # metric.py's torch.linspace returns float32 points. Pooled range 0.0005 -> ceil(0.05) = 1 grid
    # point, the pooled min 0.1, which as float32 is 0.10000000149 > 0.1. Median r 0.10025 > u 0.1, so
    # "phi >= t -> r": FPR = #u >= t / 4 = 1/4 (the 0.1005), FNR = #r < t / 4 = 1/4 (r's 0.1) -> LOG3.
    # A float64 point t = 0.1 would give FPR = 1, FNR = 0 (dropped) and epsilon 0.
    u, r = col(0.1, 0.1, 0.1, 0.1005), col(0.1, 0.1002, 0.1003, 0.1004)
    single = challenge_epsilons(u, r, thresholds="grid", families=("single",))
    assert single[0] == pytest.approx(LOG3, abs=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_peaky_shortcut(mode):
    # unlearned range 0.0015 vs retrained range 1: ratio 0.0015 < 0.01 -> cap, whatever the rules say
    r = col(0, 0.25, 0.75, 1)
    peaky = col(0.499, 0.5, 0.5, 0.5005)
    assert challenge_epsilons(peaky, r, thresholds=mode, families=("single",)).tolist() == [CAP]
    # range 0.02 (ratio 0.02) is scored normally. Medians tie at 0.5 -> "phi >= t -> u";
    # t = 0.5: FPR = #r >= 0.5 / 4 = 2/4, FNR = #u < 0.5 / 4 = 1/4 -> LOG2 (single rules only; the
    # interval [0.49, 0.51] separates perfectly -> cap with both families)
    narrow = col(0.49, 0.5, 0.5, 0.51)
    single = challenge_epsilons(narrow, r, thresholds=mode, families=("single",))
    assert single[0] == pytest.approx(LOG2, abs=1e-12)
    assert challenge_epsilons(narrow, r, thresholds=mode).tolist() == [CAP]


def test_examples_are_independent_columns():
    # the hand cases side by side, N = R = 4: columns are scored separately
    u = np.hstack([col(3, 3.5, 4, 4.5), col(0, 1, 2, 3), col(0, 2, 3, 8)])
    r = np.hstack([col(0, 0.5, 1, 1.5), col(0, 1, 2, 3), col(1, 5, 6, 7)])
    for mode in MODES:
        np.testing.assert_allclose(challenge_epsilons(u, r, thresholds=mode), [CAP, 0.0, LOG3], atol=1e-12)


def test_exact_mode_batches_agree():
    # more examples than one internal batch (1024): the result equals scoring slices separately
    rng = np.random.default_rng(5)
    u, r = random_phi(rng, 5, 6, 2100)
    whole = challenge_epsilons(u, r, thresholds="exact")
    parts = [
        challenge_epsilons(u[:, i : i + 300], r[:, i : i + 300], thresholds="exact")
        for i in range(0, 2100, 300)
    ]
    np.testing.assert_array_equal(whole, np.concatenate(parts))


@pytest.mark.parametrize(
    "u, r, kwargs, match",
    [
        (np.zeros(4), np.zeros((4, 1)), {}, "2-D"),
        (np.zeros((4, 2)), np.zeros((4, 3)), {}, "different examples"),
        (np.zeros((4, 0)), np.zeros((4, 0)), {}, "no examples"),
        (np.zeros((1, 3)), np.zeros((4, 3)), {}, "at least 2 unlearned and 2 retrained"),
        (np.full((4, 1), np.nan), np.zeros((4, 1)), {}, "finite"),
        (np.zeros((4, 1)), np.zeros((4, 1)), {"delta": 1.0}, "delta"),
        (np.zeros((4, 1)), np.zeros((4, 1)), {"cap": 0.0}, "cap"),
        (np.zeros((4, 1)), np.zeros((4, 1)), {"thresholds": "pooled"}, "thresholds"),
        (np.zeros((4, 1)), np.zeros((4, 1)), {"families": ("triple",)}, "families"),
        (np.zeros((4, 1)), np.zeros((4, 1)), {"families": ()}, "families"),
    ],
)
def test_challenge_epsilons_rejects_bad_input(u, r, kwargs, match):
    with pytest.raises(ValueError, match=match):
        challenge_epsilons(u, r, **kwargs)


# --------------------------------------------------------------------- naive references (no shared code)


def naive_rule_epsilon(fp: int, n_neg: int, fn: int, n_pos: int, delta: float) -> float | None:
    """Epsilon of one rule from its error counts; None when the rule is dropped."""
    fpr, fnr = fp / n_neg, fn / n_pos
    if fpr == 0 and fnr == 0:
        return math.inf
    if fpr == 0 or fnr == 0:
        return None
    bounds = []
    for a, b in ((fpr, fnr), (fnr, fpr)):
        slack = 1 - delta - a
        if slack > 0:
            bounds.append(math.log(slack) - math.log(b))
        elif slack == 0:
            bounds.append(-math.inf)
    if not bounds:
        return None
    return max(0.0, max(bounds))


def naive_epsilon(u, r, *, delta=DELTA, cap=CAP, grid=False, families=("single", "double")) -> float:
    """One example: u, r are plain lists of phi under the unlearned / retrained models."""
    u, r = [float(x) for x in u], [float(x) for x in r]
    ru, rr = max(u) - min(u), max(r) - min(r)
    if max(ru, rr) > 0 and min(ru, rr) / max(ru, rr) < 0.01:
        return cap
    pos, neg = (r, u) if statistics.median(r) > statistics.median(u) else (u, r)
    found = []
    if "single" in families:
        if grid:
            lo, hi = min(pos + neg), max(pos + neg)
            count = math.ceil((hi - lo) * 100)
            ts = [float(np.float32(t)) for t in np.linspace(lo, hi, count)] if count else []
        else:
            ts = sorted(set(pos + neg))
        for t in ts:
            fp = sum(1 for x in neg if x >= t)
            fn = sum(1 for x in pos if x < t)
            found.append(naive_rule_epsilon(fp, len(neg), fn, len(pos), delta))
    if "double" in families:
        wide_pos = (max(pos) - min(pos)) >= (max(neg) - min(neg))
        ins, oth = (neg, pos) if wide_pos else (pos, neg)
        if grid:
            found += naive_double_grid(ins, oth, delta)
        else:
            values = sorted(set(pos + neg))
            for i, lo in enumerate(values):
                for hi in values[i:]:
                    fp = sum(1 for x in oth if lo <= x <= hi)
                    fn = sum(1 for x in ins if not lo <= x <= hi)
                    found.append(naive_rule_epsilon(fp, len(oth), fn, len(ins), delta))
    kept = [e for e in found if e is not None]
    eps = max(kept) if kept else 0.0
    return min(max(eps, 0.0), cap)


def naive_double_grid(ins: list, oth: list, delta: float) -> list:
    """metric.py's double-threshold grid, one right threshold at a time, every model vs every rule."""
    width = max(ins) - min(ins)
    lo, hi = min(ins) + width - 2.0, max(ins) + 2.0
    a, b = np.array(ins), np.array(oth)
    out = []
    for right in np.linspace(lo, hi, math.ceil((hi - lo) * 100)):
        lefts = np.linspace(right - width - 2.0, right - width + 2.0, 400)
        inside_a = (lefts[:, None] <= a[None, :]) & (a[None, :] <= right)
        inside_b = (lefts[:, None] <= b[None, :]) & (b[None, :] <= right)
        fps = inside_b.sum(axis=1)
        fns = (~inside_a).sum(axis=1)
        # distinct count pairs only: the rule's epsilon depends on nothing else
        for fp, fn in set(zip(fps.tolist(), fns.tolist())):
            out.append(naive_rule_epsilon(fp, len(oth), fn, len(ins), delta))
    return out


def random_phi(rng, n_u, n_r, m, *, ties=False):
    """Unlearned and retrained phi from overlapping per-example distributions (moderate epsilons)."""
    center = rng.normal(0, 1, m)
    u = center + rng.uniform(0.3, 1.5, m) * rng.normal(0, 1, (n_u, m))
    r = center + rng.normal(0, 0.7, m) + rng.uniform(0.3, 1.5, m) * rng.normal(0, 1, (n_r, m))
    return (np.round(u * 2) / 2, np.round(r * 2) / 2) if ties else (u, r)


def assert_discriminating(eps):
    # the comparison is only worth something if the maxima are spread out, not all cap or 0
    assert len(set(np.round(eps, 9))) >= 6 and np.mean((eps > 0) & (eps < CAP)) > 0.5


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape", [(12, 12, 30), (8, 15, 30), (18, 6, 30)])
def test_exact_mode_matches_naive(shape, ties):
    n_u, n_r, m = shape
    rng = np.random.default_rng(sum(shape) + ties)
    u, r = random_phi(rng, n_u, n_r, m, ties=ties)
    for families in [("single", "double"), ("single",), ("double",)]:
        got = challenge_epsilons(u, r, thresholds="exact", families=families)
        want = [naive_epsilon(u[:, i], r[:, i], families=families) for i in range(m)]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        assert_discriminating(got)


def test_exact_mode_matches_naive_other_delta():
    rng = np.random.default_rng(11)
    u, r = random_phi(rng, 10, 10, 30)
    for delta in (0.0, 0.2):
        got = challenge_epsilons(u, r, thresholds="exact", delta=delta)
        want = [naive_epsilon(u[:, i], r[:, i], delta=delta) for i in range(30)]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_exact_mode_matches_naive_on_heavy_ties():
    # values in {0, 1, 2}: many ties across and within sides, constant columns, peaky columns
    rng = np.random.default_rng(7)
    u = rng.integers(0, 3, (6, 60)).astype(float)
    r = rng.integers(0, 2, (5, 60)).astype(float) + rng.integers(0, 2, 60)
    got = challenge_epsilons(u, r, thresholds="exact")
    want = [naive_epsilon(u[:, i], r[:, i]) for i in range(60)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert len(set(np.round(got, 9))) >= 3


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("shape", [(10, 10, 5), (6, 12, 5), (12, 7, 5)])
def test_grid_mode_matches_naive(shape, ties):
    n_u, n_r, m = shape
    rng = np.random.default_rng(100 + sum(shape) + ties)
    u, r = random_phi(rng, n_u, n_r, m, ties=ties)
    got = challenge_epsilons(u, r, thresholds="grid")
    want = [naive_epsilon(u[:, i], r[:, i], grid=True) for i in range(m)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert len(set(np.round(got, 9))) >= 3


def test_grid_never_exceeds_exact():
    # the grid's rules are a subset of all thresholds and intervals
    rng = np.random.default_rng(3)
    u = rng.normal(0, 1, (16, 30))
    r = rng.normal(0.5, 1.5, (12, 30))
    grid = challenge_epsilons(u, r, thresholds="grid")
    exact = challenge_epsilons(u, r, thresholds="exact")
    assert np.all(grid <= exact + 1e-12)
    assert np.all((grid >= 0) & (exact <= CAP))
    assert np.any(exact > grid + 0.1)  # the restriction matters on some examples


# ------------------------------------------------------------------------------- buckets and scores


def test_max_epsilon():
    # ceil(log(N - 1)): log(511) = 6.24 -> 7, log(7) = 1.95 -> 2, log(3) = 1.10 -> 2, log(2) = 0.69 -> 1
    assert [challenge_max_epsilon(n) for n in (512, 8, 4, 3)] == [7.0, 2.0, 2.0, 1.0]
    for bad in (2, 1, 3.5, True):
        with pytest.raises(ValueError, match="n_unlearned"):
            challenge_max_epsilon(bad)


def test_bucket_points_at_edges():
    # N = 512: buckets [0, .5) [.5, 1) ... [6.5, 7) worth 1, 1/2, ..., 2**-13; an edge belongs to the
    # bucket it starts; 7 (the top), the cap and inf score 0
    eps = [0.0, 0.4999, 0.5, 0.9999, 1.0, 6.5, 6.999, 7.0, CAP, math.inf]
    want = [1.0, 1.0, 0.5, 0.5, 0.25, 2.0**-13, 2.0**-13, 0.0, 0.0, 0.0]
    assert challenge_bucket_points(eps, n_unlearned=512).tolist() == want
    # N = 8: top 2, four buckets
    assert challenge_bucket_points([1.5, 1.99, 2.0], n_unlearned=8).tolist() == [0.125, 0.125, 0.0]
    # N = 3: top 1, two buckets
    assert challenge_bucket_points([0.7, 1.0], n_unlearned=3).tolist() == [0.5, 0.0]
    with pytest.raises(ValueError, match=">= 0"):
        challenge_bucket_points([-0.1], n_unlearned=512)
    with pytest.raises(ValueError, match="NaN"):
        challenge_bucket_points([math.nan], n_unlearned=512)


def test_forget_score():
    # points 1 + 0.5 + 0.25 + 0 over 4 examples = 0.4375
    assert challenge_forget_score(np.array([0.0, 0.5, 1.2, 7.0]), n_unlearned=512) == 0.4375
    with pytest.raises(ValueError, match="1-D"):
        challenge_forget_score(np.zeros((2, 2)), n_unlearned=512)
    with pytest.raises(ValueError, match="1-D"):
        challenge_forget_score(np.zeros(0), n_unlearned=512)


def test_forget_score_from_hand_epsilons():
    # the three hand cases with N = 4 unlearned models (top ceil(log 3) = 2): cap -> 0 points,
    # 0 -> 1 point, LOG3 = 1.0986 in [1, 1.5) -> 1/4; mean (0 + 1 + 0.25) / 3
    u = np.hstack([col(3, 3.5, 4, 4.5), col(0, 1, 2, 3), col(0, 2, 3, 8)])
    r = np.hstack([col(0, 0.5, 1, 1.5), col(0, 1, 2, 3), col(1, 5, 6, 7)])
    eps = challenge_epsilons(u, r)
    assert challenge_forget_score(eps, n_unlearned=u.shape[0]) == pytest.approx(1.25 / 3, abs=1e-15)


def test_challenge_score():
    # 0.4375 * (0.8 / 1.0) * (0.6 / 0.75) = 0.4375 * 0.8 * 0.8 = 0.28
    got = challenge_score(
        0.4375, retain_unlearned=0.8, retain_retrained=1.0, test_unlearned=0.6, test_retrained=0.75
    )
    assert got == pytest.approx(0.28, rel=1e-12)
    # ratios are not capped: better-than-retrained utility lifts the score above the forget score
    up = challenge_score(
        0.5, retain_unlearned=0.9, retain_retrained=0.8, test_unlearned=0.8, test_retrained=0.8
    )
    assert up == pytest.approx(0.5625, rel=1e-12)
    assert (
        challenge_score(0.0, retain_unlearned=1, retain_retrained=1, test_unlearned=1, test_retrained=1) == 0
    )
    ok = {"retain_unlearned": 0.9, "retain_retrained": 0.9, "test_unlearned": 0.8, "test_retrained": 0.8}
    with pytest.raises(ValueError, match="forget_score"):
        challenge_score(1.5, **ok)
    with pytest.raises(ValueError, match="test_unlearned"):
        challenge_score(0.5, **{**ok, "test_unlearned": 80.0})
    with pytest.raises(ValueError, match="retain_retrained is 0"):
        challenge_score(0.5, **{**ok, "retain_retrained": 0.0})
