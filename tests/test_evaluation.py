from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from perinstance.evaluation import (
    forget_accuracy_gap,
    loss_threshold_mia_auc,
    mia_auc_gap,
    oracle_band,
    steps_to_unlearn,
    summarise_steps,
)

STEPS = np.arange(0, 100, 10)  # 10 evaluations, k_max 90
BAND = (1.0, 0.1, 0.0)


def test_oracle_band():
    assert oracle_band(np.array([2.0]), tol_abs=0.1, z=2.0) == (2.0, 0.1, 0.0)
    center, half, sd = oracle_band(np.array([1.0, 2.0, 3.0]), tol_abs=0.1, z=2.0)
    assert (center, sd) == (2.0, 1.0) and half == 2.0  # noisy oracles widen the band past tol_abs
    per_example = np.array([[1.0, 3.0], [3.0, 5.0]])  # per-oracle means 2 and 4
    center, half, sd = oracle_band(per_example, tol_abs=0.0, z=1.0)
    assert center == 3.0 and sd == pytest.approx(math.sqrt(2)) and half == pytest.approx(math.sqrt(2))


def test_clean_first_crossing():
    loss = np.array([3.0, 2.5, 2.0, 1.5, 1.05, 1.0, 0.95, 1.0, 1.0, 1.0])
    r = steps_to_unlearn(STEPS, loss, BAND)
    assert r["steps"] == 40 and not r["censored"]
    assert r["step0_gap"] == pytest.approx(2.0) and not r["inside_at_step0"]
    assert r["final_gap"] == pytest.approx(0.0)


def test_crossing_that_does_not_hold():
    # inside at 20 and 30 only (two evaluations), back out, then inside for good from 60
    loss = np.array([3.0, 2.0, 1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    assert steps_to_unlearn(STEPS, loss, BAND)["steps"] == 60
    assert steps_to_unlearn(STEPS, loss, BAND, consecutive=2)["steps"] == 20
    assert steps_to_unlearn(STEPS, loss, BAND, consecutive=1)["steps"] == 20


def test_never_crossing_is_censored():
    loss = np.linspace(3.0, 1.5, 10)
    r = steps_to_unlearn(STEPS, loss, BAND)
    assert r["steps"] == 90 and r["censored"]
    assert r["final_gap"] == pytest.approx(0.5)
    # a run that only starts inside at the last two evaluations is not observed long enough
    late = np.r_[np.full(8, 3.0), 1.0, 1.0]
    assert steps_to_unlearn(STEPS, late, BAND)["censored"]
    # k_max truncates the curve: a crossing after it does not count
    r = steps_to_unlearn(STEPS, np.r_[np.full(6, 3.0), np.ones(4)], BAND, k_max=70)
    assert r["censored"] and r["steps"] == 70
    nan = np.r_[3.0, np.nan, np.nan, np.ones(7)]
    assert steps_to_unlearn(STEPS, nan, BAND)["steps"] == 30


def test_noisy_oracles_widen_band():
    loss = np.r_[3.0, np.full(9, 1.5)]
    assert steps_to_unlearn(STEPS, loss, oracle_band(np.array([1.0, 1.0]), tol_abs=0.1, z=2))["censored"]
    wide = oracle_band(np.array([0.7, 1.3]), tol_abs=0.1, z=2)
    assert steps_to_unlearn(STEPS, loss, wide)["steps"] == 10


def test_inside_at_step0():
    r = steps_to_unlearn(STEPS, np.full(10, 1.05), BAND)
    assert r["steps"] == 0 and r["inside_at_step0"] and r["step0_gap"] == pytest.approx(0.05)


def test_step_validation():
    with pytest.raises(ValueError, match="start at 0"):
        steps_to_unlearn(np.arange(1, 11), np.ones(10), BAND)
    with pytest.raises(ValueError, match="start at 0"):
        steps_to_unlearn(STEPS[::-1], np.ones(10), BAND)
    with pytest.raises(ValueError, match="k_max"):
        steps_to_unlearn(STEPS, np.ones(10), BAND, k_max=200)


def test_summarise_keeps_censored():
    records = pd.DataFrame(
        {
            "score": "p",
            "group": ["high"] * 3 + ["low"] * 3,
            "method": "finetune",
            "seed": [0, 1, 2] * 2,
            "steps": [100, 300, 2000, 0, 0, 0],
            "censored": [False, False, True, False, False, False],
            "inside_at_step0": [False] * 3 + [True] * 3,
            "overshot": [False, False, True, False, False, False],
        }
    )
    s = summarise_steps(records).set_index("group")
    assert s.loc["high", "steps_mean"] == pytest.approx(800.0) and s.loc["high", "steps_median"] == 300
    assert s.loc["high", "n_censored"] == 1 and s.loc["high", "n_seeds"] == 3 and s.loc["high", "lower_bound"]
    assert s.loc["low", "n_censored"] == 0 and s.loc["low", "n_inside_at_step0"] == 3
    assert s.loc["high", "n_overshot"] == 1 and s.loc["low", "n_overshot"] == 0
    with pytest.raises(ValueError, match="censored"):
        summarise_steps(records.drop(columns="censored"))


def test_mia_auc_equals_sklearn_roc_auc_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for members_n, others_n in [(50, 250), (1, 7), (300, 300)]:
        members = np.round(rng.exponential(0.5, members_n), 1)  # rounding makes many ties
        others = np.round(rng.exponential(1.0, others_n), 1)
        truth = np.r_[np.ones(members_n), np.zeros(others_n)]
        expected = roc_auc_score(truth, -np.r_[members, others])
        assert loss_threshold_mia_auc(members, others) == pytest.approx(expected, abs=1e-12)


def test_mia_auc():
    assert loss_threshold_mia_auc([0.1, 0.2], [1.0, 2.0]) == 1.0
    assert loss_threshold_mia_auc([1.0, 2.0], [0.1, 0.2]) == 0.0
    assert loss_threshold_mia_auc([1.0, 1.0], [1.0, 1.0]) == 0.5
    assert loss_threshold_mia_auc([0.1, 2.0], [0.5, 1.0]) == 0.5
    gap = mia_auc_gap([0.1, 0.2], [1.0, 2.0], [[1.0, 2.0], [0.1, 2.0]], [[0.1, 0.2], [0.5, 1.0]])
    assert gap == {
        "auc_unlearned": 1.0,
        "auc_oracle": 0.25,
        "auc_oracle_sd": pytest.approx(math.sqrt(0.125)),
        "gap": 0.75,
    }


def test_forget_accuracy_gap():
    assert forget_accuracy_gap(0.9, [0.5, 0.7]) == pytest.approx(0.3)
