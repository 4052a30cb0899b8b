from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from perinstance.barrier import (
    RANDOM_SAMPLE,
    SELECTED_GROUPS,
    barrier_heights,
    barrier_tables,
    endpoint_distance,
    interpolation_losses,
    run_barrier_job,
)
from perinstance.models import build_model


def test_loss_linear_along_the_path_has_no_barrier():
    lambdas = np.linspace(0, 1, 25)
    losses = np.outer(1 - lambdas, [0.3, 2.0]) + np.outer(lambdas, [1.1, 0.5])
    np.testing.assert_allclose(barrier_heights(losses, lambdas), 0.0, atol=1e-12)


def test_hand_built_non_convex_path():
    lambdas = np.array([0, 1 / 3, 2 / 3, 1])
    losses = np.array([[1.0], [3.0], [3.0], [2.0]])
    # straight line 1, 4/3, 5/3, 2 -> excess 0, 5/3, 4/3, 0
    assert barrier_heights(losses, lambdas)[0] == pytest.approx(5 / 3)
    assert barrier_heights(losses, lambdas, "endpoints_mean")[0] == pytest.approx(3.0 - 1.5)
    convex = np.array([[1.0], [0.2], [0.3], [2.0]])
    assert barrier_heights(convex, lambdas)[0] == 0.0  # the endpoints themselves bound it below
    with pytest.raises(ValueError, match="barrier.variant"):
        barrier_heights(losses, lambdas, "max")
    with pytest.raises(ValueError, match="from 0 to 1"):
        barrier_heights(losses, lambdas[::-1])


def _model(seed):
    torch.manual_seed(seed)
    return build_model("smallcnn", width=4, norm_groups=2, num_classes=3, input_shape=(1, 8, 8))


def test_path_endpoints_and_midpoint_match_explicit_models():
    a, b = _model(0), _model(1)
    x, y = torch.randn(7, 1, 8, 8), torch.randint(0, 3, (7,))
    work = _model(2)
    losses = interpolation_losses(work, a.state_dict(), b.state_dict(), x, y, [0.0, 0.5, 1.0])
    mid = _model(3)
    mid.load_state_dict({k: (a.state_dict()[k] + b.state_dict()[k]) / 2 for k in a.state_dict()})
    with torch.no_grad():
        for row, model in zip(losses, (a, mid, b)):
            model.eval()
            np.testing.assert_allclose(
                row, F.cross_entropy(model(x), y, reduction="none").double().numpy(), rtol=1e-5
            )
    # the endpoint models were not modified; only the working copy was
    assert all(torch.equal(v, _model(0).state_dict()[k]) for k, v in a.state_dict().items())
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in work.state_dict().items())


# --------------------------------------------------------------------------- endpoints: steps and distance


def test_endpoint_distance_by_hand():
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([0.5]), "count": torch.tensor(3)}
    b = {"w": torch.tensor([[1.0, 2.0], [3.0, 6.0]]), "b": torch.tensor([1.5]), "count": torch.tensor(10)}
    # floating-point tensors only: sqrt(2^2 + 1^2); the integer counter does not count
    assert endpoint_distance(a, b) == pytest.approx(np.sqrt(5.0), rel=1e-12)
    assert endpoint_distance(a, a) == 0.0
    with pytest.raises(ValueError, match="different parameters"):
        endpoint_distance(a, {"w": a["w"]})


def test_barrier_job_records_endpoint_steps_and_distance(tmp_path):
    from conftest import tiny_config

    from perinstance import io
    from perinstance.data import load_dataset

    config = tiny_config()
    dataset = load_dataset(**config["dataset"])
    members = dataset.train.index.numpy()[[3, 5, 8, 13]]
    groups = tmp_path / "groups.csv"
    pd.DataFrame({"score": "random", "group": "random0", "index": members, "label": 0, "rank": pd.NA}).to_csv(
        groups, index=False
    )
    torch.manual_seed(0)
    model = build_model(
        "smallcnn",
        width=config["model"]["width"],
        norm_groups=config["model"]["norm_groups"],
        num_classes=dataset.num_classes,
        input_shape=dataset.input_shape,
    )
    start = model.state_dict()
    shift = {
        k: v + 0.01 if v.is_floating_point() else v for k, v in start.items()
    }  # every float entry + 0.01
    twice = {k: v + 0.02 if v.is_floating_point() else v for k, v in start.items()}
    for name, state in (("original", start), ("unlearned", shift), ("spawned", twice)):
        io.save_torch(state, tmp_path / f"{name}.pt")
    out = tmp_path / "paths.parquet"
    run_barrier_job(
        config,
        "random",
        "random0",
        groups,
        tmp_path / "original.pt",
        {"unlearned_finetune": tmp_path / "unlearned.pt", "spawned_oracle": tmp_path / "spawned.pt"},
        out,
    )
    table = pd.read_parquet(out)
    floats = sum(v.numel() for v in start.values() if v.is_floating_point())
    per_pair = table.groupby("pair")[["distance", "steps_run"]].agg(["min", "max"])
    assert (
        (per_pair.xs("min", axis=1, level=1) == per_pair.xs("max", axis=1, level=1)).all().all()
    )  # per pair
    distance = table.groupby("pair")["distance"].first()
    assert distance["unlearned_finetune"] == pytest.approx(0.01 * np.sqrt(floats), rel=1e-5)
    assert distance["spawned_oracle"] == pytest.approx(0.02 * np.sqrt(floats), rel=1e-5)
    steps = table.groupby("pair")["steps_run"].first()
    assert steps["unlearned_finetune"] == config["barrier"]["unlearning_steps"]
    # the spawned oracle trains the epochs after spawn_epoch on D minus G:
    # here 2 epochs of ceil(176 / 32) batches
    retain = len(dataset.train) - len(members)
    epochs = config["training"]["epochs"] - config["barrier"]["spawn_epoch"]
    assert steps["spawned_oracle"] == epochs * int(np.ceil(retain / config["training"]["batch_size"]))
    assert len(table) == 2 * len(members) * config["barrier"]["lambdas"]


