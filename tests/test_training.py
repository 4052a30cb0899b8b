from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from perinstance import io
from perinstance.data import load_dataset
from perinstance.inference import load_model
from perinstance.pergrad import per_example_grad_norms
from perinstance.training import (
    checkpoint_steps,
    crop_flip,
    early_epoch,
    epoch_batches,
    learning_rates,
    load_checkpoint_index,
    load_run_dynamics,
    run_history,
    run_seed,
    run_weights,
    steps_per_epoch,
    train_run,
)


def _model_from(run_dir, config, dataset, file="model.pt"):
    return load_model(config, dataset, run_dir / file)


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(**tiny_config()["dataset"])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, dataset):
    config = tiny_config()
    out = tmp_path_factory.mktemp("runs") / "seed0"
    train_run(config, 0, out, progress=False, dataset=dataset)
    return config, out


# ----------------------------------------------------------------------- schedules


def test_checkpoint_schedule_log_spaced_then_every_epoch():
    cfg = {"step0": True, "log_start": 8, "every_epochs": 1}
    assert checkpoint_steps(cfg, 63, 3) == [0, 8, 16, 32, 63, 126, 189]
    cfg = {"step0": False, "log_start": None, "every_epochs": 2}
    assert checkpoint_steps(cfg, 10, 5) == [20, 40, 50]  # the final step is always kept


def test_steps_per_epoch():
    assert steps_per_epoch(4000, 64, "shuffle") == 63
    assert steps_per_epoch(4000, 64, "poisson") == 62


def test_learning_rate_schedules():
    base = tiny_config()["training"] | {"epochs": 4, "lr": 0.1}
    assert np.allclose(learning_rates(base, 5), 0.1)
    cosine = learning_rates(base | {"lr_schedule": "cosine"}, 5)
    assert cosine[0] == pytest.approx(0.1) and cosine[-1] < 0.01 and np.all(np.diff(cosine) <= 1e-12)
    steps = learning_rates(base | {"lr_schedule": "multistep", "lr_milestones": [2, 3], "lr_gamma": 0.5}, 5)
    assert np.allclose(steps, [0.1] * 10 + [0.05] * 5 + [0.025] * 5)
    warm = learning_rates(base | {"lr_warmup_epochs": 1}, 5)
    assert np.allclose(warm[:5], 0.1 * np.arange(1, 6) / 5) and np.allclose(warm[5:], 0.1)


def test_early_epoch_default_is_ten_percent():
    training = tiny_config()["training"]
    assert early_epoch(training | {"epochs": 30, "dynamics": {"early_epoch": None}}) == 3
    assert early_epoch(training | {"epochs": 3, "dynamics": {"early_epoch": None}}) == 1
    assert early_epoch(training | {"dynamics": {"early_epoch": 2}}) == 2


