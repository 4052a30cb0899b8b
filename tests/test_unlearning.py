from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, tiny_config

from perinstance.data import load_dataset
from perinstance.inference import logit_confidence
from perinstance.models import build_model
from perinstance.optim import SGD
from perinstance.unlearning import METHODS, RunData, UnlearningRecipe, unlearn


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(**tiny_config()["dataset"])


def _model(dataset, seed=0):
    torch.manual_seed(seed)
    return build_model(
        "smallcnn", width=4, norm_groups=2, num_classes=dataset.num_classes, input_shape=dataset.input_shape
    )


def _recipe(method, **overrides):
    base = dict(
        method=method,
        lr=0.1,
        momentum=0.0,
        weight_decay=0.0,
        batch_size=16,
        sgld_beta=400.0,
        l1_gamma=0.01,
        k_max=1,
        eval_every=1,
    )
    return UnlearningRecipe(**(base | overrides))


def _one_step(dataset, method, **overrides):
    model = _model(dataset)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    unlearn(
        model,
        dataset,
        np.arange(10),
        _recipe(method, **overrides),
        seed=0,
        device=torch.device("cpu"),
        eval_retain_size=20,
        eval_test_size=20,
        progress=False,
    )
    return start, model.state_dict()


def test_recipe_falls_back_to_the_training_recipe():
    config = tiny_config()
    recipe = UnlearningRecipe.from_config(config, "sgld")
    assert recipe.lr == config["training"]["lr"] and recipe.weight_decay == config["training"]["weight_decay"]
    config["unlearning"]["lr"] = 0.5
    assert UnlearningRecipe.from_config(config, "finetune").lr == 0.5
    with pytest.raises(ValueError, match="unlearning.methods"):
        UnlearningRecipe.from_config(config, "retrain")


def test_l1sparse_adds_gamma_sign_theta_to_the_gradient(dataset):
    """Same start, same batch, plain SGD: l1sparse minus finetune is exactly -lr * gamma * sign(theta)."""
    start, finetuned = _one_step(dataset, "finetune")
    _, sparse = _one_step(dataset, "l1sparse")
    for name, theta in start.items():
        np.testing.assert_allclose(
            (sparse[name] - finetuned[name]).numpy(), (-0.1 * 0.01 * torch.sign(theta)).numpy(), atol=2e-6
        )


def test_sgld_noise_has_variance_two_lr_over_beta(dataset):
    _, finetuned = _one_step(dataset, "finetune")
    _, noisy = _one_step(dataset, "sgld")
    noise = torch.cat([(noisy[k] - finetuned[k]).flatten() for k in finetuned])
    assert noise.std().item() == pytest.approx(math.sqrt(2 * 0.1 / 400.0), rel=0.1)


def test_curve_records_every_evaluation_and_the_forget_examples(dataset):
    model = _model(dataset)
    result = unlearn(
        model,
        dataset,
        np.arange(10),
        _recipe("finetune", k_max=30, eval_every=10),
        seed=1,
        device=torch.device("cpu"),
        eval_retain_size=20,
        eval_test_size=20,
        progress=False,
    )
    assert result["curve"]["step"].tolist() == [0, 10, 20, 30]
    examples = result["forget_examples"]
    assert len(examples) == 4 * 10 and set(examples["index"]) == set(dataset.train.index[:10].tolist())
    assert not result["stopped_early"] and result["steps_run"] == 30


def test_early_stop_once_inside_the_band(dataset):
    model = _model(dataset)
    result = unlearn(
        model,
        dataset,
        np.arange(10),
        _recipe("finetune", k_max=200, eval_every=10),
        seed=1,
        device=torch.device("cpu"),
        eval_retain_size=20,
        eval_test_size=20,
        progress=False,
        band=(0.0, 1e6),
        consecutive=3,
        stop_margin=5,
    )
    # inside at 0, 10, 20: the criterion is met at step 20, then 5 more steps
    assert result["stopped_early"] and result["steps_run"] == 25
    assert result["curve"]["step"].tolist() == [0, 10, 20, 25]


