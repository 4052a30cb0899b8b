from __future__ import annotations

import math

import numpy as np
import pytest

from perinstance.theory import fit_log_trend, log_trend, predicted_unlearning_steps

CONSTANTS = dict(
    alpha_prime=2.0, c_lsi=3.0, eta=0.5, sigma2=4.0, c=1.0, gamma=0.0, epsilon=1.5, epsilon_irr=0.5
)


def test_formula_on_hand_numbers():
    # scale = 2 * 3 / (0.5 * 4) = 3; argument = (P + 0) / 1
    k = predicted_unlearning_steps(np.array([math.e, math.e**2]), **CONSTANTS)
    np.testing.assert_allclose(k, [3.0, 6.0])
    k = predicted_unlearning_steps(
        np.array([2.0]), **{**CONSTANTS, "c": 2.0, "gamma": 1.0, "epsilon_irr": 0.0, "epsilon": 0.5}
    )
    np.testing.assert_allclose(k, [3.0 * math.log(10.0)])


def test_monotone_in_privacy_loss():
    k = predicted_unlearning_steps(np.geomspace(1e-3, 1e3, 50), **{**CONSTANTS, "gamma": 0.5})
    assert np.all(np.diff(k) >= 0) and k[-1] > k[0]


def test_limits_give_zero_steps():
    # P -> 0 with gamma <= epsilon - epsilon_irr: the target is met at once
    k = predicted_unlearning_steps(np.array([0.0, 1e-9, 1.0]), **{**CONSTANTS, "gamma": 0.5})
    assert k[0] == 0.0 and k[1] == 0.0 and k[2] == pytest.approx(3.0 * math.log(1.5))


def test_errors():
    with pytest.raises(ValueError, match="epsilon_irr"):
        predicted_unlearning_steps(np.ones(2), **{**CONSTANTS, "epsilon": 0.5})
    with pytest.raises(ValueError, match="c_lsi"):
        predicted_unlearning_steps(np.ones(2), **{**CONSTANTS, "c_lsi": 0.0})
    with pytest.raises(ValueError, match="gamma"):
        predicted_unlearning_steps(np.ones(2), **{**CONSTANTS, "gamma": -1.0})
    with pytest.raises(ValueError, match=">= 0"):
        predicted_unlearning_steps(np.array([-1.0]), **CONSTANTS)


def test_fit_recovers_scale_and_offset():
    p = np.array([0.5, 2.0, 10.0, 80.0])
    fit = fit_log_trend(p, 120.0 * np.log(p) + 35.0)
    assert fit["scale"] == pytest.approx(120.0) and fit["offset"] == pytest.approx(35.0)
    assert fit["r2"] == pytest.approx(1.0) and fit["n"] == 4
    np.testing.assert_allclose(fit["predict"](np.array([1.0, math.e])), [35.0, 155.0])
    np.testing.assert_allclose(log_trend(p, 120.0, 35.0), fit["predict"](p))
    assert math.isnan(fit_log_trend(p, np.full(4, 7.0))["r2"])
    with pytest.raises(ValueError, match="> 0"):
        fit_log_trend(np.array([0.0, 1.0]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="identifiable"):
        fit_log_trend(np.ones(3), np.arange(3.0))
