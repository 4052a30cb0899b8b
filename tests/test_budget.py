"""Predicted unlearning budgets: the censored calibration, its held-out validation, `perinstance forget`."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import tiny_config
from scipy.stats import norm, spearmanr

from perinstance import budget, io
from perinstance.cli import main
from perinstance.data import load_dataset
from perinstance.grad_norms import compute_checkpoint_norms
from perinstance.inference import load_model, rows_subset, split_metrics
from perinstance.privacy_scores import privacy_tables
from perinstance.theory import fit_log_trend
from perinstance.training import train_run

# ----------------------------------------------------------------------------- helpers


LOG_P_RANGE = (0.0, math.log(1000))


def _latent_runs(rng, n, *, scale, offset, sigma, eval_every, limit, log_p=LOG_P_RANGE):
    """Runs with steps needed T = scale log P + offset + N(0, sigma^2), observed like the workflow:
    inside at step 0 (T <= 0), first passage at the next evaluation (T rounded up), censored beyond
    the observation limit."""
    x = rng.uniform(*log_p, n)
    t = scale * x + offset + rng.normal(0, sigma, n)
    inside, censored = t <= 0, t > limit
    k = np.ceil(t / eval_every) * eval_every
    lower = np.where(inside, -np.inf, np.where(censored, limit, k - eval_every))
    upper = np.where(inside, 0.0, np.where(censored, np.inf, k))
    return {
        "p": np.exp(x),
        "t": t,
        "inside": inside,
        "censored": censored,
        "k": k,
        "lower": lower,
        "upper": upper,
    }


def _config(k_max=1000, eval_every=50, consecutive=3, bootstrap=200):
    config = tiny_config()
    config["unlearning"].update(k_max=k_max, eval_every=eval_every, gap_budgets=[eval_every])
    config["oracles"]["consecutive"] = consecutive
    config["proxies"]["bootstrap"] = bootstrap
    return config


def _steps_table(rows):
    """A steps table from (score, group, seed, P, kind, steps) tuples; k_max read from the caller."""
    out = []
    for score, group, seed, p, kind, steps, k_max in rows:
        out.append(
            {
                "score": score,
                "group": group,
                "method": "finetune",
                "seed": seed,
                "steps": k_max if kind == "censored" else steps,
                "censored": kind == "censored",
                "inside_at_step0": kind == "none",
                "k_max": k_max,
                "steps_run": k_max,
                "privacy_loss_4alpha": p,
            }
        )
    return pd.DataFrame(out)


def _groups_table(keys, size=5, shared=None):
    """Disjoint members for each (score, group); `shared` = (a, b): b gets a's first member too."""
    rows = []
    for g, (score, group) in enumerate(keys):
        rows += [{"score": score, "group": group, "index": 100 * g + i} for i in range(size)]
    table = pd.DataFrame(rows)
    if shared:
        a, b = shared
        first = int(table[(table["score"] == a[0]) & (table["group"] == a[1])]["index"].iloc[0])
        rows.append({"score": b[0], "group": b[1], "index": first})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the likelihood


