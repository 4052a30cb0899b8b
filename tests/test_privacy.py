from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config
from opacus.accountants.analysis import rdp as opacus_rdp

from perinstance import io
from perinstance.grad_norms import compute_checkpoint_norms, merge_checkpoint_norms, norm_part_steps
from perinstance.privacy import (
    StepGroups,
    checkpoint_step_groups,
    epoch_step_groups,
    noise_multiplier,
    online_norms,
    online_rdp,
    per_instance_rdp,
    rdp_orders,
    subsampled_gaussian_rdp,
    worst_case_rdp,
)
from perinstance.privacy_scores import privacy_tables
from perinstance.scores import merge_score_tables
from perinstance.training import train_run

ORDERS = np.array([1.5, 2.0, 8.0, 32.0])


def test_orders_always_hold_alpha_and_four_alpha():
    assert rdp_orders(3, [2]).tolist() == [2.0, 3.0, 12.0]
    with pytest.raises(ValueError, match="privacy.orders"):
        rdp_orders(2, [1.0])


def test_full_batch_reduces_to_gaussian_closed_form():
    z = np.array([0.5, 1.0, 3.0, 40.0])
    rdp = subsampled_gaussian_rdp(1.0, z, ORDERS, "exact")
    np.testing.assert_allclose(rdp, ORDERS[None, :] / (2 * z[:, None] ** 2), rtol=1e-10)


def test_float32_noise_multipliers_are_handled_in_float64():
    z = np.array([17.3, 3.0], dtype=np.float32)  # below the expansion switch of every order here
    expected = [
        opacus_rdp.compute_rdp(q=0.02, noise_multiplier=float(v), steps=1, orders=ORDERS.tolist()) for v in z
    ]
    np.testing.assert_allclose(subsampled_gaussian_rdp(0.02, z, ORDERS, "exact"), expected, rtol=1e-12)


def test_huge_noise_multipliers_follow_the_quadratic_asymptote():
    """Tiny gradient norms: Opacus' series lose precision (or fail, for fractional orders) out there."""
    q, z = 0.016, np.array([5e2, 2e3, 1e6, 3e9])
    rdp = subsampled_gaussian_rdp(q, z, np.array([1.5, 2.0]), "exact")
    closed_form_order2 = np.log1p(q * q * np.expm1(1.0 / z**2))  # exact for alpha = 2
    np.testing.assert_allclose(rdp[:, 1], closed_form_order2, rtol=1e-7)
    np.testing.assert_allclose(rdp[:, 0] * z**2, 1.5 * q * q / 2, rtol=1e-5)  # eps -> alpha q^2 / (2 z^2)


# Every order the project uses (privacy.orders defaults, alpha = 2 and 4 alpha, the robustness orders) and
# the sample rates of its configs: mnist5k (64/4000 and its 50-example forget sets), the tiny CI config
# (32/180), CIFAR-10 at B = 128, full batch.
PROJECT_ORDERS = rdp_orders(2, [1.25, 1.5, 2, 3, 4, 8, 16, 32, 64] + [1.5, 8, 32])
RATES = [
    64 / 4000,
    128 / 50000,
    1.0,
    pytest.param(64 / 3950, marks=pytest.mark.slow),
    pytest.param(32 / 180, marks=pytest.mark.slow),
]  # the slow ones: Opacus' fractional orders take 30-80 s on the whole grid, so they check every third z
THINNED = {64 / 3950, 32 / 180}


def _dense_z():
    """1e-2 .. 1e4, 200 points per decade.

    Plus 1,500 across the regime change of the orders (z ~ 0.3 .. 5).
    """
    return np.unique(
        np.concatenate([np.logspace(-2, 4, 1201), np.logspace(np.log10(0.3), np.log10(5.0), 1500)])
    )


