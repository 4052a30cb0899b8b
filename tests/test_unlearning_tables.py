"""The per-example unlearning table and the fitted trend's exclusions, on hand-built runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from perinstance import io
from perinstance.steps import difficulty_tables, load_oracle_evaluations, theory_fit, unlearning_examples


@pytest.fixture
def config():
    config = tiny_config()
    config["unlearning"]["gap_budgets"] = [10, 20]
    config["oracles"].update(tol_abs=0.1, z=2.0, consecutive=2)
    return config


def _oracles(root, score, group, index, losses):
    paths = []
    for r, row in enumerate(losses):
        path = root / "oracles" / f"{score}_{group}_{r}.npz"  # the file names itself; its path says nothing
        io.save_npz(
            path,
            forget_index=np.asarray(index),
            forget_losses=np.asarray(row, dtype=np.float64),
            score=np.array(score),
            group=np.array(group),
            replicate=np.int64(r),
        )
        paths.append(path)
    return paths


def _records(root, method, score, group, seed, index, losses, steps=(0, 10, 20)):
    frame = pd.DataFrame(
        [
            {"step": s, "index": i, "loss": loss, "phi": 0.0, "correct": True}
            for s, row in zip(steps, losses)
            for i, loss in zip(index, row)
        ]
    )
    path = root / "unlearn" / f"{method}_{score}_{group}_{seed}_forget.parquet"
    io.save_table(frame.assign(method=method, score=score, group=group, seed=seed, original_seed=seed), path)
    return path


def _scores(index):
    return pd.DataFrame(
        {
            "index": index,
            "label": 0,
            "privacy_loss_4alpha": np.arange(1.0, len(index) + 1),
            "privacy_loss_4alpha_seed0": np.arange(1.0, len(index) + 1) * 2,
            "el2n": np.arange(len(index))[::-1] * 1.0,
        }
    )


def test_per_example_table_by_hand(tmp_path, config):
    index = [7, 3]
    # oracles: example 7 centre 1.0 (sd 0 -> band tol_abs 0.1); example 3 centre 2.0
    oracles = _oracles(tmp_path, "privacy_loss", "high", index, [[1.0, 2.0], [1.0, 2.0]])
    # example 7: loss 3 -> 2 -> 1 (gap 2 -> 1 -> 0); example 3 sits at its centre from step 0
    records = _records(
        tmp_path, "finetune", "privacy_loss", "high", 0, index, [[3.0, 2.0], [2.0, 2.0], [1.0, 2.0]]
    )
    table = unlearning_examples(
        config,
        [records],
        oracles,
        _scores([3, 7]),
        pd.DataFrame({"score": ["privacy_loss"], "group": ["high"], "index": [7]}),
    )
    row = table.set_index("index")
    assert row.loc[7, "oracle_center"] == 1.0 and row.loc[7, "gap_step0"] == 2.0
    assert not row.loc[7, "inside_at_step0"] and row.loc[3, "inside_at_step0"]
    assert row.loc[7, "remaining_gap_10"] == 0.5 and row.loc[7, "remaining_gap_20"] == 0.0
    assert row.loc[7, "mean_gap_20"] == pytest.approx((1 + 0.5) / 2 * 10 / 20 + (0.5 + 0) / 2 * 10 / 20)
    # one inside evaluation (step 20) of the two consecutive ones needed: censored at the last step
    assert row.loc[7, "censored"] and row.loc[7, "steps"] == 20
    assert np.isnan(row.loc[3, "remaining_gap_20"])  # nothing to close: no gap statistic
    assert row.loc[7, "privacy_loss_4alpha"] == 2.0 and row.loc[7, "privacy_loss_4alpha_own_seed"] == 4.0


def test_oracles_of_other_examples_are_refused(tmp_path, config):
    oracles = _oracles(tmp_path, "privacy_loss", "high", [1, 2], [[1.0, 1.0]])
    records = _records(tmp_path, "finetune", "privacy_loss", "high", 0, [7, 3], [[3.0, 2.0]] * 3)
    with pytest.raises(ValueError, match="evaluated on other examples"):
        unlearning_examples(config, [records], oracles, _scores([3, 7]), pd.DataFrame())


def test_difficulty_tables_pool_only_examples_that_needed_unlearning(config):
    rng = np.random.default_rng(0)
    n = 60
    p = rng.lognormal(size=n)
    frame = pd.DataFrame(
        {
            "method": "finetune",
            "score": "privacy_loss",
            "group": "g",
            "seed": 0,
            "index": np.arange(n),
            "inside_at_step0": np.arange(n) < 10,
            "steps": 20,
            "censored": False,
            "mean_gap_20": np.log(p),
            "remaining_gap_20": np.log(p),
            "privacy_loss_4alpha": p,
            "privacy_loss_4alpha_own_seed": p,
            "el2n": rng.normal(size=n),
        }
    )
    config["proxies"]["bootstrap"] = 50
    tables = difficulty_tables(config, frame)
    row = (
        tables["correlations"].query("difficulty == 'mean_gap_20' and score == 'privacy_loss_4alpha'").iloc[0]
    )
    assert row["n_units"] == 50 and row["n_inside_at_step0"] == 10 and row["rho"] == pytest.approx(1.0)
    everyone = tables["correlations"].query(
        "difficulty == 'needs_unlearning' and score == 'privacy_loss_4alpha'"
    )
    assert everyone["n_units"].iloc[0] == 60  # which examples need unlearning: over every forget example
    survival = tables["survival"]
    assert survival["n_examples"].iloc[0] == 50 and survival["survival"].iloc[-1] == 0.0


def _runs(groups):
    rows = []
    for group, p, inside, steps, censored in groups:
        for seed, k in enumerate(steps):
            rows.append(
                {
                    "method": "finetune",
                    "score": "privacy_loss",
                    "group": group,
                    "seed": seed,
                    "privacy_loss_4alpha": p,
                    "inside_at_step0": inside,
                    "steps": k,
                    "censored": censored[seed],
                }
            )
    return pd.DataFrame(rows)


def test_theory_fit_leaves_out_groups_inside_the_band_at_step0():
    runs = _runs(
        [
            ("low", 0.01, True, [0, 0], [False, False]),
            ("mid", 0.1, True, [0, 0], [False, False]),
            ("top2", 10.0, False, [400, 500], [False, False]),
            ("top1", 100.0, False, [900, 1000], [False, False]),
            ("high", 1000.0, False, [1500, 1500], [True, True]),
        ]
    )
    fit = theory_fit(runs, "finetune")
    assert fit["groups_used"] == ["high", "top1", "top2"] and fit["groups_excluded"] == ["low", "mid"]
    assert fit["n"] == 6 and fit["n_censored"] == 2
    # through the two measured groups, the censored one only pushes the trend up
    assert fit["scale"] >= (950 - 450) / np.log(10) * 0.95


def test_theory_fit_is_none_without_two_measured_runs():
    runs = _runs(
        [("low", 0.01, True, [0, 0], [False, False]), ("high", 1000.0, False, [1500, 1500], [True, True])]
    )
    assert theory_fit(runs, "finetune") is None


def test_challenge_columns_need_enough_models_and_the_same_examples():
    from perinstance.steps import MIN_MODELS_FOR_CHALLENGE, challenge_columns

    def model(index, accuracy=1.0, phi=0.0):
        return {
            "forget_index": np.asarray(index),
            "forget_phi": np.full(len(index), phi),
            "forget_correct": np.ones(len(index), bool),
            "retain_accuracy": np.float64(accuracy),
            "test_correct": np.ones(4, bool),
        }

    n = MIN_MODELS_FOR_CHALLENGE
    # the same spread of phi on both sides: no test tells them apart, every example scores 1 point
    finals = [model([1, 2, 3], phi=k) for k in range(n)]
    oracles = [model([1, 2, 3], phi=k) for k in range(n)]
    same = challenge_columns(finals, oracles)
    assert same == {"challenge_epsilon_mean": 0.0, "challenge_forget_score": 1.0, "challenge_score": 1.0}
    # the utility scaling: a retain accuracy half the oracles' halves the score
    halved = challenge_columns([model([1, 2, 3], 0.5, phi=k) for k in range(n)], oracles)
    assert halved["challenge_score"] == pytest.approx(0.5)
    assert all(np.isnan(v) for v in challenge_columns(finals[:-1], oracles).values())
    with pytest.raises(ValueError, match="different forget examples or orders"):
        challenge_columns(finals, oracles[:-1] + [model([3, 2, 1])])


def test_oracle_evaluations_are_grouped_by_their_own_fields(tmp_path):
    high = _oracles(tmp_path, "privacy_loss", "high", [1, 2], [[1.0, 1.0], [2.0, 2.0]])
    low = _oracles(tmp_path, "el2n", "high", [3], [[0.5]])
    grouped = load_oracle_evaluations([high[1], low[0], high[0]])
    assert list(grouped) == [("privacy_loss", "high"), ("el2n", "high")]
    assert [float(e["forget_losses"][0]) for e in grouped[("privacy_loss", "high")]] == [2.0, 1.0]
    with pytest.raises(ValueError, match="replicate 0 of group privacy_loss/high is given twice"):
        load_oracle_evaluations([high[0], high[0]])
    unnamed = io.save_npz(tmp_path / "unnamed.npz", forget_index=np.array([1]), forget_losses=np.array([1.0]))
    missing = r"unnamed\.npz: missing array\(s\) 'score', 'group', 'replicate'"
    with pytest.raises(io.CorruptArtefact, match=missing):
        load_oracle_evaluations([unnamed])


def test_steps_table_tow_by_hand(tmp_path, config):
    """ToW of a run = prod over forget / retain / test of 1 - |accuracy - the oracles' mean accuracy|."""
    from perinstance.steps import steps_table

    index = [7, 3]
    oracles = []
    for r, (forget, retain, test) in enumerate([([0, 0], 0.9, [1, 1, 0, 0]), ([1, 0], 0.7, [1, 1, 1, 0])]):
        oracles.append(
            io.save_npz(
                tmp_path / f"oracle{r}.npz",
                forget_index=np.asarray(index),
                forget_losses=np.ones(2),
                forget_phi=np.zeros(2),
                forget_correct=np.asarray(forget, bool),
                retain_accuracy=np.float64(retain),
                test_losses=np.ones(4),
                test_correct=np.asarray(test, bool),
                score=np.array("privacy_loss"),
                group=np.array("high"),
                replicate=np.int64(r),
            )
        )
    curve = pd.DataFrame({"step": [0, 10, 20], "forget_loss": [3.0, 1.0, 1.0]}).assign(
        method="finetune", score="privacy_loss", group="high", seed=0, original_seed=0
    )
    curve_path = io.save_table(curve, tmp_path / "curve.csv")
    final = io.save_npz(
        tmp_path / "final.npz",
        forget_index=np.asarray(index),
        forget_losses=np.ones(2),
        forget_phi=np.zeros(2),
        forget_correct=np.array([True, True]),
        retain_accuracy=np.float64(0.6),
        test_losses=np.ones(4),
        test_correct=np.array([True, False, False, False]),
        steps_run=np.int64(20),
    )
    groups = pd.DataFrame({"score": "privacy_loss", "group": "high", "index": index, "ranks": "0-2"})
    scores = _scores([3, 7]).assign(privacy_loss=1.0)
    tables = steps_table(config, [(curve_path, final)], oracles, scores, groups)
    row = tables["steps"].iloc[0]
    # oracle means: forget 0.25, retain 0.8, test 0.625; the run: 1.0, 0.6, 0.25
    assert row["forget_accuracy_oracles"] == 0.25 and row["retain_accuracy_oracles"] == pytest.approx(0.8)
    assert row["tow"] == pytest.approx((1 - 0.75) * (1 - 0.2) * (1 - 0.375))
    summary = tables["summary"].iloc[0]
    assert summary["tow_mean"] == pytest.approx(row["tow"]) and np.isnan(summary["tow_sd"])
    assert np.isnan(summary["challenge_score"])  # 2 oracles and 1 run: too few models