def test_interval_likelihood_matches_scipy_and_its_gradient():
    rng = np.random.default_rng(1)
    mu = rng.normal(100, 80, 12)
    lower = np.r_[-np.inf, -np.inf, rng.normal(0, 50, 6), 300, 900, 40, 2000]
    upper = np.r_[0.0, 5.0, lower[2:8] + 50, np.inf, np.inf, 41, 2050]
    sigma = 70.0
    value, grad_mu, grad_log_sigma = budget.interval_log_likelihood(mu, sigma, lower, upper)
    # reference: scipy's log cdf / log sf for the open intervals, a midpoint quadrature of the log
    # density for the closed ones (the last lies ~27 sd out, where a difference of cdfs is 0)
    expected = 0.0
    for m, lo, hi in zip(mu, lower, upper):
        if np.isinf(lo) or np.isinf(hi):
            expected += norm.logcdf(hi, m, sigma) if np.isinf(lo) else norm.logsf(lo, m, sigma)
            continue
        width = (hi - lo) / 100_000
        mid = lo + width * (np.arange(100_000) + 0.5)
        expected += np.logaddexp.reduce(norm.logpdf(mid, m, sigma)) + math.log(width)
    assert value == pytest.approx(expected, rel=1e-8)
    h = 1e-5

    def total(m, s):
        return budget.interval_log_likelihood(m, s, lower, upper)[0]

    numeric = [(total(mu + h * e, sigma) - total(mu - h * e, sigma)) / (2 * h) for e in np.eye(mu.size)]
    np.testing.assert_allclose(grad_mu, numeric, rtol=1e-5, atol=1e-9)
    numeric_sigma = (total(mu, sigma * math.exp(h)) - total(mu, sigma * math.exp(-h))) / (2 * h)
    assert grad_log_sigma == pytest.approx(numeric_sigma, rel=1e-5)
    # far in a tail the tail-aware form stays finite where the naive difference underflows to log(0)
    far, _, _ = budget.interval_log_likelihood(np.array([0.0]), 1.0, np.array([40.0]), np.array([41.0]))
    assert np.isfinite(far) and far == pytest.approx(norm.logsf(40.0), rel=1e-3)


def test_censored_fit_recovers_a_known_relation_that_a_naive_fit_misses():
    rng = np.random.default_rng(0)
    truth = dict(scale=300.0, offset=-400.0, sigma=250.0)
    runs = _latent_runs(rng, 600, **truth, eval_every=50, limit=1200)
    assert runs["inside"].mean() > 0.1 and runs["censored"].mean() > 0.1  # both ends censored
    model = budget.fit_budget_model(runs["p"], runs["lower"], runs["upper"], sigma_floor=25)
    se = np.sqrt(np.diag(np.asarray(model.covariance)))
    assert model.converged
    assert abs(model.scale - truth["scale"]) < 4 * se[1] and abs(model.scale - truth["scale"]) < 15
    assert abs(model.offset - truth["offset"]) < 60
    assert model.sigma == pytest.approx(truth["sigma"], rel=0.1)
    # plugging 0 and the limit in as measurements (a plain fit) flattens the trend
    plugged = np.where(runs["inside"], 0.0, np.where(runs["censored"], 1200.0, runs["k"]))
    naive = fit_log_trend(runs["p"], plugged)
    assert abs(naive["scale"] - truth["scale"]) > 25 and abs(naive["offset"] - truth["offset"]) > 120
    # dropping the censored runs instead biases it too
    kept = ~runs["inside"] & ~runs["censored"]
    dropped = fit_log_trend(runs["p"][kept], runs["k"][kept])
    assert abs(dropped["scale"] - truth["scale"]) > 25


def test_budget_is_the_predictive_quantile_rounded_up_and_covers_fresh_requests():
    rng = np.random.default_rng(3)
    truth = dict(scale=300.0, offset=-400.0, sigma=250.0)
    runs = _latent_runs(rng, 800, **truth, eval_every=50, limit=2400)
    model = budget.fit_budget_model(runs["p"], runs["lower"], runs["upper"], sigma_floor=25)
    p = np.array([3.0, 30.0, 300.0])
    cov = np.asarray(model.covariance)
    d = np.log(p) - model.center
    var_mu = cov[0, 0] + 2 * d * cov[0, 1] + d**2 * cov[1, 1]
    quantile = model.intercept + model.slope * d + norm.ppf(0.9) * np.sqrt(model.sigma**2 + var_mu)
    np.testing.assert_allclose(model.quantile(p, 0.9), quantile, rtol=1e-12)
    expected = [0 if q <= 0 else min(2400, 50 * math.ceil(q / 50)) for q in quantile]
    assert budget.round_budget(quantile, eval_every=50, limit=2400).tolist() == expected
    fresh = _latent_runs(rng, 20_000, **truth, eval_every=50, limit=1e9)
    budgets = budget.round_budget(model.quantile(fresh["p"], 0.9), eval_every=50, limit=10**9)
    covered = (fresh["t"] <= budgets).mean()
    assert 0.87 < covered < 0.95, covered


