from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from perinstance import proxies as P

# ----------------------------------------------------------------------------- EL2N


def test_el2n_known_values_and_seed_mean():
    c = 4
    labels = np.array([0, 1, 2])
    # row 0: softmax ~ onehot(0); row 1: uniform; row 2: huge logits that would overflow a naive exp
    confident = np.array(
        [[50.0, -50.0, -50.0, -50.0], [0.0, 0.0, 0.0, 0.0], [1000.0, 1000.0, 1000.0, 1000.0]]
    )
    uniform_el2n = np.sqrt((1 - 1 / c) ** 2 + (c - 1) / c**2)
    got = P.el2n([confident], labels)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, [0.0, uniform_el2n, uniform_el2n], atol=1e-12)
    # a second seed that is maximally wrong on row 0: distance sqrt(2) from onehot(0)
    wrong = confident.copy()
    wrong[0] = [-50.0, 50.0, -50.0, -50.0]
    np.testing.assert_allclose(
        P.el2n([confident, wrong], labels), [np.sqrt(2) / 2, uniform_el2n, uniform_el2n], atol=1e-12
    )
    np.testing.assert_allclose(P.el2n(confident, labels), got)  # a bare 2-D array is one seed


def test_el2n_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        P.el2n([np.zeros((2, 3))], np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="labels outside"):
        P.el2n([np.zeros((2, 3))], np.array([0, 3]))
    with pytest.raises(ValueError, match="non-finite"):
        P.el2n([np.array([[np.nan, 0.0]])], np.array([0]))


# ----------------------------------------------------------------------------- dynamics

# example 0: 1,0,1,0 -> 2 events; 1: 0,0,1,1 -> 0; 2: never correct; 3: 1,1,1 -> 0; 4: never presented
SEQUENCES = {0: [1, 0, 1, 0], 1: [0, 0, 1, 1], 2: [0, 0, 0], 3: [1, 1, 1]}
N = 5


def _records(shuffle: bool):
    step, example, correct = [], [], []
    for ex, seq in SEQUENCES.items():
        for k, c in enumerate(seq):
            step.append(10 * k + ex)
            example.append(ex)
            correct.append(bool(c))
    step, example, correct = np.array(step), np.array(example, dtype=np.int32), np.array(correct)
    order = np.random.default_rng(3).permutation(len(step)) if shuffle else np.argsort(step, kind="stable")
    return step[order], example[order], correct[order]


@pytest.mark.parametrize("shuffle", [False, True])
def test_forgetting_events_known_sequences(shuffle):
    events, never = P.forgetting_events(*_records(shuffle), n=N)
    np.testing.assert_array_equal(events, [2, 0, 0, 0, 0])
    np.testing.assert_array_equal(never, [False, False, True, False, True])


def test_forgetting_uses_step_order_not_array_order():
    # the same records, reversed in the arrays: 0 at step 0, then 1 -> a learning event, not forgetting
    events, _ = P.forgetting_events(np.array([5, 0]), np.array([0, 0]), np.array([True, False]), n=1)
    assert events[0] == 0
    events, _ = P.forgetting_events(np.array([0, 5]), np.array([0, 0]), np.array([True, False]), n=1)
    assert events[0] == 1


def test_forgetting_hardness_puts_never_learned_hardest():
    events, never = P.forgetting_events(*_records(True), n=N)
    h = P.forgetting_hardness([events], [never])
    np.testing.assert_array_equal(h, [2.0, 0.0, 3.0, 0.0, 3.0])
    # per-seed encoding, then the mean: seed 2 max is 5, so its never-learned get 6
    events2 = np.array([5, 1, 0, 0, 0])
    never2 = np.array([False, False, False, False, True])
    np.testing.assert_array_equal(
        P.forgetting_hardness([events, events2], [never, never2]), [3.5, 0.5, 1.5, 0.0, 4.5]
    )
    assert np.argmax(P.forgetting_hardness([events], [never])) == 2


