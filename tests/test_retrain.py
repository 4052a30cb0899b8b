"""Retrained models (holdouts, oracles, spawned oracles): their `.run` work directories and outputs."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from perinstance import io
from perinstance.data import load_dataset
from perinstance.inference import load_model
from perinstance.plan import oracle_seed
from perinstance.retrain import (
    continued_schedule,
    discard_run,
    holdout_predictions,
    lean_config,
    run_oracle,
    run_spawned_oracle,
    subset_dataset,
)
from perinstance.training import epoch_batches, learning_rates, load_run_dynamics, train_run


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    config = tiny_config()
    dataset = load_dataset(**config["dataset"])
    root = tmp_path_factory.mktemp("retrain")
    run = train_run(config, 0, root / "seed0", progress=False, dataset=dataset)
    groups = io.save_table(
        pd.DataFrame({"score": "el2n", "group": "g0", "index": dataset.train.index.numpy()[:10]}),
        root / "groups.csv",
    )
    return config, run, groups


def _unrelated(path):
    path.mkdir()
    (path / "data.txt").write_text("not yours")
    return path


def test_holdout_refuses_an_unrelated_run_sibling(tmp_path):
    blocker = _unrelated(tmp_path / "holdout0.run")
    with pytest.raises(io.RefusedOverwrite, match=r"holdout0\.run .*--force"):
        holdout_predictions(tiny_config(), 0, tmp_path / "holdout0.npz", progress=False)
    assert (blocker / "data.txt").read_text() == "not yours" and not (tmp_path / "holdout0.npz").exists()


def test_holdout_with_force_replaces_the_sibling_and_cleans_up(tmp_path):
    _unrelated(tmp_path / "holdout0.run")
    out = holdout_predictions(tiny_config(), 0, tmp_path / "holdout0.npz", progress=False, force=True)
    assert set(io.load_npz(out)) == {"trained_on", "prob_true", "train_index"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["holdout0.npz"]


def test_oracle_refuses_an_unrelated_run_sibling(original, tmp_path):
    config, _, groups = original
    blocker = _unrelated(tmp_path / "eval.run")
    with pytest.raises(io.RefusedOverwrite):
        run_oracle(
            config, "el2n", "g0", 0, groups, tmp_path / "model.pt", tmp_path / "eval.npz", progress=False
        )
    assert (blocker / "data.txt").is_file() and not (tmp_path / "model.pt").exists()


def test_spawned_oracle_refuses_an_unrelated_run_sibling(original, tmp_path):
    config, run, groups = original
    blocker = _unrelated(tmp_path / "spawned.run")
    with pytest.raises(io.RefusedOverwrite):
        run_spawned_oracle(config, "el2n", "g0", groups, run, tmp_path / "spawned.pt", progress=False)
    assert (blocker / "data.txt").is_file()


def test_interrupted_spawned_oracle_copy_leaves_no_partial_model(original, tmp_path, monkeypatch):
    config, run, groups = original
    out = tmp_path / "spawned.pt"
    copy = shutil.copyfile

    def interrupted(src, dst, **kwargs):
        copy(src, dst, **kwargs)
        with open(dst, "r+b") as fh:
            fh.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_spawned_oracle(config, "el2n", "g0", groups, run, out, progress=False)
    assert not out.exists()
    monkeypatch.setattr(shutil, "copyfile", copy)
    # The interrupted call had published its .run; this one replaces it and removes it at the end.
    run_spawned_oracle(config, "el2n", "g0", groups, run, out, progress=False)
    weights = io.load_state_dict(out)
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spawned.pt"]


def test_discard_run_removes_only_marked_runs(original, tmp_path):
    config, run, _ = original
    mine = train_run(config, 1, tmp_path / "seed1", progress=False)
    discard_run(mine)
    assert not mine.exists()
    discard_run(tmp_path / "never_made")
    other = _unrelated(tmp_path / "x.run")
    with pytest.raises(io.RefusedOverwrite):
        discard_run(other)
    assert (other / "data.txt").is_file()


# ------------------------------------------------------------------ the spawned oracle continues the original


def _groups_csv(dataset, path, size):
    return io.save_table(
        pd.DataFrame({"score": "el2n", "group": "g0", "index": dataset.train.index.numpy()[:size]}), path
    )


@pytest.fixture(scope="module")
def cosine_original(tmp_path_factory):
    """Warm-up 1 epoch + cosine over 3 epochs, spawned at epoch 1 (6 steps per epoch on 180 examples)."""
    config = tiny_config(lr_schedule="cosine", lr_warmup_epochs=1)
    assert config["barrier"]["spawn_epoch"] == 1
    dataset = load_dataset(**config["dataset"])
    root = tmp_path_factory.mktemp("cosine")
    return config, dataset, train_run(config, 0, root / "seed0", progress=False, dataset=dataset), root


def _spawn_keeping_run(config, groups, original, out, monkeypatch):
    import perinstance.retrain as retrain

    monkeypatch.setattr(retrain, "discard_run", lambda path: None)  # keep <out>.run to read its dynamics
    run_spawned_oracle(config, "el2n", "g0", groups, original, out, progress=False)
    return out.with_suffix(".run")


def test_continued_schedule_maps_steps_by_epoch_fraction():
    lr = np.arange(12.0)  # 3 epochs x 4 steps
    assert continued_schedule(lr, 4, 1, 4).tolist() == [4, 5, 6, 7, 8, 9, 10, 11]
    assert continued_schedule(lr, 4, 1, 3).tolist() == [4, 5, 6, 8, 9, 10]  # step i -> 4 + floor(4 i / 3)
    assert continued_schedule(lr, 4, 0, 2).tolist() == [0, 2, 4, 6, 8, 10]
    with pytest.raises(ValueError, match="not before the original's last epoch"):
        continued_schedule(lr, 4, 3, 4)


def test_spawned_oracle_continues_the_lr_schedule_and_the_momentum(cosine_original, tmp_path, monkeypatch):
    config, dataset, original, _ = cosine_original
    groups = _groups_csv(
        dataset, tmp_path / "groups.csv", 10
    )  # 170 retained: 6 steps per epoch, as the original
    spawned = _spawn_keeping_run(config, groups, original, tmp_path / "spawned.pt", monkeypatch)
    lr_original, lr_spawned = load_run_dynamics(original)["lr"], load_run_dynamics(spawned)["lr"]
    assert len(lr_original) == 18 and len(lr_spawned) == 12
    np.testing.assert_array_equal(lr_spawned, lr_original[6:])
    assert lr_spawned[0] == pytest.approx(0.05) and lr_spawned[6] == pytest.approx(
        0.025
    )  # cosine from epoch 1
    # the old spawned run restarted warm-up and cosine: 0.05 / 6 at its first step
    assert learning_rates(lean_config(config, 2)["training"], 6)[0] == pytest.approx(0.05 / 6)

    # A manual continuation from the original's weights and momentum buffers at step 6 matches exactly.
    training = config["training"]
    keep = np.ones(len(dataset.train), bool)
    keep[:10] = False
    retain = subset_dataset(dataset, keep).train
    saved = io.load_torch(original / "checkpoints/optimizer_step_0000006.pt")
    assert len(saved["state"]) > 0

    def continue_manually(optimizer_state):
        model = load_model(config, dataset, original / "checkpoints/step_0000006.pt").train()
        optimizer = torch.optim.SGD(
            model.parameters(), lr=0.0, momentum=training["momentum"], weight_decay=training["weight_decay"]
        )
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        generator = torch.Generator().manual_seed(oracle_seed(0))
        step = 0
        for _ in range(2):
            for batch in epoch_batches(len(retain), 32, "shuffle", generator):
                for group in optimizer.param_groups:
                    group["lr"] = float(lr_spawned[step])
                optimizer.zero_grad()
                F.cross_entropy(model(retain.x[batch]), retain.y[batch]).backward()
                optimizer.step()
                step += 1
        return model.state_dict()

    got = io.load_state_dict(tmp_path / "spawned.pt")
    continued, restarted = continue_manually(saved), continue_manually(None)
    for name in got:
        torch.testing.assert_close(got[name], continued[name], rtol=1e-5, atol=1e-6)
    assert max((got[k] - restarted[k]).abs().max().item() for k in got) > 1e-3  # momentum reset is far off


def test_spawned_oracle_on_fewer_steps_per_epoch_follows_the_original_by_epoch_fraction(
    cosine_original, tmp_path, monkeypatch
):
    config, dataset, original, _ = cosine_original
    groups = _groups_csv(dataset, tmp_path / "groups.csv", 40)  # 140 retained: 5 steps per epoch
    spawned = _spawn_keeping_run(config, groups, original, tmp_path / "spawned.pt", monkeypatch)
    lr_original, lr_spawned = load_run_dynamics(original)["lr"], load_run_dynamics(spawned)["lr"]
    assert int(load_run_dynamics(spawned)["steps_per_epoch"]) == 5
    np.testing.assert_array_equal(lr_spawned, lr_original[6 + (np.arange(10) * 6) // 5])
    assert lr_spawned[0] == pytest.approx(0.05) and lr_spawned[-1] == lr_original[16]


def test_spawned_oracle_from_epoch_0_and_without_an_optimizer_state(tmp_path, monkeypatch):
    config = tiny_config(lr_schedule="cosine", lr_warmup_epochs=1, epochs=2)
    config["barrier"]["spawn_epoch"] = 0
    dataset = load_dataset(**config["dataset"])
    original = train_run(config, 0, tmp_path / "seed0", progress=False, dataset=dataset)
    assert sorted(p.name for p in (original / "checkpoints").glob("optimizer_*")) == [
        "optimizer_step_0000000.pt"
    ]
    assert (
        io.load_torch(original / "checkpoints/optimizer_step_0000000.pt")["state"] == {}
    )  # no step taken yet
    groups = _groups_csv(dataset, tmp_path / "groups.csv", 10)
    spawned = _spawn_keeping_run(config, groups, original, tmp_path / "spawned.pt", monkeypatch)
    lr = load_run_dynamics(original)["lr"]
    np.testing.assert_array_equal(load_run_dynamics(spawned)["lr"], lr)
    assert lr[0] == pytest.approx(0.05 / 6)
    assert all(torch.isfinite(w).all() for w in io.load_state_dict(tmp_path / "spawned.pt").values())
    (original / "checkpoints/optimizer_step_0000000.pt").unlink()
    with pytest.raises(FileNotFoundError, match="holds no optimizer state at epoch 0 .*retrain it"):
        run_spawned_oracle(config, "el2n", "g0", groups, original, tmp_path / "again.pt", progress=False)


def test_oracle_evaluation_names_itself_and_feeds_an_unlearning_run(original, tmp_path):
    from perinstance.plan import original_seed
    from perinstance.unlearning import run_unlearning_job

    config, run, groups = original
    evaluation = run_oracle(
        config, "el2n", "g0", 3, groups, tmp_path / "oracle.pt", tmp_path / "oracle.npz", progress=False
    )
    arrays = io.load_npz(evaluation)
    assert list(arrays) == [
        "forget_index",
        "forget_losses",
        "forget_phi",
        "forget_correct",
        "retain_accuracy",
        "test_losses",
        "test_correct",
        "score",
        "group",
        "replicate",
    ]
    assert (str(arrays["score"]), str(arrays["group"]), int(arrays["replicate"])) == ("el2n", "g0", 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["oracle.npz", "oracle.pt"]

    out = {
        name: tmp_path / "unlearn" / file
        for name, file in (
            ("curve_out", "run1.csv"),
            ("examples_out", "run1_forget.parquet"),
            ("final_out", "run1_final.npz"),
            ("model_out", "run1.pt"),
            ("barrier_model_out", "endpoint.pt"),
        )
    }
    written = run_unlearning_job(
        config, "finetune", "el2n", "g0", 1, groups, run, [evaluation], progress=False, **out
    )
    assert written == list(out.values()) and all(path.is_file() for path in written)
    curve = io.load_table(out["curve_out"])
    assert set(curve["seed"]) == {1} and set(curve["original_seed"]) == {original_seed(config, 1)}
    final = io.load_npz(out["final_out"])
    assert list(final) == [
        "forget_index",
        "forget_losses",
        "forget_phi",
        "forget_correct",
        "retain_accuracy",
        "test_losses",
        "test_correct",
        "steps_run",
    ]
    np.testing.assert_array_equal(final["forget_index"], arrays["forget_index"])
    assert 0 <= float(final["retain_accuracy"]) <= 1 and 0 <= float(arrays["retain_accuracy"]) <= 1
    assert sorted(p.name for p in (tmp_path / "unlearn").iterdir()) == sorted(p.name for p in out.values())