def test_a_fit_needs_two_measured_runs_at_different_privacy_losses():
    with pytest.raises(ValueError, match="two measured first passages"):
        budget.fit_budget_model(
            [1.0, 2.0, 3.0], [-np.inf, 100.0, 900.0], [0.0, 150.0, np.inf], sigma_floor=25
        )
    with pytest.raises(ValueError, match="finite and > 0"):
        budget.fit_budget_model([0.0, 2.0], [0.0, 100.0], [50.0, 150.0], sigma_floor=25)


# ----------------------------------------------------------------------------- grid and intervals


def test_observation_limit_and_run_intervals():
    assert budget.observation_limit(2500, 50, 3) == 2400
    assert budget.observation_limit(40, 5, 3) == 30
    assert budget.observation_limit(1020, 50, 3) == 950  # evaluations ..., 950, 1000, 1020
    with pytest.raises(ValueError, match="oracles.consecutive"):
        budget.observation_limit(50, 50, 3)
    steps = _steps_table(
        [
            ("s", "a", 0, 1.0, "none", 0, 1000),
            ("s", "b", 0, 5.0, "measured", 300, 1000),
            ("s", "c", 0, 9.0, "censored", 0, 1000),
        ]
    )
    table = budget.step_intervals(steps, eval_every=50, consecutive=3)
    assert table["kind"].tolist() == ["none", "measured", "censored"]
    assert table["lower"].tolist() == [-np.inf, 250.0, 900.0]
    assert table["upper"].tolist() == [0.0, 300.0, np.inf]
    assert table["steps_truncated"].tolist() == [0, 300, 900]
    with pytest.raises(ValueError, match="lacks columns"):
        budget.step_intervals(steps.drop(columns="inside_at_step0"), eval_every=50, consecutive=3)
    with pytest.raises(ValueError, match="finite and > 0.*'group': 'c'"):
        budget.step_intervals(
            steps.assign(privacy_loss_4alpha=[1.0, 5.0, np.nan]), eval_every=50, consecutive=3
        )


def test_fixed_budget_on_a_hand_built_case():
    t = np.array([0, 0, 100, 300, 900])
    kind = ["none", "none", "measured", "measured", "censored"]
    assert budget.fixed_budget(t, kind, coverage=0.4, eval_every=50, limit=900) == 0
    assert budget.fixed_budget(t, kind, coverage=0.6, eval_every=50, limit=900) == 100
    assert budget.fixed_budget(t, kind, coverage=0.8, eval_every=50, limit=900) == 300
    # the censored run is never unlearned within the limit: 90 % cannot be reached, the limit is given
    assert budget.fixed_budget(t, kind, coverage=0.9, eval_every=50, limit=900) == 900


# ----------------------------------------------------------------------------- held-out validation

HAND = [  # (score, group, P, kind of both runs, steps of run 0 and run 1)
    ("privacy_loss", "a", 1.0, "none", (0, 0)),
    ("privacy_loss", "b", 10.0, "measured", (100, 150)),
    ("privacy_loss", "c", 100.0, "measured", (300, 350)),
    ("privacy_loss", "d", 1000.0, "censored", (0, 0)),
]


def _hand_steps(k_max=1000):
    rows = [(s, g, u, p, kind, steps[u], k_max) for s, g, p, kind, steps in HAND for u in (0, 1)]
    return _steps_table(rows)


