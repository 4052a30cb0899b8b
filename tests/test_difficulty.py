"""Per-example unlearning difficulty on hand-built curves.

Survival against a hand computation; paired bootstrap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from perinstance.difficulty import (
    difficulty_correlations,
    first_passage,
    gap_statistics,
    kaplan_meier,
    normalised_gap,
    oracle_reference,
    verdict,
)
from perinstance.theory import fit_log_trend, fit_log_trend_censored

STEPS = np.array([0, 10, 20, 30, 40])


def test_oracle_reference_is_mean_and_sample_sd():
    losses = np.array([[1.0, 2.0], [3.0, 2.0], [2.0, 2.0]])
    ref = oracle_reference(losses, tol_abs=0.1, z=2.0)
    np.testing.assert_allclose(ref["center"], [2.0, 2.0])
    np.testing.assert_allclose(ref["sd"], [1.0, 0.0])
    np.testing.assert_allclose(ref["half_width"], [2.0, 0.1])  # max(tol_abs, z * sd)


def test_first_passage_needs_consecutive_evaluations_and_censors_at_the_last_step():
    center, half = np.zeros(4), np.full(4, 0.5)
    losses = np.array(
        [
            # example 0 enters at 10 and stays; 1 dips in at 10 only, enters for good at 30
            # (too late for 3 in a row);
            # 2 is inside from step 0; 3 never enters
            [2.0, 3.0, 0.1, 4.0],
            [0.2, 0.1, 0.0, 4.0],
            [0.1, 2.0, 0.2, 4.0],
            [0.0, 0.3, 0.1, 4.0],
            [0.3, 0.2, 0.0, 4.0],
        ]
    )
    out = first_passage(STEPS, losses, center, half, consecutive=3)
    assert out["steps"].tolist() == [10, 40, 0, 40]
    assert out["censored"].tolist() == [False, True, False, True]
    assert out["inside_at_step0"].tolist() == [False, False, True, False]
    single = first_passage(STEPS, losses, center, half, consecutive=1)
    assert single["steps"].tolist() == [10, 10, 0, 40] and single["censored"].tolist() == [
        False,
        False,
        False,
        True,
    ]


def test_gap_statistics_on_a_linear_closing_curve():
    # the gap closes linearly from 2 to 0 over 40 steps; the other example never moves
    center = np.array([1.0, 1.0])
    losses = np.column_stack([1.0 + 2.0 * (1 - STEPS / 40), np.full(5, 3.0)])
    gap = normalised_gap(losses, center)
    np.testing.assert_allclose(gap[:, 0], 1 - STEPS / 40)
    stats = gap_statistics(STEPS, losses, center, budgets=[20, 40])
    np.testing.assert_allclose(stats["remaining_gap_20"], [0.5, 1.0])
    np.testing.assert_allclose(stats["remaining_gap_40"], [0.0, 1.0])
    np.testing.assert_allclose(stats["mean_gap_40"], [0.5, 1.0])  # area under a triangle / K


def test_gap_budget_must_be_an_evaluated_step():
    with pytest.raises(ValueError, match="no evaluation at step 25"):
        gap_statistics(STEPS, np.ones((5, 1)), np.zeros(1), budgets=[25])


def test_kaplan_meier_matches_a_hand_computation():
    # times 10, 20 (censored), 30, 30, 40 (censored): S(10) = 4/5, S(30) = 4/5 * (1 - 2/3)
    km = kaplan_meier(np.array([10, 20, 30, 30, 40]), np.array([False, True, False, False, True]))
    at = km.set_index("step")["survival"]
    assert at[0.0] == 1.0
    assert at[10.0] == pytest.approx(0.8) and at[20.0] == pytest.approx(0.8)
    assert at[30.0] == pytest.approx(0.8 / 3) and at[40.0] == pytest.approx(0.8 / 3)
    # Greenwood at 10: S^2 * 1 / (5 * 4)
    assert km.set_index("step").loc[10.0, "se"] == pytest.approx(0.8 * np.sqrt(1 / 20))


def test_verdicts():
    assert verdict(0.1, 0.3) == "holds"
    assert verdict(-0.3, -0.1) == "contradicted"
    assert verdict(-0.1, 0.2) == "not resolved at this scale"
    assert verdict(np.nan, 0.2) == "not resolved at this scale"


def _pool(n_units=120, seeds=(0, 1), noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.lognormal(size=n_units)
    proxy = np.log(p) + rng.normal(0, 1.5, n_units)  # a noisier relative of P
    rows = []
    for s in seeds:
        difficulty = np.log(p) + rng.normal(0, noise, n_units)
        rows.append(
            pd.DataFrame(
                {
                    "score": "privacy_loss",
                    "group": "g",
                    "index": np.arange(n_units),
                    "seed": s,
                    "difficulty": difficulty,
                    "P": p,
                    "proxy": proxy,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def test_point_estimates_are_spearman_over_the_pooled_rows():
    pool = _pool()
    table = difficulty_correlations(pool, "difficulty", ["P", "proxy"], reference="P", n_boot=50)
    by_score = table.set_index("score")
    assert by_score.loc["P", "rho"] == pytest.approx(spearmanr(pool["difficulty"], pool["P"])[0])
    assert by_score.loc["proxy", "rho"] == pytest.approx(spearmanr(pool["difficulty"], pool["proxy"])[0])
    assert by_score.loc["proxy", "rho_minus_reference"] == pytest.approx(
        by_score.loc["P", "rho"] - by_score.loc["proxy", "rho"]
    )
    assert by_score.loc["P", "n_units"] == 120 and by_score.loc["P", "n_seeds"] == 2


def test_paired_bootstrap_resolves_a_real_difference_and_not_a_null_one():
    pool = _pool()
    better = difficulty_correlations(pool, "difficulty", ["P", "proxy"], reference="P", n_boot=300).set_index(
        "score"
    )
    assert better.loc["proxy", "verdict"] == "holds" and better.loc["proxy", "difference_low"] > 0
    # the same score under two names: the paired difference is exactly 0 in every replicate
    twin = pool.assign(copy=pool["P"])
    same = difficulty_correlations(twin, "difficulty", ["P", "copy"], reference="P", n_boot=100).set_index(
        "score"
    )
    assert same.loc["copy", "difference_low"] == same.loc["copy", "difference_high"] == 0.0
    assert same.loc["copy", "verdict"] == "not resolved at this scale"


def test_seed_resampling_widens_the_interval_when_seeds_disagree():
    calm = _pool(noise=0.3)
    # one seed's difficulty is unrelated to P: resampling seeds must widen the CI
    wild = calm.copy()
    seed1 = wild["seed"] == 1
    wild.loc[seed1, "difficulty"] = np.random.default_rng(5).normal(size=int(seed1.sum()))
    width = {}
    for name, pool in (("calm", calm), ("wild", wild)):
        row = difficulty_correlations(pool, "difficulty", ["P"], reference="P", n_boot=400).iloc[0]
        width[name] = row["rho_high"] - row["rho_low"]
    assert width["wild"] > 2 * width["calm"]


def test_tobit_fit_recovers_a_censored_trend_where_plugging_k_max_does_not():
    rng = np.random.default_rng(1)
    p = np.exp(rng.uniform(0, 5, 300))
    k = 300 * np.log(p) + 100 + rng.normal(0, 40, 300)
    censored = k > 1000
    observed = np.minimum(k, 1000)
    tobit = fit_log_trend_censored(p, observed, censored)
    assert tobit["scale"] == pytest.approx(300, rel=0.05) and tobit["offset"] == pytest.approx(100, abs=40)
    assert tobit["n_censored"] == int(censored.sum()) > 50
    naive = fit_log_trend(p, observed)
    assert naive["scale"] < 0.9 * 300  # K_max as a value flattens the trend


def test_tobit_fit_needs_two_uncensored_points():
    with pytest.raises(ValueError, match="two uncensored"):
        fit_log_trend_censored(
            np.array([1.0, 2.0, 3.0]), np.array([5.0, 10.0, 10.0]), np.array([False, True, True])
        )