def test_forgetting_rejects_bad_input():
    with pytest.raises(ValueError, match="0..2"):
        P.forgetting_events(np.array([0]), np.array([3]), np.array([True]), n=3)
    with pytest.raises(ValueError, match="equal length"):
        P.forgetting_events(np.array([0, 1]), np.array([0]), np.array([True]), n=3)
    with pytest.raises(ValueError, match="at least one"):
        P.forgetting_hardness([], [])


def test_learning_speed_and_hardness():
    speed = P.learning_speed(*_records(True), n=N)
    np.testing.assert_allclose(speed[:4], [0.5, 0.5, 0.0, 1.0])
    assert np.isnan(speed[4])  # never presented
    other = np.array([1.0, 0.0, 0.0, 1.0, 0.5])
    hard = P.learning_speed_hardness([speed, other])
    np.testing.assert_allclose(hard, [0.25, 0.75, 1.0, 0.0, 0.5])  # the NaN seed is skipped for row 4
    assert np.isnan(P.learning_speed_hardness([speed])[4])


def test_dynamics_vectorised_at_scale():
    # 2,000 examples x 50 shuffled epochs, checked against a direct per-example count
    rng = np.random.default_rng(0)
    n, epochs = 2000, 50
    example = np.concatenate([rng.permutation(n) for _ in range(epochs)]).astype(np.int32)
    step = np.arange(len(example)) // 100
    correct = rng.random(len(example)) < rng.random(n)[example]  # per-example skill
    events, never = P.forgetting_events(step, example, correct, n)
    for ex in rng.choice(n, 20, replace=False):
        seq = correct[example == ex]
        assert events[ex] == np.count_nonzero(seq[:-1] & ~seq[1:])
        assert never[ex] == (not seq.any())
        assert P.learning_speed(step, example, correct, n)[ex] == pytest.approx(seq.mean())


# ----------------------------------------------------------------------------- C-scores


def test_holdout_mask_sizes_determinism_and_independence():
    m0 = P.holdout_mask(1000, 0.7, model_id=0)
    assert m0.dtype == bool and m0.shape == (1000,) and m0.sum() == 700
    np.testing.assert_array_equal(m0, P.holdout_mask(1000, 0.7, model_id=0))
    m1 = P.holdout_mask(1000, 0.7, model_id=1)
    assert m1.sum() == 700 and not np.array_equal(m0, m1)
    assert not np.array_equal(m0, P.holdout_mask(1000, 0.7, model_id=0, seed=1))
    # independent subsets overlap like independent draws (~0.7 * 700 = 490)
    assert 440 < np.count_nonzero(m0 & m1) < 540
    assert P.holdout_mask(10, 0.25, 0).sum() == round(2.5)
    assert P.holdout_mask(10, 0.0, 0).sum() == 0 and P.holdout_mask(10, 1.0, 0).all()
    with pytest.raises(ValueError, match="fraction"):
        P.holdout_mask(10, 1.5, 0)


def test_cscore_holdout_toy_design():
    # 3 models x 4 examples; example 3 is seen by every model
    trained_on = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1]], dtype=bool)
    prob = np.array([[0.9, 0.2, 0.6, 0.5], [0.4, 0.9, 0.8, 0.5], [0.1, 0.6, 0.9, 0.5]])
    c, count = P.cscore_holdout(prob, trained_on)
    np.testing.assert_allclose(c[:3], [0.25, 0.4, 0.7])
    assert np.isnan(c[3])
    np.testing.assert_array_equal(count, [2, 2, 2, 0])
    np.testing.assert_allclose(P.cscore_hardness(c)[:3], [0.75, 0.6, 0.3])
    with pytest.raises(ValueError, match=r"\[M, n\]"):
        P.cscore_holdout(prob[:, :3], trained_on)
    bad = prob.copy()
    bad[1, 0] = 1.5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        P.cscore_holdout(bad, trained_on)