def test_fixed_budget_comparison_has_the_hand_computed_totals():
    config = _config(k_max=1000)
    steps = _hand_steps()
    groups = _groups_table([(s, g) for s, g, *_ in HAND])
    table = budget.leave_one_group_out(config, steps, groups, coverage=0.5, overlap="exclude")
    fixed = table.drop_duplicates("group").set_index("group")["budget_fixed"].to_dict()
    # hold out a: {100, 150, 300, 350, c, c} -> 3 of 6 by 300; b: {0, 0, 300, 350, c, c} -> 300;
    # c: {0, 0, 100, 150, c, c} -> 100; d: {0, 0, 100, 150, 300, 350} -> 100
    assert fixed == {"a": 300, "b": 300, "c": 100, "d": 100}
    assert table.groupby("group")["unlearned_fixed"].sum().to_dict() == {"a": 2, "b": 2, "c": 0, "d": 0}
    assert table["steps_truncated"].tolist() == [0, 0, 100, 150, 300, 350, 900, 900]
    summary = budget.validation_summary(table, coverage=0.5, n_boot=50, seed=0).iloc[0]
    assert summary["steps_fixed"] == 2 * (300 + 300 + 100 + 100)
    assert summary["not_unlearned_fixed"] == 4
    assert summary["steps_needed_truncated"] == 0 + 250 + 650 + 1800
    # the predicted budgets: each row's own rule, summed and scored the same way
    assert summary["steps_budget"] == table["budget"].sum()
    unlearned = [
        kind == "none" or (kind == "measured" and t <= b)
        for kind, t, b in zip(table["kind"], table["steps_truncated"], table["budget"])
    ]
    assert summary["not_unlearned_budget"] == len(table) - sum(unlearned)
    assert summary["steps_saved"] == summary["steps_fixed"] - summary["steps_budget"]
    # without b (or c) one measured group is left: no slope, the fold falls back to the fixed budget
    fitted = table.drop_duplicates("group").set_index("group")["fold_fitted"].to_dict()
    assert fitted == {"a": True, "b": False, "c": False, "d": True}
    unfitted = ~table["fold_fitted"]
    assert (table.loc[unfitted, "budget"] == table.loc[unfitted, "budget_fixed"]).all()
    assert (table.loc[unfitted, "budget_rule"] == "fixed").all()
    # rank correlation and error over the requests that have a prediction
    fitted = table[~unfitted]
    assert summary["n_predicted"] == 4
    assert summary["rho"] == pytest.approx(
        spearmanr(fitted["predicted_latent"], fitted["steps_truncated"]).statistic
    )
    assert summary["mae"] == pytest.approx(
        (fitted["predicted_steps"] - fitted["steps_truncated"]).abs().mean()
    )
    assert (table["budget"] <= 900).all() and (table["budget"] % 50 == 0).all()


def test_held_out_group_never_enters_its_own_calibration():
    config = _config(k_max=1000)
    rng = np.random.default_rng(5)
    rows = []
    for g, p in enumerate(np.geomspace(1, 1000, 8)):
        for u in (0, 1):
            t = 120 * math.log(p) - 150 + rng.normal(0, 60)
            kind = "none" if t <= 0 else "censored" if t > 900 else "measured"
            rows.append(("privacy_loss", f"g{g}", u, p, kind, 50 * math.ceil(max(t, 0) / 50), 1000))
    steps = _steps_table(rows)
    keys = [("privacy_loss", f"g{g}") for g in range(8)]
    groups = _groups_table(keys, shared=(keys[5], keys[6]))  # g5 and g6 share an example
    columns = ["predicted_latent", "budget", "budget_fixed", "fold_slope"]
    base = budget.leave_one_group_out(config, steps, groups, coverage=0.9, overlap="exclude")
    assert base["fold_fitted"].all()
    summary = budget.validation_summary(base, coverage=0.9, n_boot=200, seed=1).iloc[0]
    rho = spearmanr(base["predicted_latent"], base["steps_truncated"]).statistic
    assert summary["rho"] == pytest.approx(rho) and summary["rho_low"] <= rho <= summary["rho_high"]
    error = base["predicted_steps"] - base["steps_truncated"]
    assert summary["mae"] == pytest.approx(error.abs().mean()) and summary["bias"] == pytest.approx(
        error.mean()
    )
    # change what g4 measured: g4's own predictions stay, every other fold's change
    changed = steps.copy()
    at = changed["group"] == "g4"
    changed.loc[at, ["steps", "inside_at_step0", "censored"]] = [1000, False, True]
    other = budget.leave_one_group_out(config, changed, groups, coverage=0.9, overlap="exclude")
    held = base["group"] == "g4"
    pd.testing.assert_frame_equal(base.loc[held, columns], other.loc[held, columns])
    assert not np.allclose(base.loc[~held, "fold_slope"], other.loc[~held, "fold_slope"])
    # with overlap excluded, g6's fold does not see g5 either (they share an example)
    changed = steps.copy()
    changed.loc[changed["group"] == "g5", ["steps", "inside_at_step0", "censored"]] = [1000, False, True]
    other = budget.leave_one_group_out(config, changed, groups, coverage=0.9, overlap="exclude")
    held = base["group"].isin(["g5", "g6"])
    pd.testing.assert_frame_equal(base.loc[held, columns], other.loc[held, columns])
    assert (base.loc[base["group"] == "g6", "fold_overlapping_dropped"] == 1).all()
    assert (base.loc[base["group"] == "g6", "fold_groups"] == 6).all()
    kept = budget.leave_one_group_out(config, changed, groups, coverage=0.9, overlap="keep")
    assert (kept.loc[kept["group"] == "g6", "fold_groups"] == 7).all()