def _banded_run(dataset, method, k_max, band, **kwargs):
    """A 10-example forget group, evaluated every 10 steps, against a fixed oracle band."""
    return unlearn(
        _model(dataset),
        dataset,
        np.arange(10),
        _recipe(method, k_max=k_max, eval_every=10),
        seed=1,
        device=torch.device("cpu"),
        eval_retain_size=20,
        eval_test_size=20,
        progress=False,
        band=band,
        consecutive=3,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("overshoot_evaluations", "evaluate_until", "steps_run"), [(2, 0, 10), (2, 30, 30), (None, 0, 60)]
)
def test_overshoot_stop_once_above_the_band(dataset, overshoot_evaluations, evaluate_until, steps_run):
    """A band below every possible loss: the run is above it at every evaluation, so it stops (as
    overshot) at the second evaluation, no earlier than evaluate_until; without the rule it runs on."""
    result = _banded_run(
        dataset,
        "random_label",
        60,
        (-10.0, 1.0),
        overshoot_evaluations=overshoot_evaluations,
        evaluate_until=evaluate_until,
    )
    assert result["steps_run"] == steps_run
    assert result["overshot"] == result["stopped_early"] == (overshoot_evaluations is not None)
    assert result["curve"]["step"].tolist() == list(range(0, steps_run + 1, 10))


def test_overshoot_marked_when_the_budgets_already_end_the_run(dataset):
    """evaluate_until = k_max: the rule cannot shorten the run, yet it is marked as overshot."""
    result = _banded_run(
        dataset, "random_label", 30, (-10.0, 1.0), overshoot_evaluations=1, evaluate_until=30
    )
    assert result["overshot"] and not result["stopped_early"] and result["steps_run"] == 30
    assert result["curve"]["step"].tolist() == [0, 10, 20, 30]


def test_overshoot_needs_consecutive_evaluations_above(dataset):
    """Inside a band that holds every loss the run is never above it: the criterion, not the
    overshoot rule, stops it."""
    result = _banded_run(dataset, "finetune", 60, (0.0, 1e6), overshoot_evaluations=1)
    assert result["steps_run"] == 20 and result["stopped_early"] and not result["overshot"]


def test_unlearning_is_deterministic(dataset):
    runs = []
    for _ in range(2):
        model = _model(dataset)
        unlearn(
            model,
            dataset,
            np.arange(10),
            _recipe("sgld", k_max=5),
            seed=3,
            device=torch.device("cpu"),
            eval_retain_size=20,
            eval_test_size=20,
            progress=False,
        )
        runs.append(copy.deepcopy(model.state_dict()))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_logit_confidence_is_the_logit_of_the_true_class_probability():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [30.0, -30.0, 0.0]])
    y = torch.tensor([0, 2, 1])
    phi = logit_confidence(logits, y)
    for row in range(2):
        p = torch.softmax(logits[row].double(), 0)[y[row]].item()
        assert phi[row].item() == pytest.approx(math.log(p / (1 - p)), rel=1e-6)
    # p_y ~ 1e-26 is beyond float probabilities: z_y - logsumexp(other logits) = -30 - log(e^30 + 1)
    assert phi[2].item() == pytest.approx(-30.0 - math.log(math.exp(30.0) + 1.0), rel=1e-6)


def test_method_registry_matches_the_config_schema():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    unlearning = schema["properties"]["unlearning"]["properties"]
    for key in ("methods", "proxy_methods"):
        assert list(METHODS) == unlearning[key]["items"]["enum"]
    assert all(callable(step) for step in METHODS.values())


def test_recipe_defaults_are_the_config_schema_defaults():
    # a recipe built directly (as in tests and user code) must unlearn as a config-built one does
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    unlearning = schema["properties"]["unlearning"]["properties"]
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(UnlearningRecipe)
        if f.default is not dataclasses.MISSING
    }
    assert len(defaults) == 6
    assert defaults == {key: unlearning[key]["default"] for key in defaults}


