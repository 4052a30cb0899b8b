"""PrivacyTracker: closed forms, the workflow's online estimator, resuming, bad input."""

from __future__ import annotations

import copy
import inspect
import io as stdio
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from perinstance.config import load_schema, validate_config
from perinstance.data import load_dataset
from perinstance.grad_norms import compute_checkpoint_norms
from perinstance.models import build_from_config
from perinstance.optim import SGD
from perinstance.privacy import online_rdp, privacy_settings
from perinstance.privacy_scores import privacy_tables
from perinstance.tracker import PrivacyTracker
from perinstance.training import epoch_batches, learning_rates, load_run_dynamics, train_run

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------- defaults


def test_defaults_are_the_config_defaults():
    schema = load_schema()["properties"]["privacy"]["properties"]
    defaults = inspect.signature(PrivacyTracker).parameters
    for key, parameter in (
        ("alpha", "alpha"),
        ("beta", "beta"),
        ("orders", "orders"),
        ("clip", "clip"),
        ("rdp_method", "rdp_method"),
        ("max_lr_levels", "max_lr_levels"),
    ):
        expected = schema[key]["default"]
        got = defaults[parameter].default
        if key == "orders":
            assert [float(o) for o in got] == [float(o) for o in expected]
        else:
            assert got == expected, key


# ----------------------------------------------------------------------- closed form


def _subsampled_gaussian_rdp_integer(q: float, z: np.ndarray, order: int) -> np.ndarray:
    """RDP of the Poisson-subsampled Gaussian at an integer order, from its binomial expansion
    (Mironov, Talwar, Zhang 2019): A = sum_k C(a, k) (1-q)^(a-k) q^k exp((k^2 - k) / (2 z^2))."""
    total = sum(
        math.comb(order, k) * (1 - q) ** (order - k) * q**k * np.exp((k * k - k) / (2.0 * z**2))
        for k in range(order + 1)
    )
    return np.log(total) / (order - 1)


def _linear_ce_norms(model: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    # CE of softmax(W x + b): gradient (p - e_y) x^T for W and (p - e_y) for b, so the norm is
    # ||p - e_y|| sqrt(||x||^2 + 1).
    with torch.no_grad():
        w, b, x = model.weight.double(), model.bias.double(), x.double()
        residual = torch.softmax(x @ w.T + b, dim=1) - F.one_hot(y, w.shape[0]).double()
        return (residual.norm(dim=1) * (x.pow(2).sum(1) + 1).sqrt()).numpy()


@pytest.mark.parametrize("q_one", [False, True])
def test_linear_model_closed_form(q_one):
    n, batch, epochs, beta = 12, (12 if q_one else 4), 3, 50.0
    spe = n // batch
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = torch.randn(n, 5), torch.randint(0, 3, (n,))
    tracker = PrivacyTracker(model, n, batch, beta=beta, orders=[2, 8], alpha=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    rng = np.random.default_rng(0)
    step_lr = np.empty(epochs * spe)
    norms = np.full((n, epochs), np.nan)  # shuffle: each example once per epoch
    for epoch in range(epochs):
        order = rng.permutation(n)
        for i in range(spe):
            step = epoch * spe + i
            ids = order[i * batch : (i + 1) * batch]
            lr = 0.3 / (1 + step)  # a different rate at every step
            step_lr[step] = lr
            norms[ids, epoch] = _linear_ce_norms(model, x[ids], y[ids])
            optimizer.zero_grad()
            out = tracker.backward(x[ids], y[ids], torch.as_tensor(ids), lr=lr)
            np.testing.assert_allclose(out.norms.numpy(), norms[ids, epoch], rtol=1e-5)
            torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, y[ids]))
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
    assert tracker.steps == epochs * spe and tracker.epochs == epochs
    np.testing.assert_array_equal(tracker.learning_rates, step_lr)

    # Each epoch's norm stands for every step of that epoch, each at its own lr.
    q = batch / n
    expected = np.zeros((n, 2))
    for epoch in range(epochs):
        for step in range(epoch * spe, (epoch + 1) * spe):
            z = batch * np.sqrt(2.0 / (step_lr[step] * beta)) / norms[:, epoch]
            if q_one:  # the Gaussian mechanism: alpha / (2 z^2)
                expected += np.stack([2 / (2 * z**2), 8 / (2 * z**2)], axis=1)
            else:
                expected += np.stack([_subsampled_gaussian_rdp_integer(q, z, a) for a in (2, 8)], axis=1)
    np.testing.assert_allclose(tracker.rdp(), expected, rtol=1e-5)
    table = tracker.privacy_losses()
    assert list(table.columns) == [
        "index",
        "label",
        "privacy_loss",
        "privacy_loss_4alpha",
        "sum_sq_grad_norm",
    ]
    np.testing.assert_array_equal(table["index"], np.arange(n))
    np.testing.assert_array_equal(table["label"], y.numpy())
    np.testing.assert_allclose(table["privacy_loss"], expected[:, 0], rtol=1e-5)
    np.testing.assert_allclose(table["privacy_loss_4alpha"], expected[:, 1], rtol=1e-5)
    np.testing.assert_allclose(table["sum_sq_grad_norm"], (norms**2 * spe).sum(1), rtol=1e-5)