@pytest.mark.parametrize("q", RATES)
def test_interpolation_meets_its_bound_on_a_dense_grid(q):
    """The bound the docstring states, on 2,200-2,700 z per order (every third at the slow rates)
    against Opacus (the windows where the old 1000-points-per-decade log-log grid was off by 4e-4 at
    order 8, 9e-3 at 32 and 3e-2 at 64)."""
    from perinstance.privacy import INTERPOLATION_RTOL, asymptotic_switch

    z = _dense_z()[:: 3 if q in THINNED else 1]
    interpolated = subsampled_gaussian_rdp(q, z, PROJECT_ORDERS, "interpolate")
    for j, order in enumerate(PROJECT_ORDERS):
        near = z < asymptotic_switch(q, order)  # beyond it both methods share the 1/z^2 expansion
        exact = np.array(
            [
                opacus_rdp.compute_rdp(q=q, noise_multiplier=float(v), steps=1, orders=[order])[0]
                for v in z[near]
            ]
        )
        relative = np.abs(interpolated[near, j] / exact - 1)
        enough = 700 if q in THINNED else 2000
        assert near.sum() > enough and relative.max() < INTERPOLATION_RTOL == 1e-4, (order, relative.max())
    np.testing.assert_array_equal(interpolated, subsampled_gaussian_rdp(q, z, PROJECT_ORDERS, "interpolate"))


def test_interpolation_matches_exact_in_auto_mode():
    z = np.random.default_rng(0).uniform(0.3, 300.0, size=501)  # > 500 values: auto interpolates
    exact = subsampled_gaussian_rdp(0.016, z, ORDERS, "exact")
    np.testing.assert_allclose(subsampled_gaussian_rdp(0.016, z, ORDERS, "auto"), exact, rtol=1e-4)


def test_reference_values_match_high_precision_quadrature():
    """`exact` (Opacus below the switch, the 1/z^2 expansion beyond) against A_alpha integrated at 40 digits.

    Plain Opacus is off by 6e-3 at order 1.25, q = 128/50000, z = 1000 (its fractional-order series)."""
    mp = pytest.importorskip("mpmath")
    from perinstance.privacy import asymptotic_switch

    mp.mp.dps = 40

    def reference(q, z, order):
        q, s, a = mp.mpf(q), mp.mpf(z), mp.mpf(order)

        def integrand(x):
            return mp.npdf(x, 0, s) * (1 - q + q * mp.exp((2 * x - 1) / (2 * s * s))) ** a

        return float(mp.log(mp.quad(integrand, [-mp.inf, -10 * s, 0, 0.5, 10 * s, mp.inf])) / (a - 1))

    for q in (128 / 50000, 32 / 180):
        for order in (1.25, 2.0, 64.0):
            switch = asymptotic_switch(q, order)
            zs = [0.97 * switch, 1.03 * switch, 1e3, 1e4]
            got = subsampled_gaussian_rdp(q, np.array(zs), np.array([order]), "exact")[:, 0]
            np.testing.assert_allclose(
                got, [reference(q, z, order) for z in zs], rtol=1e-5, err_msg=f"{q} {order}"
            )


def test_zero_norm_costs_nothing():
    z = noise_multiplier(np.array([0.0, 1.0]), lr=0.1, batch_size=10, beta=100)
    assert math.isinf(z[0])
    rdp = subsampled_gaussian_rdp(0.1, z, ORDERS)
    assert np.all(rdp[0] == 0) and np.all(rdp[1] > 0)


def test_noise_multiplier_formula():
    # tau = sqrt(2 lr / beta), Delta = lr g / B
    lr, beta, batch, g = 0.05, 200.0, 64, 30.0
    assert noise_multiplier(np.array([g]), lr, batch, beta)[0] == pytest.approx(
        math.sqrt(2 * lr / beta) / (lr * g / batch)
    )