def test_shuffle_batches_cover_each_example_once():
    batches = epoch_batches(100, 32, "shuffle", torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [32, 32, 32, 4]
    assert sorted(torch.cat(batches).tolist()) == list(range(100))


def test_poisson_batches_have_rate_q():
    batches = epoch_batches(2000, 100, "poisson", torch.Generator().manual_seed(0))
    assert len(batches) == 20
    assert np.mean([len(b) for b in batches]) == pytest.approx(100, rel=0.1)


def test_crop_flip_keeps_shape_and_pixels():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    out = crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    unpadded = crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    for i in range(2):  # without padding a crop is the image itself, possibly mirrored
        assert torch.equal(unpadded[i], x[i]) or torch.equal(unpadded[i], x[i].flip(-1))


# ----------------------------------------------------------------------- runs


def test_run_directory_contents(finished_run, dataset):
    config, out = finished_run
    assert run_weights(out) == out / "model.pt" and run_weights(out).is_file()
    assert (out / "summary.json").is_file()
    assert run_seed(out) == 0
    assert not io.partial_dir(out).exists()
    index = load_checkpoint_index(out)
    spe = steps_per_epoch(len(dataset.train), 32, "shuffle")
    assert index["step"].tolist() == checkpoint_steps(config["training"]["checkpoints"], spe, 3)
    history = io.load_table(run_history(out))
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    assert history["train_accuracy"].iloc[-1] > 0.5  # the synthetic signal is learnable


def test_dynamics_are_consistent_with_checkpoints(finished_run, dataset):
    """Presentations at step s were computed at the weights of checkpoint s."""
    config, out = finished_run
    dyn = load_run_dynamics(out)
    n = len(dataset.train)
    spe = int(dyn["steps_per_epoch"])
    assert len(dyn["lr"]) == 3 * spe
    # shuffled epochs: every example is presented exactly once per epoch
    assert np.array_equal(np.bincount(dyn["presentation_example"], minlength=n), np.full(n, 3))
    assert np.array_equal(dyn["train_index"], dataset.train.index.numpy())
    for step in (0, spe):
        model = _model_from(out, config, dataset, f"checkpoints/step_{step:07d}.pt")
        rows = dyn["presentation_step"] == step
        examples = torch.as_tensor(dyn["presentation_example"][rows]).long()
        x, y = dataset.train.x[examples], dataset.train.y[examples]
        with torch.no_grad():
            logits = model(x)
        np.testing.assert_allclose(
            dyn["presentation_loss"][rows],
            F.cross_entropy(logits, y, reduction="none").numpy(),
            rtol=1e-5,
            atol=1e-6,
        )
        assert np.array_equal(dyn["presentation_correct"][rows], (logits.argmax(1) == y).numpy())
        np.testing.assert_allclose(
            dyn["presentation_grad_norm"][rows], per_example_grad_norms(model, x, y).numpy(), rtol=1e-4
        )
    # EL2N logits were taken after early_epoch (1) = the first epoch checkpoint
    model = _model_from(out, config, dataset, f"checkpoints/step_{spe:07d}.pt")
    with torch.no_grad():
        np.testing.assert_allclose(dyn["early_logits"], model(dataset.train.x).numpy(), rtol=1e-4, atol=1e-5)


def test_same_seed_same_numbers_different_seed_differs(finished_run, dataset, tmp_path):
    config, out = finished_run
    again = train_run(config, 0, tmp_path / "seed0", progress=False, dataset=dataset)
    other = train_run(config, 1, tmp_path / "seed1", progress=False, dataset=dataset)
    a, b, c = (io.load_state_dict(d / "model.pt") for d in (out, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert np.array_equal(
        load_run_dynamics(out)["presentation_loss"], load_run_dynamics(again)["presentation_loss"]
    )


@pytest.mark.parametrize(
    "overrides", [{}, {"optimizer": "sgld", "sgld_beta": 1e5, "sampling": "poisson", "augment": "crop_flip"}]
)
def test_interrupted_run_resumes_bit_identically(dataset, tmp_path, overrides):
    config = tiny_config(**overrides)
    straight = train_run(config, 3, tmp_path / "straight" / "seed3", progress=False, dataset=dataset)
    out = tmp_path / "resumed" / "seed3"
    work = train_run(config, 3, out, progress=False, dataset=dataset, stop_after_epoch=1)
    assert work == io.partial_dir(out) and (work / "resume.pt").is_file() and not out.exists()
    train_run(config, 3, out, progress=False, dataset=dataset)
    a, b = io.load_state_dict(straight / "model.pt"), io.load_state_dict(out / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    da, db = load_run_dynamics(straight), load_run_dynamics(out)
    for key in ("presentation_step", "presentation_example", "presentation_loss", "early_logits"):
        assert np.array_equal(da[key], db[key]), key
    assert pd.read_csv(straight / "checkpoints.csv").equals(pd.read_csv(out / "checkpoints.csv"))


def test_sgld_adds_noise_of_variance_two_lr_over_beta(dataset, tmp_path):
    """One full-batch step: SGLD minus SGD from the same start is exactly the injected noise."""
    n = len(dataset.train)
    common = dict(
        epochs=1,
        batch_size=n,
        momentum=0.0,
        weight_decay=0.0,
        lr=0.1,
        checkpoints={"step0": True, "log_start": None, "every_epochs": 1},
    )
    beta = 50.0
    sgd = train_run(tiny_config(**common), 0, tmp_path / "sgd", progress=False, dataset=dataset)
    sgld = train_run(
        tiny_config(**common, optimizer="sgld", sgld_beta=beta),
        0,
        tmp_path / "sgld",
        progress=False,
        dataset=dataset,
    )
    a, b = io.load_state_dict(sgd / "model.pt"), io.load_state_dict(sgld / "model.pt")
    noise = torch.cat([(b[k] - a[k]).flatten() for k in a])
    assert noise.std().item() == pytest.approx(math.sqrt(2 * 0.1 / beta), rel=0.1)
    assert abs(noise.mean().item()) < 0.1 * math.sqrt(2 * 0.1 / beta)


# ----------------------------------------------------------------------- resume, divergence, overwrites


def _same_weights(a_dir, b_dir) -> bool:
    a, b = io.load_state_dict(a_dir / "model.pt"), io.load_state_dict(b_dir / "model.pt")
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_partial_run_of_another_learning_rate_is_not_resumed(dataset, tmp_path, capsys):
    config, faster = tiny_config(), tiny_config()
    faster["training"]["lr"] = 0.2
    straight = train_run(faster, 0, tmp_path / "straight", progress=False, dataset=dataset)
    out = tmp_path / "seed0"
    train_run(config, 0, out, progress=False, dataset=dataset, stop_after_epoch=1)
    capsys.readouterr()
    train_run(faster, 0, out, progress=False, dataset=dataset)
    err = capsys.readouterr().err
    assert (
        f"discarding the partial run in {io.partial_dir(out)}: it was started with a different configuration"
        in err
    )
    assert "resuming" not in err
    assert _same_weights(straight, out)
    assert io.load_json(out / "summary.json")["training"]["lr"] == 0.2
    assert np.array_equal(
        load_run_dynamics(straight)["presentation_loss"], load_run_dynamics(out)["presentation_loss"]
    )


def test_partial_run_on_other_training_rows_is_not_resumed(dataset, tmp_path, capsys):
    """Oracles of two forget groups share config and seed; only the rows they train on differ."""
    from perinstance.retrain import subset_dataset

    config = tiny_config()
    keep_a, keep_b = np.ones(len(dataset.train), bool), np.ones(len(dataset.train), bool)
    keep_a[:10], keep_b[10:20] = False, False
    straight = train_run(
        config, 0, tmp_path / "straight", progress=False, dataset=subset_dataset(dataset, keep_b)
    )
    out = tmp_path / "oracle.run"
    train_run(config, 0, out, progress=False, dataset=subset_dataset(dataset, keep_a), stop_after_epoch=1)
    train_run(config, 0, out, progress=False, dataset=subset_dataset(dataset, keep_b))
    assert "different configuration, seed, training data" in capsys.readouterr().err
    assert _same_weights(straight, out)


def test_corrupt_resume_state_starts_afresh(finished_run, dataset, tmp_path, capsys):
    config, straight = finished_run
    out = tmp_path / "seed0"
    work = train_run(config, 0, out, progress=False, dataset=dataset, stop_after_epoch=1)
    resume = work / "resume.pt"
    resume.write_bytes(resume.read_bytes()[: resume.stat().st_size // 2])
    train_run(config, 0, out, progress=False, dataset=dataset)
    assert "resume.pt cannot be read (truncated or corrupt)" in capsys.readouterr().err
    assert _same_weights(straight, out) and not work.exists()


def test_resume_state_without_fingerprint_starts_afresh(finished_run, dataset, tmp_path, capsys):
    config, straight = finished_run
    out = tmp_path / "seed0"
    work = train_run(config, 0, out, progress=False, dataset=dataset, stop_after_epoch=1)
    state = torch.load(work / "resume.pt", weights_only=True)
    del state["fingerprint"]
    torch.save(state, work / "resume.pt")
    train_run(config, 0, out, progress=False, dataset=dataset)
    assert "carries no run fingerprint" in capsys.readouterr().err
    assert _same_weights(straight, out)


def test_run_fingerprint_covers_what_determines_the_run(dataset):
    from perinstance.retrain import subset_dataset
    from perinstance.training import _run_fingerprint

    config, cpu = tiny_config(), torch.device("cpu")
    base = _run_fingerprint(config, 0, dataset, cpu, None)
    assert _run_fingerprint(tiny_config(), 0, dataset, cpu, None) == base
    momentum = tiny_config()
    momentum["training"]["momentum"] = 0.5
    keep = np.ones(len(dataset.train), bool)
    keep[0] = False
    weights = {"w": torch.zeros(3)}
    others = {
        _run_fingerprint(momentum, 0, dataset, cpu, None),
        _run_fingerprint(config, 1, dataset, cpu, None),
        _run_fingerprint(config, 0, subset_dataset(dataset, keep), cpu, None),
        _run_fingerprint(config, 0, dataset, cpu, weights),
        _run_fingerprint(config, 0, dataset, cpu, {"w": torch.ones(3)}),
    }
    assert base not in others and len(others) == 5


def test_diverged_run_raises_and_publishes_nothing(dataset, tmp_path):
    from perinstance.training import DivergedRun

    config = tiny_config()
    config["training"]["lr"] = 1e6
    out = tmp_path / "seed4"
    with pytest.raises(
        DivergedRun,
        match=r"seed 4: non-finite .* epoch 1 of 3, at step \d+; lower config key "
        r"training\.lr \(now 1000000\.0\)",
    ):
        train_run(config, 4, out, progress=False, dataset=dataset)
    assert not out.exists() and not io.partial_dir(out).exists()


def test_train_refuses_to_replace_what_it_did_not_create(finished_run, dataset, tmp_path):
    config, _ = finished_run
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(io.RefusedOverwrite, match="--force"):
        train_run(config, 0, out, progress=False, dataset=dataset)
    assert (out / "notes.txt").read_text() == "precious" and not io.partial_dir(out).exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("precious")
    with pytest.raises(io.RefusedOverwrite, match="existing file"):
        train_run(config, 0, a_file, progress=False, dataset=dataset)
    assert a_file.read_text() == "precious"
    train_run(config, 0, out, progress=False, dataset=dataset, force=True)
    assert not (out / "notes.txt").exists() and (out / "model.pt").is_file()


def test_train_replaces_its_own_previous_run(finished_run, dataset, tmp_path):
    config, straight = finished_run
    out = tmp_path / "seed0"
    train_run(config, 1, out, progress=False, dataset=dataset)
    assert io.is_run_dir(out) and not _same_weights(straight, out)
    train_run(config, 0, out, progress=False, dataset=dataset)
    assert _same_weights(straight, out)


# -------------------------------------------------------------------- update rule, optimizer state, schedules


def _poisson_first_step(dataset, tmp_path, record_norms):
    config = tiny_config(
        sampling="poisson",
        epochs=1,
        checkpoints={"step0": True, "log_start": 1, "every_epochs": 1},
        dynamics={"early_epoch": 1, "batch_grad_norms": record_norms},
    )
    out = train_run(config, 5, tmp_path / f"poisson_{record_norms}", progress=False, dataset=dataset)
    return config, out


@pytest.mark.parametrize("record_norms", [True, False])
def test_poisson_step_uses_the_sum_over_the_expected_batch_size(dataset, tmp_path, record_norms):
    """Accounted rule: theta_1 = theta_0 - lr (sum_i grad l_i / B + wd theta_0), B the expected batch size."""
    config, out = _poisson_first_step(dataset, tmp_path, record_norms)
    training = config["training"]
    n, big_b = len(dataset.train), training["batch_size"]
    batch = epoch_batches(n, big_b, "poisson", torch.Generator().manual_seed(5))[0]
    assert len(batch) == 37 and big_b == 32  # a realised batch of another size than B: sum/B != mean
    lr = float(load_run_dynamics(out)["lr"][0])
    assert lr == pytest.approx(0.05)
    x, y = dataset.train.x[batch], dataset.train.y[batch]

    def manual_step(divisor):
        model = _model_from(out, config, dataset, "checkpoints/step_0000000.pt").train()
        loss = F.cross_entropy(model(x), y, reduction="sum") / divisor
        grads = torch.autograd.grad(loss, list(model.parameters()))
        with torch.no_grad():  # the first SGD step: the momentum buffer is the gradient itself
            return {
                name: p - lr * (g + training["weight_decay"] * p)
                for (name, p), g in zip(model.named_parameters(), grads)
            }

    after = io.load_state_dict(out / "checkpoints/step_0000001.pt")
    summed, meaned = manual_step(big_b), manual_step(len(batch))
    for name, expected in summed.items():
        torch.testing.assert_close(after[name], expected, rtol=1e-5, atol=1e-7)
    moved = max((after[k] - meaned[k]).abs().max().item() for k in meaned)
    assert moved > 1e-4  # the mean rule (the old behaviour) is far outside the tolerance
    if record_norms:  # per-example norms are those of each example's own loss, not rescaled by b / B
        dyn = load_run_dynamics(out)
        rows = dyn["presentation_step"] == 0
        assert np.array_equal(dyn["presentation_example"][rows], batch.numpy())
        model0 = _model_from(out, config, dataset, "checkpoints/step_0000000.pt")
        np.testing.assert_allclose(
            dyn["presentation_grad_norm"][rows], per_example_grad_norms(model0, x, y).numpy(), rtol=1e-4
        )


def test_empty_poisson_batch_is_a_weight_decay_step(dataset, tmp_path, monkeypatch):
    import perinstance.training as training_module

    real = training_module.epoch_batches
    monkeypatch.setattr(
        training_module,
        "epoch_batches",
        lambda n, b, sampling, gen: [torch.empty(0, dtype=torch.long)] + real(n, b, sampling, gen)[1:],
    )
    config, out = _poisson_first_step(dataset, tmp_path, True)
    before = io.load_state_dict(out / "checkpoints/step_0000000.pt")
    after = io.load_state_dict(out / "checkpoints/step_0000001.pt")
    decay = 1 - 0.05 * config["training"]["weight_decay"]
    for name in before:
        torch.testing.assert_close(after[name], before[name] * decay, rtol=1e-6, atol=1e-8)


def test_optimizer_state_is_saved_only_at_the_spawn_epoch(finished_run, dataset):
    config, out = finished_run
    spe = steps_per_epoch(len(dataset.train), 32, "shuffle")
    assert config["barrier"]["spawn_epoch"] == 1
    saved = sorted(p.name for p in (out / "checkpoints").glob("optimizer_*"))
    assert saved == [f"optimizer_step_{spe:07d}.pt"]
    state = io.load_torch(out / "checkpoints" / saved[0])
    assert state["param_groups"][0]["momentum"] == 0.9
    buffers = [s["momentum_buffer"] for s in state["state"].values()]
    assert len(buffers) == len(io.load_state_dict(out / "model.pt")) and all(
        b.abs().sum() > 0 for b in buffers
    )


def test_explicit_schedule_and_optimizer_state_are_checked(dataset, tmp_path):
    config = tiny_config(epochs=1)
    with pytest.raises(
        ValueError, match=r"one finite lr >= 0 per step, 1 epochs x 6 steps = 6, got shape \(5,\)"
    ):
        train_run(config, 0, tmp_path / "a", progress=False, dataset=dataset, schedule=np.full(5, 0.1))
    state = {"state": {}, "param_groups": [{"momentum": 0.5, "weight_decay": 2e-3, "params": [0]}]}
    with pytest.raises(ValueError, match="momentum 0.5, config key training.momentum is 0.9"):
        train_run(config, 0, tmp_path / "b", progress=False, dataset=dataset, init_optimizer_state=state)
    out = train_run(
        config, 0, tmp_path / "c", progress=False, dataset=dataset, schedule=np.linspace(0.06, 0.01, 6)
    )
    np.testing.assert_array_equal(load_run_dynamics(out)["lr"], np.linspace(0.06, 0.01, 6))


def test_fingerprint_covers_schedule_and_optimizer_state(dataset):
    from perinstance.training import _run_fingerprint

    config, cpu = tiny_config(), torch.device("cpu")
    base = _run_fingerprint(config, 0, dataset, cpu, None)
    opt = {"state": {0: {"momentum_buffer": torch.zeros(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    other = {"state": {0: {"momentum_buffer": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    variants = {
        _run_fingerprint(config, 0, dataset, cpu, None, schedule=np.full(18, 0.05)),
        _run_fingerprint(config, 0, dataset, cpu, None, schedule=np.full(18, 0.04)),
        _run_fingerprint(config, 0, dataset, cpu, None, init_optimizer_state=opt),
        _run_fingerprint(config, 0, dataset, cpu, None, init_optimizer_state=other),
        _run_fingerprint(config, 0, dataset, cpu, None, optimizer_state_at=6),
        _run_fingerprint(tiny_config(sampling="poisson"), 0, dataset, cpu, None),
    }
    assert base not in variants and len(variants) == 6


def test_run_seed_is_read_from_the_run_itself(finished_run, tmp_path):
    _, out = finished_run
    moved = tmp_path / "renamed"
    moved.mkdir()
    (moved / "summary.json").write_bytes((out / "summary.json").read_bytes())
    assert run_seed(moved) == 0  # not from the directory name
    io.save_json({"experiment": "x"}, tmp_path / "other" / "summary.json")
    with pytest.raises(io.CorruptArtefact, match=r"other/summary\.json: records no integer 'seed'"):
        run_seed(tmp_path / "other")
    with pytest.raises(FileNotFoundError, match=r"empty/summary\.json"):
        run_seed(tmp_path / "empty")