def test_clip_bounds_the_accounted_norm():
    torch.manual_seed(1)
    model = nn.Linear(4, 2)
    x, y = 2 * torch.randn(8, 4), torch.randint(0, 2, (8,))
    norms = _linear_ce_norms(model, x, y)
    clip = float(np.median(norms))
    tracker = PrivacyTracker(model, 8, 8, clip=clip, beta=10.0, orders=[2])
    out = tracker.backward(x, y, range(8), lr=0.1)
    np.testing.assert_allclose(out.norms.numpy(), norms, rtol=1e-5)  # training is not clipped
    z = 8 * np.sqrt(2 / (0.1 * 10.0)) / np.minimum(norms, clip)
    np.testing.assert_allclose(tracker.rdp()[:, 0], 2 / (2 * z**2), rtol=1e-5)
    assert (norms > clip).sum() == 4


# ----------------------------------------------------------------------- the workflow's estimator


def _recipe(sampling: str) -> dict:
    """config.yaml's default recipe (SmallCNN width 16, batch 64, momentum SGD) on 320 digits."""
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["dataset"] = {"name": "digits", "test_fraction": 0.2, "split_seed": 0, "n_train": 320, "n_test": 60}
    # Poisson at q = 0.2: over 6 x 5 steps every example is drawn (the workflow requires it).
    raw["training"]["epochs"] = 3 if sampling == "shuffle" else 6
    raw["training"]["sampling"] = sampling
    raw["device"] = "cpu"
    raw["groups"]["size"] = 10  # the rank bins of the default plan must fit in 320 examples
    raw["privacy"]["rdp_method"] = "interpolate"  # as every run of more than 500 examples
    config = validate_config(raw)
    assert config["training"]["dynamics"]["batch_grad_norms"]
    return config


def _hand_written_run(config, dataset, seed, *, stop_after_step=None, state=None):
    """The user's own loop: the same initialisation, batches and learning rates as train_run."""
    training = config["training"]
    train = dataset.train
    n = len(train)
    torch.manual_seed(seed)
    model = build_from_config(config, dataset)
    optimizer = SGD(
        model.parameters(),
        lr=training["lr"],
        momentum=training["momentum"],
        weight_decay=training["weight_decay"],
    )
    tracker = PrivacyTracker.from_config(model, config, n, optimizer=optimizer, index=train.index)
    spe = tracker.steps_per_epoch
    lrs = learning_rates(training, spe)
    batch_gen = torch.Generator().manual_seed(seed)
    batches = [
        b
        for _ in range(training["epochs"])
        for b in epoch_batches(n, training["batch_size"], training["sampling"], batch_gen)
    ]
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        tracker.load_state_dict(state["tracker"])
        start = tracker.steps
    model.train()
    for step in range(start, len(batches)):
        if stop_after_step is not None and step == stop_after_step:
            buffer = stdio.BytesIO()
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "tracker": tracker.state_dict(),
                },
                buffer,
            )
            buffer.seek(0)
            return model, tracker, torch.load(buffer, weights_only=True)
        batch = batches[step]
        for group in optimizer.param_groups:
            group["lr"] = float(lrs[step])
        optimizer.zero_grad(set_to_none=True)
        tracker.backward(train.x[batch], train.y[batch], batch)
        optimizer.step()
    return model, tracker, None