def test_cscore_holdout_with_generated_masks():
    n, models = 300, 12
    trained_on = np.stack([P.holdout_mask(n, 0.5, k, seed=4) for k in range(models)])
    prob = np.random.default_rng(0).random((models, n))
    c, count = P.cscore_holdout(prob, trained_on)
    np.testing.assert_array_equal(count, (~trained_on).sum(axis=0))
    j = int(np.argmax(count))
    assert c[j] == pytest.approx(prob[~trained_on[:, j], j].mean())


LABELS = np.array([6, 9, 9, 4, 1, 1, 2, 7])


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_published_cscores_valid_and_subset(tmp_path):
    scores = np.linspace(0.0, 1.0, len(LABELS))
    path = _write(tmp_path / P.PUBLISHED_CSCORES_FILE, labels=LABELS, scores=scores)
    np.testing.assert_allclose(P.load_published_cscores(path, LABELS), scores)
    got = P.load_published_cscores(path, LABELS, index=np.array([7, 0, 3]))
    np.testing.assert_allclose(got, scores[[7, 0, 3]])
    assert got.dtype == np.float64
    with pytest.raises(ValueError, match="0..7"):
        P.load_published_cscores(path, LABELS, index=np.array([8]))


def test_published_cscores_missing_file_names_resources(tmp_path):
    path = tmp_path / "resources" / P.PUBLISHED_CSCORES_FILE
    with pytest.raises(FileNotFoundError, match="resources/") as info:
        P.load_published_cscores(path, LABELS)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(labels=LABELS), "no key 'scores'"),
        (dict(scores=np.full(8, 0.5)), "no key 'labels'"),
        (dict(labels=LABELS[:7], scores=np.full(7, 0.5)), "7 scores"),
        (dict(labels=LABELS, scores=np.full(7, 0.5)), "differ in shape"),
        (dict(labels=LABELS, scores=np.full((8, 1), 0.5)), "1-D"),
        (
            dict(labels=LABELS, scores=np.array([0.5] * 7 + [1.2])),
            r"1 scores are non-finite or outside \[0, 1\]",
        ),
        (dict(labels=LABELS, scores=np.array([np.nan] + [0.5] * 7)), "1 scores are non-finite"),
        (dict(labels=LABELS, scores=np.array(["a"] * 8)), "numeric"),
    ],
)
def test_published_cscores_invalid_files(tmp_path, arrays, message):
    path = _write(tmp_path / "c.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        P.load_published_cscores(path, LABELS)


def test_published_cscores_label_mismatch_counted(tmp_path):
    wrong = LABELS.copy()
    wrong[[1, 4, 6]] = 0
    path = _write(tmp_path / "c.npz", labels=wrong, scores=np.full(8, 0.5))
    with pytest.raises(ValueError, match="3 of 8 labels differ"):
        P.load_published_cscores(path, LABELS)


def test_published_cscores_refuses_pickles(tmp_path):
    path = _write(tmp_path / "c.npz", labels=LABELS, scores=np.array([0.5] * 8, dtype=object))
    with pytest.raises(ValueError, match="object array"):
        P.load_published_cscores(path, LABELS)
    pickled = tmp_path / "p.npz"
    np.save(open(pickled, "wb"), np.array([{"scores": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        P.load_published_cscores(pickled, LABELS)
    single = tmp_path / "s.npy"
    np.save(single, np.full(8, 0.5))
    with pytest.raises(ValueError, match="not an .npz"):
        P.load_published_cscores(single, LABELS)
    junk = tmp_path / "j.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="readable"):
        P.load_published_cscores(junk, LABELS)


# ----------------------------------------------------------------------------- correlations


def _row(out, x, y, method):
    hit = out[(out.x == x) & (out.y == y) & (out.method == method)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_correlations_monotone_reversed_independent():
    rng = np.random.default_rng(0)
    n = 400
    a = rng.normal(size=n)
    table = pd.DataFrame({"a": a, "up": np.exp(a), "down": -(a**3), "noise": rng.normal(size=n)})
    out = P.correlations(table, ["a", "up", "down", "noise"], n_boot=200)
    assert list(out.columns) == [
        "x",
        "y",
        "method",
        "value",
        "ci_low",
        "ci_high",
        "ci_low_examples",
        "ci_high_examples",
        "resampled",
        "n",
        "n_seeds",
        "n_boot",
        "ci_level",
        "note",
    ]
    assert (out.n_seeds == 0).all() and (out.n_boot == 200).all() and (out.resampled == "examples").all()
    assert (out.ci_level == 0.95).all()
    # without per-seed columns the headline interval is the example bootstrap
    pd.testing.assert_series_equal(out.ci_low, out.ci_low_examples, check_names=False)
    assert len(out) == 6 * 2
    for method in ("spearman", "kendall"):
        r = _row(out, "a", "up", method)
        assert (r.value, r.ci_low, r.ci_high) == pytest.approx((1.0, 1.0, 1.0))
        r = _row(out, "a", "down", method)
        assert (r.value, r.ci_low, r.ci_high) == pytest.approx((-1.0, -1.0, -1.0))
        r = _row(out, "a", "noise", method)
        assert abs(r.value) < 0.15 and r.ci_low < 0 < r.ci_high and r.n == n


def test_correlations_match_scipy_and_are_seeded():
    rng = np.random.default_rng(1)
    n = 300
    x = rng.integers(0, 4, n).astype(float)  # heavy ties, like forgetting events
    table = pd.DataFrame({"x": x, "y": x + rng.normal(size=n)})
    out = P.correlations(table, ["x", "y"], n_boot=300, seed=5)
    assert _row(out, "x", "y", "spearman").value == pytest.approx(stats.spearmanr(table.x, table.y).statistic)
    assert _row(out, "x", "y", "kendall").value == pytest.approx(stats.kendalltau(table.x, table.y).statistic)
    pd.testing.assert_frame_equal(out, P.correlations(table, ["x", "y"], n_boot=300, seed=5))
    assert not out.equals(P.correlations(table, ["x", "y"], n_boot=300, seed=6))
    for method in ("spearman", "kendall"):
        r = _row(out, "x", "y", method)
        assert r.ci_low < r.value < r.ci_high and r.note == ""


def test_spearman_bootstrap_equals_reranking_the_resample():
    rng = np.random.default_rng(2)
    n = 60
    x, y = rng.integers(0, 5, n).astype(float), rng.normal(size=n)
    boot = P._spearman_bootstrap(x, y, 7, np.random.default_rng(9))
    draws = np.random.default_rng(9).integers(0, n, size=(7, n))
    np.testing.assert_allclose(boot, [stats.spearmanr(x[i], y[i]).statistic for i in draws])


def test_correlations_drop_nans_pairwise():
    rng = np.random.default_rng(3)
    n = 100
    a = rng.normal(size=n)
    b, c = a + rng.normal(size=n), a.copy()
    b[:10] = np.nan
    c[5:25] = np.nan
    out = P.correlations(pd.DataFrame({"a": a, "b": b, "c": c}), ["a", "b", "c"], n_boot=50)
    assert _row(out, "a", "b", "spearman").n == 90
    assert _row(out, "a", "c", "kendall").n == 80
    assert _row(out, "b", "c", "spearman").n == 75
    assert _row(out, "a", "c", "spearman").value == pytest.approx(1.0)
    keep = ~np.isnan(b)
    assert _row(out, "a", "b", "spearman").value == pytest.approx(stats.spearmanr(a[keep], b[keep]).statistic)


def test_correlations_kendall_subsample_noted():
    rng = np.random.default_rng(4)
    n = 600
    a = rng.normal(size=n)
    table = pd.DataFrame({"a": a, "b": a + rng.normal(size=n)})
    full = P.correlations(table, ["a", "b"], n_boot=200)
    sub = P.correlations(table, ["a", "b"], n_boot=200, kendall_rows=150)
    k_full, k_sub = _row(full, "a", "b", "kendall"), _row(sub, "a", "b", "kendall")
    assert k_sub.value == pytest.approx(k_full.value)  # the estimate always uses every row
    assert "150 of 600" in k_sub.note and k_full.note == ""
    # rescaling keeps the interval sized for n rows, not for 150
    width_full, width_sub = k_full.ci_high - k_full.ci_low, k_sub.ci_high - k_sub.ci_low
    assert 0.6 < width_sub / width_full < 1.6
    assert _row(sub, "a", "b", "spearman").note == ""


def test_correlations_degenerate_and_bad_input():
    table = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "const": [1.0] * 4, "few": [1.0, np.nan, np.nan, 2.0]})
    out = P.correlations(table, ["a", "const", "few"], n_boot=20)
    r = _row(out, "a", "const", "spearman")
    assert np.isnan(r.value) and np.isnan(r.ci_low) and "constant" in r.note
    r = _row(out, "a", "few", "kendall")
    assert r.n == 2 and np.isnan(r.value) and "fewer than 3" in r.note
    with pytest.raises(KeyError, match="missing"):
        P.correlations(table, ["a", "missing"])
    with pytest.raises(ValueError, match="ci"):
        P.correlations(table, ["a", "const"], ci=1.5)


# ------------------------------------------------------------------------- seeds in the correlation bootstrap


def _seeded_table(
    n_seeds: int, n: int = 300, seed_noise: float = 0.3, identical: bool = False, rng_seed: int = 7
):
    """privacy_loss = mean of privacy_loss_seed<N>; a proxy (el2n) that tracks the common part."""
    rng = np.random.default_rng(rng_seed)
    common = rng.normal(size=n)
    first = common + seed_noise * rng.normal(size=n)
    per_seed = [first if identical else common + seed_noise * rng.normal(size=n) for _ in range(n_seeds)]
    table = pd.DataFrame({f"privacy_loss_seed{s}": v for s, v in enumerate(per_seed)})
    table["privacy_loss"] = np.mean(per_seed, axis=0)
    table["el2n"] = common + 0.7 * rng.normal(size=n)
    table["forgetting_events"] = np.clip(
        np.round(common + rng.normal(size=n)), 0, None
    )  # ties, like the real one
    return table


_COLS = ["privacy_loss", "el2n", "forgetting_events"]


def test_per_seed_columns_in_seed_order_and_only_exact_names():
    table = pd.DataFrame(
        {
            c: [1.0]
            for c in [
                "privacy_loss",
                "privacy_loss_seed10",
                "privacy_loss_seed2",
                "privacy_loss_4alpha_seed0",
                "privacy_loss_online",
                "el2n",
            ]
        }
    )
    found = P.per_seed_columns(table, ["privacy_loss", "privacy_loss_online", "el2n"])
    assert found == {"privacy_loss": ["privacy_loss_seed2", "privacy_loss_seed10"]}


@pytest.mark.parametrize("kendall_rows", [5000, 120])
def test_one_seed_two_level_bootstrap_is_the_example_bootstrap(kendall_rows):
    table = _seeded_table(1)
    seeds = P.per_seed_columns(table, _COLS)
    out = P.correlations(table, _COLS, n_boot=150, seed=3, kendall_rows=kendall_rows, seed_columns=seeds)
    plain = P.correlations(table, _COLS, n_boot=150, seed=3, kendall_rows=kendall_rows)
    for method in ("spearman", "kendall"):
        r, p = _row(out, "privacy_loss", "el2n", method), _row(plain, "privacy_loss", "el2n", method)
        assert r.n_seeds == 1 and r.resampled == "seeds of privacy_loss + examples"
        # bit-identical: the seed draw of one seed is that seed, the example draws are shared
        assert (r.value, r.ci_low, r.ci_high) == (p.value, p.ci_low, p.ci_high)
        assert (r.ci_low_examples, r.ci_high_examples) == (p.ci_low, p.ci_high)
    # the same seed gives the same numbers
    pd.testing.assert_frame_equal(
        out, P.correlations(table, _COLS, n_boot=150, seed=3, kendall_rows=kendall_rows, seed_columns=seeds)
    )


def test_identical_seeds_reduce_to_the_example_bootstrap():
    table = _seeded_table(4, identical=True)
    out = P.correlations(table, _COLS, n_boot=200, seed=1, seed_columns=P.per_seed_columns(table, _COLS))
    for y in ("el2n", "forgetting_events"):
        for method in ("spearman", "kendall"):
            r = _row(out, "privacy_loss", y, method)
            assert r.n_seeds == 4
            np.testing.assert_allclose(
                [r.ci_low, r.ci_high], [r.ci_low_examples, r.ci_high_examples], rtol=1e-12
            )
    r = _row(out, "el2n", "forgetting_events", "spearman")
    assert r.n_seeds == 0 and r.resampled == "examples" and r.ci_low == r.ci_low_examples


def test_seeds_that_disagree_widen_the_interval():
    table = _seeded_table(3, seed_noise=2.0)
    out = P.correlations(table, _COLS, n_boot=300, seed=0, seed_columns=P.per_seed_columns(table, _COLS))
    for method in ("spearman", "kendall"):
        r = _row(out, "privacy_loss", "el2n", method)
        assert r.ci_low <= r.value <= r.ci_high
        assert r.ci_high - r.ci_low > 1.5 * (r.ci_high_examples - r.ci_low_examples)
    # a proxy pair without seeds is untouched by the seed resampling
    plain = P.correlations(table, _COLS, n_boot=300, seed=0)
    pd.testing.assert_frame_equal(
        out[(out.x == "el2n")].reset_index(drop=True), plain[(plain.x == "el2n")].reset_index(drop=True)
    )
    pd.testing.assert_series_equal(out.ci_low_examples, plain.ci_low, check_names=False)


def test_two_level_spearman_equals_reranking_the_seed_and_example_resample():
    table = _seeded_table(3, n=40, seed_noise=1.0)
    xs = table[["privacy_loss_seed0", "privacy_loss_seed1", "privacy_loss_seed2"]].to_numpy().T
    y = table["el2n"].to_numpy()
    draws = P._seed_draws(3, 9, np.random.default_rng(4))
    boot = P._spearman_bootstrap_seeds(xs, y[None], draws, np.random.default_rng(5))
    rows = np.random.default_rng(5).integers(0, 40, size=(9, 40))
    expected = [stats.spearmanr(xs[d].mean(axis=0)[i], y[i]).statistic for d, i in zip(draws, rows)]
    np.testing.assert_allclose(boot, expected, rtol=1e-10)


def test_seed_columns_are_checked():
    table = _seeded_table(2)
    seeds = P.per_seed_columns(table, _COLS)
    with pytest.raises(ValueError, match="not the mean of its per-seed columns"):
        P.correlations(
            table.assign(privacy_loss=table.privacy_loss + 1.0), _COLS, n_boot=5, seed_columns=seeds
        )
    with pytest.raises(KeyError, match="privacy_loss_seed9"):
        P.correlations(table, _COLS, n_boot=5, seed_columns={"privacy_loss": ["privacy_loss_seed9"]})
    with pytest.raises(ValueError, match="not among the correlated columns"):
        P.correlations(table, ["el2n", "forgetting_events"], n_boot=5, seed_columns=seeds)
    two = table.assign(el2n_seed0=table.el2n, el2n_seed1=table.el2n, el2n_seed2=table.el2n)
    with pytest.raises(ValueError, match="different numbers of seeds"):
        P.correlations(two, _COLS, n_boot=5, seed_columns=P.per_seed_columns(two, _COLS))
    # a NaN in one seed drops that example from the pairs with privacy loss only
    table.loc[0, "privacy_loss_seed1"] = np.nan
    out = P.correlations(table, _COLS, n_boot=5, seed_columns=seeds)
    assert _row(out, "privacy_loss", "el2n", "spearman").n == len(table) - 1
    assert _row(out, "el2n", "forgetting_events", "spearman").n == len(table)