def test_unknown_method_is_refused(dataset):
    with pytest.raises(ValueError, match="unknown unlearning method 'retrain'"):
        unlearn(
            _model(dataset),
            dataset,
            np.arange(10),
            _recipe("retrain"),
            seed=0,
            device=torch.device("cpu"),
            progress=False,
        )


def test_forget_rows_are_validated(dataset):
    with pytest.raises(ValueError, match="forget rows"):
        unlearn(
            _model(dataset),
            dataset,
            np.array([10_000]),
            _recipe("finetune"),
            seed=0,
            device=torch.device("cpu"),
            progress=False,
        )


def _run(dataset, method, *, k_max, seed=1, **kwargs):
    model = _model(dataset)
    result = unlearn(
        model,
        dataset,
        np.arange(10),
        _recipe(method, k_max=k_max, eval_every=10),
        seed=seed,
        device=torch.device("cpu"),
        eval_retain_size=20,
        eval_test_size=20,
        progress=False,
        **kwargs,
    )
    return result, {k: v.clone() for k, v in model.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["finetune", "sgld"])
def test_barrier_endpoint_of_a_run_inside_the_band_at_step0(dataset, method):
    """Inside the band from step 0 the run stops at once (criterion met at 0, no margin), yet its barrier
    endpoint is the model after exactly snapshot_at steps of an identical run that never stops."""
    stopped, final = _run(
        dataset, method, k_max=60, band=(0.0, 1e6), consecutive=1, stop_margin=0, snapshot_at=30
    )
    assert stopped["stopped_early"] and stopped["steps_run"] == 0 and stopped["snapshot_steps"] == 30
    assert stopped["curve"]["step"].tolist() == [0]
    assert _equal(final, _model(dataset).state_dict())  # the final model is untouched, as without a snapshot
    _, through = _run(dataset, method, k_max=30)  # no band: never stops, ends after exactly 30 steps
    assert _equal(stopped["snapshot"], through)
    assert not _equal(stopped["snapshot"], final)


def test_barrier_endpoint_leaves_the_stop_decision_curve_and_final_model_unchanged(dataset):
    kwargs = dict(band=(0.0, 1e6), consecutive=3, stop_margin=5)
    plain, plain_final = _run(dataset, "sgld", k_max=200, **kwargs)
    snap, snap_final = _run(dataset, "sgld", k_max=200, snapshot_at=60, **kwargs)
    assert plain["steps_run"] == snap["steps_run"] == 25 and plain["stopped_early"] and snap["stopped_early"]
    pd.testing.assert_frame_equal(plain["curve"], snap["curve"])
    pd.testing.assert_frame_equal(plain["forget_examples"], snap["forget_examples"])
    assert _equal(plain_final, snap_final) and plain["snapshot"] is None
    _, through = _run(dataset, "sgld", k_max=60)
    assert _equal(snap["snapshot"], through)


def test_barrier_endpoint_mid_run_and_at_step0(dataset):
    """A run that goes past the endpoint step snapshots on the way; its final model is the full run's."""
    result, final = _run(dataset, "finetune", k_max=30, snapshot_at=10)
    assert result["steps_run"] == 30 and result["curve"]["step"].tolist() == [0, 10, 20, 30]
    _, full = _run(dataset, "finetune", k_max=30)
    _, short = _run(dataset, "finetune", k_max=10)
    assert _equal(final, full) and _equal(result["snapshot"], short)
    at_zero, _ = _run(dataset, "finetune", k_max=10, snapshot_at=0)
    assert _equal(at_zero["snapshot"], _model(dataset).state_dict())
    with pytest.raises(ValueError, match="barrier.unlearning_steps"):
        _run(dataset, "finetune", k_max=10, snapshot_at=11)


# --------------------------------------------------------------------------- the methods' updates
# One step of each method on a linear softmax model, against the closed-form gradients
# d CE / dW = (softmax(z) - onehot(y))^T x / n and d [T^2 KL(p_t || p_s)] / dz_s = T (p_s - p_t) / n.