def test_every_norm_at_the_clip_equals_opacus_worst_case():
    """Per-instance accounting with all norms = C is the data-independent DP-SGD accounting."""
    lr = np.full(100, 0.05)
    used, groups = checkpoint_step_groups([0, 10, 40, 100], lr)
    clip, batch, n, beta = 2.0, 50, 1000, 300.0
    norms = np.full((7, len(used)), 5.0)  # above the clip
    per_instance = per_instance_rdp(
        norms,
        groups,
        sample_rate=batch / n,
        batch_size=batch,
        beta=beta,
        orders=ORDERS,
        clip=clip,
        method="exact",
    )
    sigma = batch * math.sqrt(2 / (0.05 * beta)) / clip
    expected = opacus_rdp.compute_rdp(q=batch / n, noise_multiplier=sigma, steps=100, orders=ORDERS.tolist())
    np.testing.assert_allclose(per_instance, np.tile(expected, (7, 1)), rtol=1e-10)
    worst, epsilon, _ = worst_case_rdp(
        np.full(len(used), clip),
        groups,
        sample_rate=batch / n,
        batch_size=batch,
        beta=beta,
        orders=ORDERS,
        delta=1e-5,
    )
    np.testing.assert_allclose(worst, expected, rtol=1e-10)
    assert epsilon == pytest.approx(
        opacus_rdp.get_privacy_spent(orders=ORDERS.tolist(), rdp=expected, delta=1e-5)[0]
    )


def test_privacy_loss_grows_with_the_gradient_norm():
    lr = np.full(30, 0.1)
    used, groups = checkpoint_step_groups([0, 10, 20, 30], lr)
    norms = np.linspace(0.1, 50, 40)[:, None].repeat(len(used), axis=1)
    rdp = per_instance_rdp(norms, groups, sample_rate=0.05, batch_size=32, beta=100.0, orders=ORDERS)
    assert np.all(np.diff(rdp, axis=0) > 0)


@pytest.mark.parametrize("include_step0", [False, True])
@pytest.mark.parametrize("steps", [[0, 8, 16, 32, 63, 126, 189], [0, 63, 126, 189], [63, 189]])
def test_checkpoint_weights_sum_to_the_training_steps(include_step0, steps):
    lr = np.concatenate([np.full(100, 0.1), np.full(89, 0.01)])
    used, groups = checkpoint_step_groups(steps, lr, include_step0=include_step0)
    assert groups.total_steps == len(lr)
    assert 189 not in [steps[u] for u in used]  # the final weights stand for no step
    assert (0 in [steps[u] for u in used]) == (include_step0 and 0 in steps)


def test_checkpoint_stands_for_the_steps_until_the_next():
    lr = np.concatenate([np.full(50, 0.1), np.full(50, 0.01)])
    used, groups = checkpoint_step_groups([0, 10, 60, 100], lr, include_step0=True)
    assert [c.tolist() for c in groups.counts] == [[10], [10, 40], [40]]
    assert [sorted(lrs.tolist()) for lrs in groups.lrs] == [[0.1], [0.01, 0.1], [0.01]]
    _, without0 = checkpoint_step_groups([0, 10, 60, 100], lr)
    assert [c.sum() for c in without0.counts] == [60, 40]  # the first used checkpoint absorbs steps 0..9


def test_smooth_schedules_are_summarised_to_few_levels():
    lr = 0.1 * 0.5 * (1 + np.cos(np.linspace(0, np.pi, 200)))
    groups = epoch_step_groups(lr, 100, max_lr_levels=4)
    assert [len(lrs) for lrs in groups.lrs] == [4, 4] and groups.total_steps == 200
    np.testing.assert_allclose(
        [np.dot(lrs, c) for lrs, c in zip(groups.lrs, groups.counts)], [lr[:100].sum(), lr[100:].sum()]
    )


def test_online_norms_average_per_epoch_and_fill_gaps():
    # 3 examples, 2 steps per epoch, 3 epochs; example 2 is not drawn in epoch 1, example 1 not in epoch 0
    step = np.array([0, 1, 0, 2, 3, 3, 4, 5, 5])
    example = np.array([0, 0, 2, 0, 1, 0, 0, 1, 2])
    norm = np.array([1.0, 3.0, 5.0, 4.0, 6.0, 8.0, 7.0, 9.0, 2.0])
    values = online_norms(step, example, norm, n=3, steps_per_epoch=2, epochs=3)
    np.testing.assert_allclose(values, [[2.0, 6.0, 7.0], [6.0, 6.0, 9.0], [5.0, 5.0, 2.0]])
    with pytest.raises(ValueError, match="batch_grad_norms"):
        online_norms(step, example, np.full(9, np.nan), n=3, steps_per_epoch=2, epochs=3)