def test_a_fold_without_a_fit_falls_back_to_the_fixed_budget():
    config = _config(k_max=1000)
    steps = _steps_table(
        [
            ("privacy_loss", "a", 0, 1.0, "none", 0, 1000),
            ("privacy_loss", "b", 0, 10.0, "measured", 200, 1000),
            ("privacy_loss", "c", 0, 100.0, "censored", 0, 1000),
        ]
    )
    table = budget.leave_one_group_out(config, steps, coverage=0.5, overlap="keep")
    assert (table["budget_rule"] == "fixed").all() and (table["budget"] == table["budget_fixed"]).all()
    assert table["predicted_latent"].isna().all() and not table["fold_fitted"].any()
    summary = budget.validation_summary(table, coverage=0.5, n_boot=20).iloc[0]
    assert np.isnan(summary["rho"]) and np.isnan(summary["mae"])
    assert summary["n_folds_fitted"] == 0 and summary["n_predicted"] == 0


# ----------------------------------------------------------------------------- the calibration file


def test_calibration_file_round_trip_and_the_workflow_job(tmp_path):
    from perinstance import jobs

    config = _config(k_max=1000)
    steps = _hand_steps()
    groups = _groups_table([(s, g) for s, g, *_ in HAND])
    io.save_table(steps, tmp_path / "steps.csv")
    io.save_table(groups, tmp_path / "groups.csv")
    out = {
        "budget_calibration": tmp_path / "calibration.json",
        "budget_validation": tmp_path / "validation.csv",
        "budget_validation_summary": tmp_path / "summary.csv",
    }
    jobs.run(
        "budget",
        config,
        input={"steps": tmp_path / "steps.csv", "groups": tmp_path / "groups.csv"},
        output=out,
    )
    calibration, applies = budget.load_calibration(out["budget_calibration"], "finetune")
    assert applies["recipe"]["lr"] == config["training"]["lr"] and calibration.limit == 900
    direct = budget.calibrate(
        budget.step_intervals(steps, eval_every=50, consecutive=3),
        method="finetune",
        coverage=budget.DEFAULT_COVERAGE,
        eval_every=50,
        consecutive=3,
        k_max=1000,
    )
    assert calibration.model.slope == pytest.approx(direct.model.slope)
    assert calibration.group_sizes == (5,) and calibration.n_runs == 8
    for p in (0.5, 20.0, 5000.0):
        assert calibration.budget(p) == direct.budget(p)
    assert calibration.budget(5000.0)["extrapolated"] and not calibration.budget(20.0)["extrapolated"]
    validation = io.load_table(out["budget_validation"])
    summary = io.load_table(out["budget_validation_summary"])
    assert set(validation["overlap"]) == {"exclude", "keep"} and len(validation) == 16
    assert summary[["overlap", "method"]].values.tolist() == [["exclude", "finetune"], ["keep", "finetune"]]
    with pytest.raises(ValueError, match="no calibration for unlearning method 'sgld'"):
        budget.load_calibration(out["budget_calibration"], "sgld")


# ----------------------------------------------------------------------------- requests