def _linear_case(seed=0, n_retain=6, n_forget=4, d=3, classes=3):
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(d, classes).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(classes, d, generator=gen, dtype=torch.float64))
        model.bias.copy_(torch.randn(classes, generator=gen, dtype=torch.float64))
    xr = torch.randn(n_retain, d, generator=gen, dtype=torch.float64)
    yr = torch.randint(0, classes, (n_retain,), generator=gen)
    xf = torch.randn(n_forget, d, generator=gen, dtype=torch.float64)
    yf = torch.randint(0, classes, (n_forget,), generator=gen)
    return model, xr, yr, xf, yf


def _run_data(xf, yf, classes=3, steps_per_retain_epoch=100):
    # a batch size above |G|: every forget batch is all of G, so the mean losses do not depend on order
    return RunData(
        xf, yf, num_classes=classes, batch_size=64, steps_per_retain_epoch=steps_per_retain_epoch, seed=3
    )


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _params(model):
    return model.weight.detach().numpy().copy(), model.bias.detach().numpy().copy()


def _ce_grad(W, b, x, y):
    x = x.numpy()
    residual = _softmax(x @ W.T + b) - np.eye(W.shape[0])[y.numpy()]
    return residual.T @ x / len(x), residual.mean(axis=0)


def _kl_grad(W, b, W_teacher, b_teacher, x, temperature):
    x = x.numpy()
    p_s = _softmax((x @ W.T + b) / temperature)
    p_t = _softmax((x @ W_teacher.T + b_teacher) / temperature)
    residual = temperature * (p_s - p_t)
    return residual.T @ x / len(x), residual.mean(axis=0)


def _step(method, model, data, xr, yr, lr=0.1, **settings):
    recipe = _recipe(method, lr=lr, **settings)
    step = METHODS[method](model, data, recipe)
    optimizer = SGD(model.parameters(), lr=lr)
    step(optimizer, xr, yr, torch.Generator().manual_seed(0))
    return step, optimizer


def test_neggrad_plus_descends_on_retain_and_ascends_on_forget():
    model, xr, yr, xf, yf = _linear_case()
    W, b = _params(model)
    _step("neggrad_plus", model, _run_data(xf, yf), xr, yr, neggrad_alpha=0.7)
    (gw_r, gb_r), (gw_f, gb_f) = _ce_grad(W, b, xr, yr), _ce_grad(W, b, xf, yf)
    np.testing.assert_allclose(model.weight.detach().numpy(), W - 0.1 * (0.7 * gw_r - 0.3 * gw_f), atol=1e-12)
    np.testing.assert_allclose(model.bias.detach().numpy(), b - 0.1 * (0.7 * gb_r - 0.3 * gb_f), atol=1e-12)


def test_random_label_fine_tunes_on_retain_and_on_the_forget_group_under_fixed_random_labels():
    model, xr, yr, xf, yf = _linear_case()
    W, b = _params(model)
    data = _run_data(xf, yf)
    labels = data.forget_random_y.clone()
    assert labels.shape == yf.shape and 0 <= labels.min() and labels.max() < 3
    step, optimizer = _step("random_label", model, data, xr, yr)
    (gw_r, gb_r), (gw_f, gb_f) = _ce_grad(W, b, xr, yr), _ce_grad(W, b, xf, labels)
    np.testing.assert_allclose(model.weight.detach().numpy(), W - 0.1 * (gw_r + gw_f), atol=1e-12)
    np.testing.assert_allclose(model.bias.detach().numpy(), b - 0.1 * (gb_r + gb_f), atol=1e-12)
    assert torch.equal(data.forget_random_y, labels)  # drawn once per run, not per step


