from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from perinstance.data import load_dataset
from perinstance.evaluation import logit_scaled_confidence_from_logits
from perinstance.models import build_model
from perinstance.unlearning import UnlearningRecipe, logit_confidence, unlearn

from conftest import tiny_config


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(**tiny_config()["dataset"])


def _model(dataset, seed=0):
    torch.manual_seed(seed)
    return build_model("smallcnn", width=4, norm_groups=2, num_classes=dataset.num_classes,
                       input_shape=dataset.input_shape)


def _recipe(method, **overrides):
    base = dict(method=method, lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=16, sgld_beta=400.0,
                l1_gamma=0.01, k_max=1, eval_every=1)
    return UnlearningRecipe(**(base | overrides))


def _one_step(dataset, method, **overrides):
    model = _model(dataset)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    unlearn(model, dataset, np.arange(10), _recipe(method, **overrides), seed=0, device=torch.device("cpu"),
            eval_retain_size=20, eval_test_size=20, progress=False)
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
        np.testing.assert_allclose((sparse[name] - finetuned[name]).numpy(), (-0.1 * 0.01 * torch.sign(theta)).numpy(),
                                   atol=2e-6)


def test_sgld_noise_has_variance_two_lr_over_beta(dataset):
    _, finetuned = _one_step(dataset, "finetune")
    _, noisy = _one_step(dataset, "sgld")
    noise = torch.cat([(noisy[k] - finetuned[k]).flatten() for k in finetuned])
    assert noise.std().item() == pytest.approx(math.sqrt(2 * 0.1 / 400.0), rel=0.1)


def test_curve_records_every_evaluation_and_the_forget_examples(dataset):
    model = _model(dataset)
    result = unlearn(model, dataset, np.arange(10), _recipe("finetune", k_max=30, eval_every=10), seed=1,
                     device=torch.device("cpu"), eval_retain_size=20, eval_test_size=20, progress=False)
    assert result["curve"]["step"].tolist() == [0, 10, 20, 30]
    examples = result["forget_examples"]
    assert len(examples) == 4 * 10 and set(examples["index"]) == set(dataset.train.index[:10].tolist())
    assert not result["stopped_early"] and result["steps_run"] == 30


def test_early_stop_once_inside_the_band(dataset):
    model = _model(dataset)
    result = unlearn(model, dataset, np.arange(10), _recipe("finetune", k_max=200, eval_every=10), seed=1,
                     device=torch.device("cpu"), eval_retain_size=20, eval_test_size=20, progress=False,
                     band=(0.0, 1e6), consecutive=3, stop_margin=5)
    # inside at 0, 10, 20: the criterion is met at step 20, then 5 more steps
    assert result["stopped_early"] and result["steps_run"] == 25
    assert result["curve"]["step"].tolist() == [0, 10, 20, 25]


def test_unlearning_is_deterministic(dataset):
    runs = []
    for _ in range(2):
        model = _model(dataset)
        unlearn(model, dataset, np.arange(10), _recipe("sgld", k_max=5), seed=3, device=torch.device("cpu"),
                eval_retain_size=20, eval_test_size=20, progress=False)
        runs.append(copy.deepcopy(model.state_dict()))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_logit_confidence_matches_the_numpy_definition():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0], [30.0, -30.0, 0.0]])
    y = torch.tensor([0, 2, 1])
    np.testing.assert_allclose(logit_confidence(logits, y).numpy(),
                               logit_scaled_confidence_from_logits(logits.numpy(), y.numpy()), rtol=1e-6)
    p = torch.softmax(logits[0].double(), 0)[0].item()
    assert logit_confidence(logits[:1], y[:1]).item() == pytest.approx(math.log(p / (1 - p)), rel=1e-6)


def test_forget_rows_are_validated(dataset):
    with pytest.raises(ValueError, match="forget rows"):
        unlearn(_model(dataset), dataset, np.array([10_000]), _recipe("finetune"), seed=0,
                device=torch.device("cpu"), progress=False)