def test_request_ids_from_lists_and_files(tmp_path):
    assert budget.parse_request("3, 17,256,3").tolist() == [3, 17, 256]
    (tmp_path / "ids.txt").write_text("# request\n5 6\n7,8\n")
    assert budget.parse_request(str(tmp_path / "ids.txt")).tolist() == [5, 6, 7, 8]
    (tmp_path / "ids.csv").write_text("label,index\n1,40\n2,41\n")
    assert budget.parse_request(str(tmp_path / "ids.csv")).tolist() == [40, 41]
    (tmp_path / "bad.csv").write_text("label,name\n1,x\n")
    with pytest.raises(ValueError, match="'index' or 'id' column"):
        budget.parse_request(str(tmp_path / "bad.csv"))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty forget request"):
        budget.parse_request(str(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match="empty forget request"):
        budget.parse_request(",")
    (tmp_path / "token.txt").write_text("4\n-2\n")
    with pytest.raises(ValueError, match="'-2' is not an example id"):
        budget.parse_request(str(tmp_path / "token.txt"))
    with pytest.raises(FileNotFoundError, match="nope.txt does not exist"):
        budget.parse_request(str(tmp_path / "nope.txt"))


@pytest.fixture(scope="module")
def forget_workspace(tmp_path_factory):
    """One original model of the tiny config (2 epochs), its privacy losses, and a calibration on a
    steps table built from a known relation over those losses."""
    root = tmp_path_factory.mktemp("forget")
    config = tiny_config(epochs=2)
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run = train_run(config, 0, root / "train/seed0", progress=False)
    norms = compute_checkpoint_norms(config, run, root / "norms.npz", progress=False)
    scores = privacy_tables(config, [(0, run, norms)])["privacy"]
    io.save_table(scores, root / "scores.parquet")
    # groups along the ranking; steps needed grow with log P, inside the band below the median
    p = np.sort(scores["privacy_loss_4alpha"].to_numpy())
    k_max, eval_every = config["unlearning"]["k_max"], config["unlearning"]["eval_every"]
    limit = budget.observation_limit(k_max, eval_every, config["oracles"]["consecutive"])
    levels = np.geomspace(p[len(p) // 4], p[-3], 6)
    slope = 25 / math.log(levels[-1] / np.median(p))
    rows = []
    for g, level in enumerate(levels):
        for u, jitter in enumerate((-2.0, 2.0)):
            t = slope * math.log(level / np.median(p)) + jitter
            kind = "none" if t <= 0 else "censored" if t > limit else "measured"
            rows.append(
                (
                    "privacy_loss",
                    f"g{g}",
                    u,
                    level,
                    kind,
                    eval_every * math.ceil(max(t, 0) / eval_every),
                    k_max,
                )
            )
    steps = _steps_table(rows)
    calibration = budget.calibrations(config, steps)
    io.save_json(calibration, root / "calibration.json")
    ranked = scores.sort_values("privacy_loss_4alpha")["index"].to_numpy()
    return {
        "root": root,
        "config": config,
        "config_path": str(config_path),
        "run": run,
        "scores": root / "scores.parquet",
        "calibration": root / "calibration.json",
        "high": ranked[-5:],
        "low": ranked[:10],
    }


def _forget_argv(ws, ids, out, *extra):
    return [
        "forget",
        "--config",
        ws["config_path"],
        "--run",
        str(ws["run"]),
        "--scores",
        str(ws["scores"]),
        "--calibration",
        str(ws["calibration"]),
        "--ids",
        ids,
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_forget_runs_the_predicted_budget_end_to_end(forget_workspace, capsys):
    ws = forget_workspace
    out, weights = ws["root"] / "high.json", ws["root"] / "high.pt"
    ids = ",".join(str(i) for i in ws["high"])
    assert main(_forget_argv(ws, ids, out, "--model-out", str(weights))) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    # the budget is the calibration's closed-form quantile for the request's mean P, rounded up
    scores = io.load_table(ws["scores"]).set_index("index")
    p = scores.loc[ws["high"], "privacy_loss_4alpha"].mean()
    calibration, _ = budget.load_calibration(ws["calibration"], "finetune")
    model = calibration.model
    d = math.log(p) - model.center
    cov = np.asarray(model.covariance)
    q = (
        model.intercept
        + model.slope * d
        + norm.ppf(0.9) * math.sqrt(model.sigma**2 + cov[0, 0] + 2 * d * cov[0, 1] + d**2 * cov[1, 1])
    )
    expected = 0 if q <= 0 else min(calibration.limit, 5 * math.ceil(q / 5))
    assert report["prediction"]["privacy_loss_4alpha"] == pytest.approx(p)
    assert report["predicted_budget"] == expected > 0
    assert report["steps_run"] == expected and report["curve"][-1]["step"] == expected
    assert sorted(report["ids"]) == sorted(int(i) for i in ws["high"])
    assert f"predicted budget: {expected} steps" in printed
    # the reported metrics are those of the saved model, evaluated here independently
    config = ws["config"]
    dataset = load_dataset(**config["dataset"])
    unlearned = load_model(config, dataset, weights)
    rows = np.flatnonzero(np.isin(dataset.train.index.numpy(), ws["high"]))
    forget = split_metrics(unlearned, rows_subset(dataset.train, rows), 256, torch.device("cpu"))
    test = split_metrics(unlearned, dataset.test, 256, torch.device("cpu"))
    assert report["after"]["forget"]["loss"] == pytest.approx(float(forget["losses"].mean()), rel=1e-6)
    assert report["after"]["test"]["accuracy"] == pytest.approx(float(test["correct"].mean()))
    assert report["after"]["forget"]["loss"] != pytest.approx(report["before"]["forget"]["loss"])
    n_train = len(dataset.train)
    assert report["prediction"]["n_examples"] == 5 and n_train - 5 > 0


def test_forget_with_a_zero_budget_changes_nothing(forget_workspace, tmp_path):
    ws = forget_workspace
    ids = tmp_path / "low.txt"
    ids.write_text("\n".join(str(i) for i in ws["low"]))
    out = tmp_path / "low.json"
    assert main(_forget_argv(ws, str(ids), out)) == 0
    report = json.loads(out.read_text())
    assert report["predicted_budget"] == 0 and report["steps_run"] == 0
    assert report["before"] == report["after"]


def _refused(capsys, argv, needle, unwritten):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not unwritten.exists()
    return err


def test_forget_refuses_bad_requests_and_files(forget_workspace, capsys, tmp_path):
    ws = forget_workspace
    out = tmp_path / "r.json"
    dataset = load_dataset(**ws["config"]["dataset"])
    test_id = int(dataset.test.index[0])
    err = _refused(
        capsys, _forget_argv(ws, f"{ws['high'][0]},{test_id},99999", out), "not in the training", out
    )
    assert str(test_id) in err and "99999" in err
    _refused(capsys, _forget_argv(ws, ",", out), "empty forget request", out)
    (tmp_path / "empty.csv").write_text("index\n")
    _refused(capsys, _forget_argv(ws, str(tmp_path / "empty.csv"), out), "empty forget request", out)
    missing = dict(ws, calibration=tmp_path / "none.json")
    _refused(capsys, _forget_argv(missing, "1", out), "none.json does not exist", out)
    (tmp_path / "run").mkdir()
    _refused(capsys, _forget_argv(dict(ws, run=tmp_path / "run"), "1", out), "has no weights file", out)
    _refused(capsys, _forget_argv(dict(ws, scores=tmp_path / "s.parquet"), "1", out), "s.parquet", out)
    _refused(capsys, _forget_argv(ws, "1", out, "--method", "l1sparse"), "no calibration for", out)
    other = dict(ws["config"])
    other["unlearning"] = dict(other["unlearning"], lr=0.5)
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    changed = dict(ws, config_path=str(tmp_path / "other.yaml"))
    _refused(capsys, _forget_argv(changed, "1", out), "recipe.lr", out)
    with pytest.raises(SystemExit):
        main(_forget_argv(ws, "1", out, "--coverage", "1.5"))
    assert "strictly between 0 and 1" in capsys.readouterr().err
