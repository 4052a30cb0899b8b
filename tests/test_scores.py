"""Table builders that join the package's modules: proxies from runs, forget groups, retrained models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config

from perinstance import io, plan, proxies
from perinstance.data import load_dataset
from perinstance.groups import forget_groups, group_members, rows_of
from perinstance.retrain import holdout_predictions, lean_config, subset_dataset
from perinstance.scores import proxy_table
from perinstance.training import load_run_dynamics, train_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    config = tiny_config()
    root = tmp_path_factory.mktemp("scores")
    dataset = load_dataset(**config["dataset"])
    return (
        config,
        [train_run(config, seed, root / f"seed{seed}", progress=False, dataset=dataset) for seed in (0, 1)],
        root,
    )


def test_proxy_table_from_runs_and_holdout_models(runs):
    config, run_dirs, root = runs
    holdouts = [holdout_predictions(config, m, root / f"holdout{m}.npz", progress=False) for m in range(2)]
    table = proxy_table(config, run_dirs, holdouts)
    assert list(table.columns[:2]) == ["index", "label"] and len(table) == 180
    dyn = [load_run_dynamics(r) for r in run_dirs]
    np.testing.assert_allclose(
        table["el2n"], proxies.el2n([d["early_logits"] for d in dyn], dyn[0]["train_label"])
    )
    for column in ("el2n", "forgetting_events", "learning_speed"):
        assert table[column].notna().all() and table[column].std() > 0
    # two complementary-ish random halves: most examples were held out by at least one model
    assert (table["cscore_holdout_models"] >= 1).mean() > 0.6
    held = table["cscore_holdout_models"] > 0
    assert (
        table.loc[held, "cscore_holdout"].between(0, 1).all()
        and table.loc[~held, "cscore_holdout"].isna().all()
    )
    h = io.load_npz(holdouts[0])
    assert h["trained_on"].sum() == round(0.5 * 180)


def test_published_cscores_only_for_cifar10(runs):
    config, run_dirs, _ = runs
    config = dict(config, proxies=dict(config["proxies"], published_cscores="resources/x.npz"))
    with pytest.raises(ValueError, match="proxies.published_cscores"):
        proxy_table(config, run_dirs)


def _scores(n=400, classes=4):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "index": np.arange(n) * 3,
            "label": np.arange(n) % classes,
            "privacy_loss": rng.lognormal(size=n),
            "el2n": rng.uniform(size=n),
        }
    )


def test_forget_groups_match_the_plan():
    config = tiny_config()
    config["groups"] |= {
        "size": 20,
        "privacy_kinds": ["low", "mid", "high"],
        "linear_bins": 2,
        "log_bins": 0,
        "proxy_scores": ["el2n"],
        "random_groups": 2,
    }
    scores = _scores()
    groups = forget_groups(config, scores)
    planned = {(g.score, g.group) for g in plan.all_groups(config)}
    assert set(map(tuple, groups[["score", "group"]].drop_duplicates().to_numpy())) == planned
    assert groups.groupby(["score", "group"]).size().eq(20).all()
    ranked = scores.sort_values("privacy_loss", ascending=False)["index"].to_numpy()
    # the rank bins continue below `high` instead of repeating it
    assert set(group_members(groups, "privacy_loss", "high")) == set(ranked[:20])
    assert set(group_members(groups, "privacy_loss", "top1")) == set(ranked[20:40])
    assert set(group_members(groups, "privacy_loss", "top2")) == set(ranked[40:60])
    assert set(group_members(groups, "privacy_loss", "low")) == set(ranked[-20:])
    top_el2n = scores.sort_values("el2n", ascending=False)["index"].to_numpy()[:20]
    assert set(group_members(groups, "el2n", "high")) == set(top_el2n)
    with pytest.raises(ValueError, match="no forget group"):
        group_members(groups, "privacy_loss", "top9")


def test_forget_groups_need_the_proxy_column():
    config = tiny_config()
    config["groups"] |= {"size": 20, "proxy_scores": ["cscore_holdout"]}
    with pytest.raises(ValueError, match="groups.proxy_scores"):
        forget_groups(config, _scores())


def test_rows_of_maps_dataset_indices_to_rows():
    assert rows_of(np.array([5, 9, 2]), np.array([2, 5])).tolist() == [2, 0]
    with pytest.raises(ValueError, match="not in the training split"):
        rows_of(np.array([5, 9, 2]), np.array([7]))


def test_subset_dataset_and_lean_config():
    config = tiny_config()
    dataset = load_dataset(**config["dataset"])
    keep = np.zeros(len(dataset.train), dtype=bool)
    keep[::3] = True
    subset = subset_dataset(dataset, keep)
    assert len(subset.train) == keep.sum() and np.array_equal(subset.train.index, dataset.train.index[keep])
    assert len(subset.test) == len(dataset.test)
    with pytest.raises(ValueError, match="empty"):
        subset_dataset(dataset, np.zeros(len(dataset.train), dtype=bool))
    lean = lean_config(config, epochs=2)
    assert lean["training"]["epochs"] == 2 and not lean["training"]["dynamics"]["batch_grad_norms"]
    assert lean["training"]["checkpoints"] == {"step0": False, "log_start": None, "every_epochs": 2}
    assert config["training"]["dynamics"]["batch_grad_norms"]  # the original is untouched


def test_plan_jobs_and_seeds():
    config = tiny_config()
    jobs = plan.unlearning_jobs(config)
    assert len(jobs) == len(set(jobs))
    privacy = [j for j in jobs if j.score == "privacy_loss"]
    assert {j.method for j in privacy} == set(config["unlearning"]["methods"])
    assert plan.original_seed(config, 3) == config["seeds"][3 % len(config["seeds"])]
    assert plan.oracle_seed(0) not in config["seeds"] and plan.holdout_seed(0) != plan.oracle_seed(0)


def test_groups_from_one_original_models_ranking():
    config = tiny_config()
    config["groups"] |= {
        "size": 20,
        "privacy_kinds": ["high"],
        "linear_bins": 1,
        "log_bins": 0,
        "proxy_scores": [],
        "random_groups": 0,
        "ranking_seed": 1,
    }
    scores = _scores()
    rng = np.random.default_rng(3)
    scores["privacy_loss_seed1"] = rng.permutation(
        scores["privacy_loss"].to_numpy()
    )  # another model's ranking
    groups = forget_groups(config, scores)
    own = scores.sort_values("privacy_loss_seed1", ascending=False)["index"].to_numpy()
    assert set(group_members(groups, "privacy_loss", "high")) == set(own[:20])
    assert set(group_members(groups, "privacy_loss", "top1")) == set(own[20:40])
    # and every unlearning run starts from that model
    assert {plan.original_seed(config, u) for u in range(4)} == {1}