def test_salun_moves_only_the_most_salient_fraction_of_the_weights():
    model, xr, yr, xf, yf = _linear_case(n_forget=5)
    W, b = _params(model)
    data = _run_data(xf, yf)
    _step("salun", model, data, xr, yr, salun_fraction=0.25)
    # saliency |d sum CE(G) / d theta| = n_G |mean gradient|; the top 25 % of the 12 weights: 3
    gw_f, gb_f = _ce_grad(W, b, xf, yf)
    saliency = np.abs(np.concatenate([gw_f.ravel(), gb_f]))
    keep = saliency >= np.sort(saliency)[-3]
    assert keep.sum() == 3
    (gw_r, gb_r), (gw_rl, gb_rl) = _ce_grad(W, b, xr, yr), _ce_grad(W, b, xf, data.forget_random_y)
    update = -0.1 * np.concatenate([(gw_r + gw_rl).ravel(), gb_r + gb_rl]) * keep
    after = np.concatenate([model.weight.detach().numpy().ravel(), model.bias.detach().numpy()])
    np.testing.assert_allclose(after, np.concatenate([W.ravel(), b]) + update, atol=1e-12)
    assert np.array_equal(after[~keep], np.concatenate([W.ravel(), b])[~keep])  # bit for bit


def test_scrub_max_steps_in_its_first_epochs_then_only_min_steps():
    model, xr, yr, xf, yf = _linear_case()
    W0, b0 = _params(model)  # the teacher
    settings = dict(scrub_alpha=0.2, scrub_gamma=0.8, scrub_temperature=2.0, scrub_max_epochs=2)
    data = _run_data(xf, yf, steps_per_retain_epoch=1)
    step, optimizer = _step("scrub", model, data, xr, yr, **settings)
    # call 1: student = teacher, so both KL gradients vanish and only gamma * CE(retain) moves it
    gw_r, gb_r = _ce_grad(W0, b0, xr, yr)
    np.testing.assert_allclose(model.weight.detach().numpy(), W0 - 0.1 * 0.8 * gw_r, atol=1e-12)
    np.testing.assert_allclose(model.bias.detach().numpy(), b0 - 0.1 * 0.8 * gb_r, atol=1e-12)

    def expected_min_step(W, b):
        gw, gb = _ce_grad(W, b, xr, yr)
        kw, kb = _kl_grad(W, b, W0, b0, xr, 2.0)
        return W - 0.1 * (0.8 * gw + 0.2 * kw), b - 0.1 * (0.8 * gb + 0.2 * kb)

    # call 2 opens retain epoch 1 < scrub_max_epochs: an ascent step on the KL over G, then a min step
    W1, b1 = _params(model)
    kw, kb = _kl_grad(W1, b1, W0, b0, xf, 2.0)
    W2, b2 = expected_min_step(W1 + 0.1 * kw, b1 + 0.1 * kb)
    step(optimizer, xr, yr, None)
    np.testing.assert_allclose(model.weight.detach().numpy(), W2, atol=1e-12)
    np.testing.assert_allclose(model.bias.detach().numpy(), b2, atol=1e-12)
    # call 3 opens epoch 2: min step only
    W3, b3 = expected_min_step(W2, b2)
    step(optimizer, xr, yr, None)
    np.testing.assert_allclose(model.weight.detach().numpy(), W3, atol=1e-12)
    np.testing.assert_allclose(model.bias.detach().numpy(), b3, atol=1e-12)


@pytest.mark.parametrize("method", ["neggrad_plus", "scrub", "random_label", "salun"])
def test_methods_that_use_the_forget_group_run_whole_runs(dataset, method):
    model = _model(dataset)
    result = unlearn(
        model,
        dataset,
        np.arange(10),
        _recipe(method, k_max=6, eval_every=3),
        seed=0,
        device=torch.device("cpu"),
        eval_retain_size=20,
        eval_test_size=20,
        progress=False,
    )
    assert list(result["curve"]["step"]) == [0, 3, 6]
    assert np.isfinite(result["curve"]["forget_loss"]).all()
    assert any(
        (a != b).any() for a, b in zip(model.state_dict().values(), _model(dataset).state_dict().values())
    )