# --------------------------------------------------------------------------- rho over a random sample


def _paths_table(score, group, pair, index, barrier, steps=20, distance=1.0):
    lambdas = [0.0, 0.5, 1.0]
    n = len(index)
    return pd.DataFrame(
        {
            "score": score,
            "group": group,
            "pair": pair,
            "index": np.tile(index, 3),
            "label": 0,
            "lambda": np.repeat(lambdas, n),
            "loss": 1.0,
            "barrier": np.tile(barrier, 3),
            "steps_run": steps,
            "distance": distance,
        }
    )


def _hand_built(tmp_path):
    from perinstance import io

    p = np.arange(1, 21, dtype=float)  # P of example i is i + 1
    scores = pd.DataFrame({"index": np.arange(20), "privacy_loss": p})
    random_index = np.array([0, 3, 5, 6, 9, 11, 14, 17])
    random_barrier = np.array([0.1, 0.4, 0.2, 0.5, 0.9, 0.3, 0.8, 0.7])
    tables = [
        _paths_table(
            "privacy_loss", "low", "unlearned_finetune", np.arange(5), np.zeros(5) + [0, 0.1, 0, 0.1, 0.2]
        ),
        _paths_table(
            "privacy_loss",
            "high",
            "unlearned_finetune",
            np.arange(15, 20),
            [0.5, 0.9, 1.0, 1.2, 1.1],
            distance=3.0,
        ),
        _paths_table("random", "random0", "unlearned_finetune", random_index, random_barrier, distance=2.0),
        _paths_table("privacy_loss", "low", "unlearned_sgld", np.arange(5), [0.0, 0.1, 0.2, 0.3, 0.4]),
    ]
    paths = []
    for k, table in enumerate(tables):
        paths.append(io.save_table(table, tmp_path / f"paths{k}.parquet"))
    return paths, scores, random_index, random_barrier


def test_rho_over_the_random_sample_with_its_bootstrap_ci(tmp_path):
    from scipy.stats import spearmanr

    paths, scores, random_index, random_barrier = _hand_built(tmp_path)
    tables = barrier_tables(paths, scores, n_boot=200, ci=0.9, seed=4)
    rho = tables["correlations"].set_index(["pair", "sample"])
    random = rho.loc[("unlearned_finetune", RANDOM_SAMPLE)]
    p = random_index + 1.0
    assert random["n"] == 8 and random["groups"] == "random0"
    # ranks of P: 1..8; ranks of the barriers: 1 4 2 5 8 3 7 6 -> sum d^2 = 0+4+1+1+9+9+0+4 = 28
    assert random["spearman"] == pytest.approx(1 - 6 * 28 / (8 * 63))
    # the CI: percentiles of rho over resampled examples (the seeded resamples, recomputed by hand)
    draws = np.random.default_rng([4, 0]).integers(0, 8, size=(200, 8))
    boot = np.array([spearmanr(random_barrier[d], p[d])[0] for d in draws])
    low, high = np.quantile(boot[~np.isnan(boot)], [0.05, 0.95])
    assert (random["ci_low"], random["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert random["ci_low"] < random["spearman"] < random["ci_high"]
    # the selected groups: the 10 members of low and high only, never the random sample
    selected = rho.loc[("unlearned_finetune", SELECTED_GROUPS)]
    expected = spearmanr(np.r_[[0, 0.1, 0, 0.1, 0.2], [0.5, 0.9, 1.0, 1.2, 1.1]], np.r_[1:6, 16:21])[0]
    assert (
        selected["n"] == 10
        and selected["spearman"] == pytest.approx(expected)
        and selected["groups"] == "high low"
    )
    # the sgld pair has no random group: no random-sample row, and the summary says n_random = 0
    assert ("unlearned_sgld", RANDOM_SAMPLE) not in rho.index
    summary = tables["summary"].set_index(["pair", "score", "group"])
    assert summary.loc[("unlearned_sgld", "privacy_loss", "low"), "n_random"] == 0
    row = summary.loc[("unlearned_finetune", "privacy_loss", "high")]
    assert row["spearman_random"] == pytest.approx(random["spearman"]) and row["n_random"] == 8
    assert row["spearman_selected"] == pytest.approx(expected) and row["n_selected"] == 10
    assert row["distance"] == 3.0 and row["steps_run"] == 20 and row["n"] == 5
    examples = tables["examples"]
    assert set(examples.loc[examples["score"] == "random", "sample"]) == {RANDOM_SAMPLE}
    assert {"steps_run", "distance", "privacy_loss", "barrier"} <= set(examples.columns)


def test_f6_draws_the_hand_built_tables(tmp_path):
    from perinstance.figures import plot_barriers

    paths, scores, _, _ = _hand_built(tmp_path)
    tables = barrier_tables(paths, scores, n_boot=50)
    written = plot_barriers(
        tables["examples"],
        tables["curves"],
        tables["summary"],
        tmp_path / "F6.png",
        correlations=tables["correlations"],
        alpha=2,
        title="test",
    )
    assert all(path.stat().st_size > 0 for path in written)
    assert "spearman_random_ci_low" in pd.read_csv(tmp_path / "F6.csv").columns
