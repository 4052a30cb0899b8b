"""Retrained models (holdouts, oracles, spawned oracles): their `.run` work directories and outputs."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch

from perinstance import io
from perinstance.data import load_dataset
from perinstance.retrain import discard_run, holdout_predictions, run_oracle, run_spawned_oracle
from perinstance.training import train_run

from conftest import tiny_config


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    config = tiny_config()
    dataset = load_dataset(**config["dataset"])
    root = tmp_path_factory.mktemp("retrain")
    run = train_run(config, 0, root / "seed0", progress=False, dataset=dataset)
    groups = io.save_table(pd.DataFrame({"score": "el2n", "group": "g0",
                                         "index": dataset.train.index.numpy()[:10]}), root / "groups.csv")
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
        run_oracle(config, "el2n", "g0", 0, groups, tmp_path / "model.pt", tmp_path / "eval.npz", progress=False)
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