@pytest.mark.parametrize("sampling", ["shuffle", "poisson"])
def test_equals_the_workflow_online_estimator(sampling, tmp_path):
    config = _recipe(sampling)
    dataset = load_dataset(**config["dataset"])
    seed = 3
    run = train_run(config, seed, tmp_path / "run", progress=False, dataset=dataset)
    norms = compute_checkpoint_norms(config, run, tmp_path / "norms.npz", progress=False)
    workflow = privacy_tables(config, [(seed, run, norms)])
    dynamics = load_run_dynamics(run)

    model, tracker, _ = _hand_written_run(config, dataset, seed)
    # The same run: the same final weights, bit for bit ...
    trained = torch.load(run / "model.pt", weights_only=True)
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    assert tracker.steps == len(dynamics["lr"])
    np.testing.assert_array_equal(tracker.learning_rates, dynamics["lr"])
    # ... and the same P at every order, bit for bit.
    settings = privacy_settings(config)
    expected = online_rdp(
        dynamics,
        beta=settings["beta"],
        orders=settings["orders"],
        clip=settings["clip"],
        method=settings["method"],
        max_lr_levels=config["privacy"]["max_lr_levels"],
    )
    np.testing.assert_array_equal(tracker.rdp(), expected)
    long = tracker.privacy_losses(long=True, seed=seed)
    online = workflow["long"][workflow["long"]["estimator"] == "online"].reset_index(drop=True)
    assert list(long.columns) == list(online.columns)
    for column in long.columns:
        np.testing.assert_array_equal(long[column].to_numpy(), online[column].to_numpy(), err_msg=column)
    wide = tracker.privacy_losses()
    np.testing.assert_array_equal(wide["index"], workflow["privacy"]["index"])
    np.testing.assert_array_equal(wide["label"], workflow["privacy"]["label"])
    np.testing.assert_array_equal(wide["privacy_loss"], workflow["privacy"]["privacy_loss_online"])
    assert wide["privacy_loss"].nunique() > len(wide) // 2  # real per-example values


def test_resume_from_state_dict_is_identical():
    config = _recipe("shuffle")
    config["training"]["epochs"] = 2
    dataset = load_dataset(**config["dataset"])
    model, tracker, _ = _hand_written_run(config, dataset, 0)
    spe = tracker.steps_per_epoch
    for stop in (spe + 2, spe):  # mid-epoch and at an epoch boundary
        _, half, state = _hand_written_run(config, dataset, 0, stop_after_step=stop)
        assert half.steps == stop
        resumed_model, resumed, _ = _hand_written_run(config, dataset, 0, state=state)
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in resumed_model.state_dict().items())
        np.testing.assert_array_equal(resumed.rdp(), tracker.rdp())
        assert resumed.privacy_losses().equals(tracker.privacy_losses())
        np.testing.assert_array_equal(resumed.learning_rates, tracker.learning_rates)

    # Loaded norms are accounted with the loading tracker's own settings: re-accounting the run
    # at beta 50 gives what tracking it at beta 50 from the start gives.
    hotter = copy.deepcopy(config)
    hotter["privacy"]["beta"] = 50.0
    _, direct, _ = _hand_written_run(hotter, dataset, 0)
    other = PrivacyTracker.from_config(nn.Linear(2, 2), hotter, len(dataset.train))
    other.load_state_dict(tracker.state_dict())
    np.testing.assert_array_equal(other.rdp(), direct.rdp())
    assert np.all(other.rdp() < tracker.rdp())  # noise std sqrt(2 lr / beta): more noise, less loss

    wrong = PrivacyTracker(nn.Linear(2, 2), len(dataset.train), 32)
    with pytest.raises(ValueError, match="batch_size=64, this tracker batch_size=32"):
        wrong.load_state_dict(tracker.state_dict())
    with pytest.raises(ValueError, match="version"):
        wrong.load_state_dict({"version": 99})