def test_online_rdp_composes_each_epochs_mean_norm_over_its_steps():
    # Full-batch sampling (B = n = 3): each step is the Gaussian mechanism with z = B sqrt(2/(lr beta)) / g,
    # whose RDP is alpha / (2 z^2) = alpha lr beta g^2 / (4 B^2); each epoch has 2 steps at its mean norm.
    dynamics = {
        "presentation_step": np.array([0, 1, 0, 2, 3, 3, 4, 5, 5]),
        "presentation_example": np.array([0, 0, 2, 0, 1, 0, 0, 1, 2]),
        "presentation_grad_norm": np.array([1.0, 3.0, 5.0, 4.0, 6.0, 8.0, 7.0, 9.0, 2.0], dtype=np.float32),
        "lr": np.full(6, 0.1),
        "steps_per_epoch": np.int64(2),
        "batch_size": np.int64(3),
        "train_index": np.arange(3),
    }
    epoch_means = np.array([[2.0, 6.0, 7.0], [6.0, 6.0, 9.0], [5.0, 5.0, 2.0]])
    expected = [(2 * order * 0.1 * 200 * epoch_means**2 / (4 * 9)).sum(axis=1) for order in (2.0, 8.0)]
    got = online_rdp(dynamics, beta=200, orders=np.array([2.0, 8.0]))
    np.testing.assert_allclose(got, np.stack(expected, axis=1), rtol=1e-10)


def test_bad_norms_are_rejected():
    groups = StepGroups([np.array([0.1])], [np.array([5])])
    kwargs = dict(sample_rate=0.1, batch_size=8, beta=10.0, orders=ORDERS)
    with pytest.raises(ValueError, match=r"\[n, 1\]"):
        per_instance_rdp(np.ones((3, 2)), groups, **kwargs)
    with pytest.raises(ValueError, match="finite"):
        per_instance_rdp(np.array([[np.nan]]), groups, **kwargs)


@pytest.fixture(scope="module")
def tiny_privacy(tmp_path_factory):
    config = tiny_config()
    root = tmp_path_factory.mktemp("privacy")
    runs = []
    for seed in (0, 1):
        run = train_run(config, seed, root / f"seed{seed}", progress=False)
        runs.append(
            (seed, run, compute_checkpoint_norms(config, run, root / f"norms{seed}.npz", progress=False))
        )
    return config, runs


def test_checkpoint_norms_file(tiny_privacy):
    config, runs = tiny_privacy
    norms = io.load_npz(runs[0][2])
    assert norms["norms"].shape == (180, len(norms["checkpoint_step"]))
    assert norms["checkpoint_step"][0] == 0 and np.all(np.diff(norms["checkpoint_step"]) > 0)
    assert np.all(norms["norms"] > 0)


def test_norm_parts_share_the_checkpoints_round_robin():
    steps = np.array([0, 2, 4, 8, 12, 16, 20])
    parts = [norm_part_steps(steps, i, 3).tolist() for i in range(3)]
    assert parts == [[0, 8, 20], [2, 12], [4, 16]]
    with pytest.raises(ValueError, match="privacy.norm_jobs"):
        norm_part_steps(steps, 3, 3)


def test_merged_norm_parts_equal_one_job_bit_for_bit(tiny_privacy, tmp_path):
    config, runs = tiny_privacy
    _, run, whole = runs[0]
    parts = [
        compute_checkpoint_norms(config, run, tmp_path / f"part{i}.npz", progress=False, part=i, parts=3)
        for i in range(3)
    ]
    assert sum(len(io.load_npz(p)["checkpoint_step"]) for p in parts) == len(
        io.load_npz(whole)["checkpoint_step"]
    )
    merged = io.load_npz(merge_checkpoint_norms(run, parts[::-1], tmp_path / "norms.npz"))
    expected = io.load_npz(whole)
    assert merged.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(merged[key], expected[key], err_msg=key)
    with pytest.raises(ValueError, match="cover checkpoints"):
        merge_checkpoint_norms(run, parts[:2], tmp_path / "short.npz")
    with pytest.raises(ValueError, match="share checkpoints"):
        merge_checkpoint_norms(run, [parts[0], parts[0], parts[1], parts[2]], tmp_path / "twice.npz")
    with pytest.raises(ValueError, match="does not belong"):
        merge_checkpoint_norms(runs[1][1], parts, tmp_path / "other.npz")


