"""bench/paper_estimates.py on the tiny test config, against numbers counted by hand (no timing)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_paper_estimates", REPO / "bench/paper_estimates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def est(bench):
    return bench.estimate(REPO / "workflow/configs/test.yaml", flop_batch=2)


def test_sizes_and_weights(est):
    # synthetic n = 240, test_fraction 0.25 -> 60 test, 180 train; 3 classes of 1x8x8
    assert est["dataset"]["n_train"] == 180 and est["dataset"]["n_test"] == 60
    assert est["dataset"]["num_classes"] == 3 and est["dataset"]["input_shape"] == [1, 8, 8]
    model = est["model"]
    assert model["raw_state_bytes"] == 4 * model["parameters"]  # float32, no buffers (GroupNorm)
    assert 4 * model["parameters"] < model["model_file_bytes"] < 4 * model["parameters"] + 64 * 1024
    # SGD with momentum: one buffer per parameter tensor, the same size again
    assert 4 * model["parameters"] < model["optimizer_file_bytes"] < 4 * model["parameters"] + 64 * 1024
    # groups low, high, top1 by privacy loss + el2n high; 2 oracles each; 7 methods x 3 + finetune x 1
    assert (est["groups"], est["barrier_groups"], est["unlearning_runs"]) == (4, 3, 22)


def test_work_counted_by_hand(est):
    f = est["families"]
    # 180 examples at batch 32: 6 steps per epoch, 3 epochs; checkpoints 0, 2, 4 (log-spaced), 6, 12, 18
    assert f["train"]["steps_per_epoch"] == 6 and f["train"]["steps_per_job"] == 18
    assert f["train"]["checkpoints_per_run"] == 6 and f["grad_norms"]["checkpoints_scored"] == 5
    assert f["train"]["sgd_examples"] == [2 * 3 * 180] * 2
    # history at epochs 0, 1, 2, 3 on 180 + 60, EL2N logits on 180
    assert f["train"]["forward_examples"] == [2 * (4 * 240 + 180)] * 2
    assert f["grad_norms"]["norm_examples"] == [2 * 180 * 5] * 2
    # holdouts: 2 models on 90 examples, history twice, EL2N logits, then logits on all 180
    assert f["holdout"]["sgd_examples"] == [2 * 3 * 90] * 2
    assert f["holdout"]["forward_examples"] == [2 * (2 * 150 + 90 + 180)] * 2
    # oracles: 4 groups x 2 on 170 examples; history twice, EL2N, then the group (10) and test (60)
    assert f["oracle"]["models"] == 8 and f["oracle"]["sgd_examples"] == [8 * 3 * 170] * 2
    assert f["oracle"]["forward_examples"] == [8 * (2 * 230 + 170 + 70)] * 2
    # spawned oracles: 3 barrier groups, the 2 epochs after spawn_epoch 1
    assert f["spawned_oracle"]["sgd_examples"] == [3 * 2 * 170] * 2
    # unlearning: k_max 40 = max(gap_budgets), so every run takes 40 steps of 32 from 170 retained
    # examples (6 steps per epoch: 6 epochs + 4 steps); 9 evaluations (steps 0, 5, ..., 40) of
    # 10 + 50 + 30 examples, then the final evaluation of the group and the test split
    assert f["unlearn"]["steps_run_per_model"] == [40, 40]
    assert f["unlearn"]["sgd_examples"] == [22 * (6 * 170 + 4 * 32)] * 2
    assert f["unlearn"]["forward_examples"] == [22 * (9 * 90 + 10 + 60)] * 2
    # barrier: 3 groups x (finetune + spawned oracle) x 5 lambdas x 10 members
    assert f["barrier"]["forward_examples"] == [3 * 2 * 5 * 10] * 2


def test_flops_and_hours(est, bench):
    flops, f = est["flops_per_example"], est["families"]
    assert flops["forward"] > 0 and 2.0 < flops["plain_step_over_forward"] <= 3.0
    assert f["train"]["flops"][0] == pytest.approx(
        1080 * flops["fused_step"] + 2 * 1140 * flops["forward"], rel=1e-12
    )
    assert f["grad_norms"]["flops"][0] == pytest.approx(1800 * flops["norms_only"], rel=1e-12)
    hours = est["gpu_hours"]["A100-SXM"]["fp32_25pct"]["hours"]
    assert hours["total"][1] == pytest.approx(est["total_flops"][1] / (0.25 * 19.5e12) / 3600)
    wall = est["wall_clock_hours_lower_bound"]["A100-SXM/fp32_25pct"]
    assert wall["1"][0] == pytest.approx(hours["total"][0])  # one GPU: all the work in a row
    assert wall["128"][0] <= wall["8"][0] <= wall["1"][0]


def test_disk_counted_by_hand(est):
    d, model = est["disk_bytes"], est["model"]["model_file_bytes"]
    cats = d["categories"]
    assert cats["training_checkpoints"] == [2 * 6 * model] * 2
    assert cats["optimizer_states"] == [2 * est["model"]["optimizer_file_bytes"]] * 2  # spawn epoch 1
    assert cats["oracle_weights"] == [8 * model] * 2 and cats["spawned_oracles"] == [3 * model] * 2
    assert cats["unlearned_final_weights"] == cats["barrier_endpoints"] == [22 * model] * 2
    assert cats["grad_norm_arrays"] == [2 * 180 * (5 * 4 + 8 + 8)] * 2  # float32 norms, int64 index + label
    total = sum(v[0] for v in cats.values())
    assert d["total_all_kept"][0] == total
    assert d["total_without"]["all_keep_models_false"][0] == total - (8 + 3 + 22 + 22) * model