def test_presentations_recompute_the_same_p_through_online_rdp():
    # Poisson sampling at a low rate: several presentations in some epochs, none in others, so the
    # per-epoch means and the fill (latest earlier, else first later epoch) are exercised.
    torch.manual_seed(0)
    n, batch, spe, epochs = 40, 6, 5, 8
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(inplace=True), nn.Linear(8, 2))
    x, y = torch.randn(n, 3), torch.randint(0, 2, (n,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    tracker = PrivacyTracker(
        model, n, batch, optimizer=optimizer, sampling="poisson", steps_per_epoch=spe, keep_presentations=True
    )
    generator = torch.Generator().manual_seed(1)
    schedule = np.repeat([0.1, 0.05, 0.02, 0.01], 10)
    for step in range(spe * epochs):
        ids = torch.nonzero(torch.rand(n, generator=generator) < batch / n).flatten()
        optimizer.param_groups[0]["lr"] = schedule[step]
        optimizer.zero_grad()
        tracker.backward(x[ids], y[ids], ids)
        optimizer.step()
    means, counts = tracker.epoch_norms()
    assert tracker.presented().all() and (counts == 0).any() and (counts > 1).any()
    expected = online_rdp(tracker.dynamics(), beta=tracker.beta, orders=tracker.orders, method="auto")
    np.testing.assert_array_equal(tracker.rdp(), expected)
    table = tracker.epoch_table()
    assert len(table) == n * epochs
    np.testing.assert_array_equal(table["presentations"].to_numpy().reshape(n, epochs), counts)


def test_poisson_backward_is_the_sum_over_the_expected_batch_size():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    F.cross_entropy(model(x), y, reduction="sum").div(20).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    earlier = [torch.randn_like(p) for p in model.parameters()]
    for p, e in zip(model.parameters(), earlier):
        p.grad = e.clone()  # gradients accumulated before: kept, not rescaled
    tracker = PrivacyTracker(model, 100, 20, sampling="poisson")
    out = tracker.backward(x, y, [0, 1, 2, 3, 4], lr=0.1)
    for p, g, e in zip(model.parameters(), expected, earlier):
        torch.testing.assert_close(p.grad, g + e)
    torch.testing.assert_close(out.loss, out.losses.sum() / 20)


def test_empty_batch_is_a_step_without_examples():
    model = nn.Linear(4, 3)
    tracker = PrivacyTracker(model, 10, 2, sampling="poisson", steps_per_epoch=2)
    out = tracker.backward(torch.empty(0, 4), torch.empty(0, dtype=torch.long), [], lr=0.1)
    assert tracker.steps == 1 and out.norms.numel() == 0
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in model.parameters())
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    for _ in range(3):
        tracker.backward(x, y, range(10), lr=0.1)
    # The first epoch's two steps (one empty) both take the norm seen in its second step.
    means, counts = tracker.epoch_norms()
    np.testing.assert_array_equal(counts, [[1, 2]] * 10)
    assert tracker.learning_rates.tolist() == [0.1] * 4


def test_in_place_relu_model_stays_on_the_fast_engine():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.GroupNorm(2, 4),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(64, 3),
    )
    tracker = PrivacyTracker(model, 6, 6)
    assert tracker.fast_engine_problems == []
    x, y = torch.randn(6, 1, 4, 4), torch.randint(0, 3, (6,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reference fallback would warn
        out = tracker.backward(x, y, range(6), lr=0.1)
    from perinstance.pergrad import naive_per_example_grad_norms

    torch.testing.assert_close(out.norms, naive_per_example_grad_norms(model, x, y), rtol=1e-4, atol=0)


def test_loss_fn_regression():
    # Squared error of a linear model: per-example gradient norm ||r|| sqrt(||x||^2 + 1).
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, t = torch.randn(6, 3), torch.randn(6, 2)
    tracker = PrivacyTracker(model, 6, 6, loss_fn=lambda out, target: 0.5 * (out - target).pow(2).sum(1))
    with torch.no_grad():
        r = model(x) - t
    out = tracker.backward(x, t, range(6), lr=0.1)
    torch.testing.assert_close(out.norms, r.norm(dim=1) * (x.pow(2).sum(1) + 1).sqrt(), rtol=1e-5, atol=0)
    assert "label" not in tracker.privacy_losses().columns  # the targets are not class labels


# ----------------------------------------------------------------------- bad input


def _tiny():
    model = nn.Linear(4, 3)
    return model, PrivacyTracker(model, 10, 5), torch.randn(5, 4), torch.randint(0, 3, (5,))


def test_ids_out_of_range_and_mismatched_lengths_are_refused():
    _, tracker, x, y = _tiny()
    with pytest.raises(ValueError, match=r"ids must lie in 0 \.\. n-1 = 9, got \[10\]"):
        tracker.backward(x, y, [0, 1, 2, 3, 10], lr=0.1)
    with pytest.raises(ValueError, match=r"got \[-1\]"):
        tracker.backward(x, y, [-1, 1, 2, 3, 4], lr=0.1)
    with pytest.raises(ValueError, match="same length, got 5, 5 and 4"):
        tracker.backward(x, y, [0, 1, 2, 3], lr=0.1)
    with pytest.raises(ValueError, match="same length, got 5, 4 and 5"):
        tracker.backward(x, y[:4], range(5), lr=0.1)
    with pytest.raises(ValueError, match="ids must be integers"):
        tracker.backward(x, y, torch.arange(5.0), lr=0.1)
    with pytest.raises(ValueError, match="no learning rate"):
        tracker.backward(x, y, range(5))
    with pytest.raises(ValueError, match="lr must be finite"):
        tracker.backward(x, y, range(5), lr=float("nan"))
    assert tracker.steps == 0  # nothing recorded by a refused call
    with pytest.raises(ValueError, match="no steps recorded"):
        tracker.rdp()


def test_examples_never_presented():
    _, tracker, x, y = _tiny()
    tracker.backward(x, y, range(5), lr=0.1)
    with pytest.raises(ValueError, match=r"5 of 10 examples were never presented \(ids \[5, 6, 7, 8, 9\]\)"):
        tracker.privacy_losses()
    table = tracker.privacy_losses(unseen="nan")
    assert table["privacy_loss"].isna().tolist() == [False] * 5 + [True] * 5


def test_bad_constructor_arguments():
    model = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        PrivacyTracker(model, 0, 5)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        PrivacyTracker(model, 10, 2.5)
    with pytest.raises(ValueError, match="sampling must be one of"):
        PrivacyTracker(model, 10, 5, sampling="random")
    with pytest.raises(ValueError, match="orders"):
        PrivacyTracker(model, 10, 5, orders=[0.5])
    with pytest.raises(ValueError, match="beta"):
        PrivacyTracker(model, 10, 5, beta=0.0)
    with pytest.raises(ValueError, match="rdp_method"):
        PrivacyTracker(model, 10, 5, rdp_method="fast")
    with pytest.raises(ValueError, match=r"index must hold one integer per example, shape \(10,\)"):
        PrivacyTracker(model, 10, 5, index=np.arange(9))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        PrivacyTracker("model", 10, 5)


@pytest.mark.parametrize("norm", [nn.BatchNorm1d, nn.SyncBatchNorm])
def test_batchnorm_model_is_refused(norm):
    model = nn.Sequential(nn.Linear(4, 6), norm(6), nn.Linear(6, 3))
    with pytest.raises(ValueError, match=r"BatchNorm .*other examples .*batchnorm_to_groupnorm"):
        PrivacyTracker(model, 10, 5)


def test_batchnorm_conversion_is_accepted():
    from perinstance.model_checks import batchnorm_to_groupnorm

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))
    converted = batchnorm_to_groupnorm(model)
    tracker = PrivacyTracker(converted, 4, 4)
    out = tracker.backward(torch.randn(4, 1, 4, 4), torch.randint(0, 3, (4,)), range(4), lr=0.1)
    assert out.norms.shape == (4,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_match_cpu_and_resume_across_devices():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(inplace=True), nn.Linear(8, 3))
    x, y = torch.randn(12, 5), torch.randint(0, 3, (12,))
    on_cpu = PrivacyTracker(copy.deepcopy(model), 12, 4, steps_per_epoch=3)
    on_cuda = PrivacyTracker(copy.deepcopy(model).cuda(), 12, 4, steps_per_epoch=3)
    for step in range(6):
        ids = torch.arange(step % 3 * 4, step % 3 * 4 + 4)
        on_cpu.backward(x[ids], y[ids], ids, lr=0.0)  # lr 0: the weights, hence the norms, stay put
        on_cuda.backward(x[ids].cuda(), y[ids].cuda(), ids, lr=0.0)
        if step == 3:  # mid-epoch: continue on a fresh tracker from the saved state
            resumed = PrivacyTracker(on_cuda.model, 12, 4, steps_per_epoch=3)
            resumed.load_state_dict(on_cuda.state_dict())
            on_cuda = resumed
    np.testing.assert_allclose(on_cuda.rdp(), on_cpu.rdp(), rtol=1e-4)
    np.testing.assert_array_equal(on_cuda.labels(), y.numpy())