def test_privacy_tables_on_tiny_runs(tiny_privacy):
    config, runs = tiny_privacy
    tables = privacy_tables(config, runs)
    table = tables["privacy"]
    assert len(table) == 180 and table["index"].is_unique
    for column in ("privacy_loss", "privacy_loss_4alpha", "privacy_loss_online"):
        assert np.isfinite(table[column]).all() and table[column].std() > 0
    assert (table["privacy_loss_4alpha"] > table["privacy_loss"]).all()  # RDP grows with the order
    np.testing.assert_allclose(
        table["privacy_loss"], (table["privacy_loss_seed0"] + table["privacy_loss_seed1"]) / 2
    )
    long = tables["long"]
    assert set(long["estimator"]) == {"checkpoint", "online"} and set(long["seed"]) == {0, 1}
    worst = tables["worst_case"]
    # the max observed norm bounds every example: the worst case dominates each per-instance value
    per_seed0 = long[(long["seed"] == 0) & (long["estimator"] == "checkpoint") & (long["order"] == 2.0)]
    assert per_seed0["rdp"].max() <= worst[(worst["seed"] == 0) & (worst["order"] == 2.0)]["rdp"].iloc[0] * (
        1 + 1e-9
    )


def test_merge_score_tables(tmp_path):
    a = pd.DataFrame({"index": [3, 1, 2], "label": [0, 1, 1], "p": [0.1, 0.2, 0.3]})
    b = pd.DataFrame({"index": [1, 2, 3], "label": [1, 1, 0], "el2n": [1.0, 2.0, 3.0]})
    io.save_table(a, tmp_path / "a.parquet")
    io.save_table(b, tmp_path / "b.csv")
    merged = merge_score_tables([tmp_path / "a.parquet", tmp_path / "b.csv"])
    assert merged["index"].tolist() == [1, 2, 3] and merged["el2n"].tolist() == [1.0, 2.0, 3.0]
    io.save_table(b.assign(label=[0, 1, 0]), tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="other examples or labels"):
        merge_score_tables([tmp_path / "a.parquet", tmp_path / "bad.csv"])
    with pytest.raises(ValueError, match="repeats columns"):
        merge_score_tables([tmp_path / "a.parquet", tmp_path / "a.parquet"])


def test_top_overlap():
    from perinstance.robustness import top_overlap

    a = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    assert top_overlap(a, a, 2) == 1.0
    assert top_overlap(a, -a, 2) == 0.0
    assert top_overlap(a, np.array([5.0, 1.0, 3.0, 2.0, 4.0]), 2) == 0.5


def test_robustness_table_recomputes_variants_from_stored_norms(tiny_privacy):
    from perinstance.robustness import robustness_table

    config, runs = tiny_privacy
    table = robustness_table(config, runs, betas=[config["privacy"]["beta"], 50.0], orders=[2.0, 8.0])
    variants = set(zip(table["factor"], table["variant"]))
    # the configured beta and alpha are the reference itself and are skipped
    assert ("accounting beta", "beta=50") in variants and ("accounting beta", "beta=200") not in variants
    assert ("Renyi order", "alpha=8") in variants and ("Renyi order", "alpha=2") not in variants
    assert {
        ("checkpoints", "step 0 included"),
        ("seeds", "seed 0 vs seed 1"),
        ("estimator", "online"),
    } <= variants
    assert table["spearman"].between(-1, 1).all() and table["top_m_overlap"].between(0, 1).all()
    # privacy_tables' mean and per-seed columns agree with the reference the table compares against
    privacy = privacy_tables(config, runs)["privacy"]
    from scipy.stats import spearmanr

    seeds = table[table["factor"] == "seeds"].iloc[0]
    assert seeds["spearman"] == pytest.approx(
        spearmanr(privacy["privacy_loss_seed0"], privacy["privacy_loss_seed1"])[0]
    )
    online = table[table["factor"] == "estimator"].iloc[0]
    assert online["spearman"] == pytest.approx(
        spearmanr(privacy["privacy_loss_online"], privacy["privacy_loss"])[0]
    )
