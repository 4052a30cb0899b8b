"""Atomic writes, checked reads and guarded replacement of run directories."""

from __future__ import annotations

import os
import shutil
import stat

import numpy as np
import pandas as pd
import pytest
import torch

from perinstance import io


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


# ----------------------------------------------------------------------- permissions


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_respect_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    frame = pd.DataFrame({"a": [1, 2]})
    written = [
        io.save_table(frame, tmp_path / "t.csv"),
        io.save_table(frame, tmp_path / "t.parquet"),
        io.save_npz(tmp_path / "a.npz", x=np.zeros(3)),
        io.save_json({"a": 1}, tmp_path / "s.json"),
        io.save_torch({"w": torch.zeros(2)}, tmp_path / "m.pt"),
    ]
    assert [oct(_mode(p)) for p in written] == [oct(expected)] * len(written)


def test_interrupted_copy_leaves_the_old_file(tmp_path, monkeypatch):
    source, target = tmp_path / "new.bin", tmp_path / "out.bin"
    source.write_bytes(b"n" * 1000)
    target.write_bytes(b"old")

    def half_copy(src, dst):
        with open(dst, "wb") as fh:
            fh.write(open(src, "rb").read()[:500])
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfile", half_copy)
    with pytest.raises(KeyboardInterrupt):
        io.copy_file(source, target)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "new.bin",
        "out.bin",
    ]


# ----------------------------------------------------------------------- checked reads


def _truncate(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _truncated_parquet(tmp_path):
    return _truncate(io.save_table(pd.DataFrame({"a": np.arange(500)}), tmp_path / "scores.parquet"))


def _truncated_npz(tmp_path):
    return _truncate(io.save_npz(tmp_path / "eval.npz", x=np.arange(5000.0)))


def _truncated_pt(tmp_path):
    return _truncate(io.save_torch({"w": torch.arange(5000.0)}, tmp_path / "model.pt"))


def _garbage_csv(tmp_path):
    path = tmp_path / "groups.csv"
    path.write_bytes(bytes(range(128, 256)) * 8)  # not UTF-8
    return path


def _empty_csv(tmp_path):
    path = tmp_path / "history.csv"
    path.write_bytes(b"")
    return path


def _object_npz(tmp_path):
    path = tmp_path / "holdout.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    return path


def _header_only_csv(tmp_path):
    # a CSV table cut off after its provenance lines (perinstance.provenance)
    path = tmp_path / "steps.csv"
    path.write_text("# package: perinstance\n# version: 0.1.0\n")
    return path


def _pickled_pt(tmp_path):
    path = tmp_path / "step_0000000.pt"
    torch.save({"w": np.arange(3)}, path)  # a numpy array needs the full unpickler
    return path


@pytest.mark.parametrize(
    "make, load",
    [
        (_truncated_parquet, io.load_table),
        (_garbage_csv, io.load_table),
        (_empty_csv, io.load_table),
        (_header_only_csv, io.load_table),
        (_truncated_parquet, io.read_provenance),
        (_truncated_npz, io.load_npz),
        (_object_npz, io.load_npz),
        (_truncated_pt, io.load_state_dict),
        (_pickled_pt, io.load_state_dict),
        (_truncated_pt, io.load_torch),
    ],
)
def test_damaged_artefacts_raise_one_error_naming_the_file(tmp_path, make, load):
    path = make(tmp_path)
    with pytest.raises(io.CorruptArtefact) as caught:
        load(path)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message and "rerun" in message


def test_truncated_parquet_message(tmp_path):
    path = _truncated_parquet(tmp_path)
    expected = r"scores\.parquet: not a readable Parquet file \(truncated or corrupt"
    with pytest.raises(io.CorruptArtefact, match=expected):
        io.load_table(path)


def test_npz_required_arrays_are_named(tmp_path):
    path = io.save_npz(tmp_path / "eval.npz", forget_losses=np.zeros(2))
    assert set(io.load_npz(path, required=("forget_losses",))) == {"forget_losses"}
    with pytest.raises(
        io.CorruptArtefact, match=r"eval\.npz: missing array\(s\) 'test_losses', 'forget_phi'"
    ):
        io.load_npz(path, required=("forget_losses", "test_losses", "forget_phi"))


def test_non_finite_weights_are_refused(tmp_path):
    path = io.save_torch(
        {"conv.weight": torch.tensor([1.0, float("nan")]), "fc.bias": torch.zeros(2)}, tmp_path / "model.pt"
    )
    with pytest.raises(io.CorruptArtefact, match=r"model\.pt: weight 'conv\.weight' holds non-finite values"):
        io.load_state_dict(path)
    assert torch.isnan(io.load_state_dict(path, check_finite=False)["conv.weight"][1])
    with pytest.raises(io.CorruptArtefact, match="inf"):
        io.require_finite(np.array([0.0, np.inf]), "prob_true", tmp_path / "holdout.npz")
    io.require_finite(np.arange(3), "counts", tmp_path / "x.npz")  # integers are always finite


@pytest.mark.parametrize(
    "load", [io.load_table, io.load_npz, io.load_state_dict, io.load_torch, io.load_json, io.read_provenance]
)
def test_missing_files_stay_file_not_found(tmp_path, load):
    with pytest.raises(FileNotFoundError, match="nothing.here"):
        load(tmp_path / "nothing.here")


# ----------------------------------------------------------------------- run directories


def _work(tmp_path, content: str = "new"):
    work = tmp_path / ".run.partial"
    work.mkdir()
    (work / "model.pt").write_text(content)
    io.write_run_marker(work, "training run", "abc")
    return work


def test_publish_refuses_an_unrelated_directory(tmp_path):
    final = tmp_path / "results"
    final.mkdir()
    (final / "thesis.tex").write_text("years of work")
    work = _work(tmp_path)
    with pytest.raises(io.RefusedOverwrite, match=r"results .*--force") as caught:
        io.publish_dir(work, final)
    assert "\n" not in str(caught.value)
    assert (final / "thesis.tex").read_text() == "years of work" and (work / "model.pt").is_file()


def test_publish_refuses_a_regular_file(tmp_path):
    final = tmp_path / "seed0"
    final.write_text("keep me")
    with pytest.raises(io.RefusedOverwrite, match="existing file"):
        io.publish_dir(_work(tmp_path), final)
    assert final.read_text() == "keep me"


def test_publish_replaces_a_previous_run_or_an_empty_directory(tmp_path):
    final = tmp_path / "seed0"
    io.publish_dir(_work(tmp_path, "first"), final)
    assert io.is_run_dir(final) and io.load_json(final / io.RUN_MARKER)["fingerprint"] == "abc"
    io.publish_dir(_work(tmp_path, "second"), final)
    assert (final / "model.pt").read_text() == "second"
    empty = tmp_path / "empty"
    empty.mkdir()
    io.publish_dir(_work(tmp_path, "third"), empty)
    assert (empty / "model.pt").read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "seed0"]  # no leftovers


def test_publish_with_force_replaces_anything(tmp_path):
    final = tmp_path / "results"
    final.mkdir()
    (final / "notes.txt").write_text("x")
    io.publish_dir(_work(tmp_path), final, force=True)
    assert sorted(p.name for p in final.iterdir()) == [io.RUN_MARKER, "model.pt"]
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "data").write_text("kept")
    link = tmp_path / "link"
    link.symlink_to(target)
    work = _work(tmp_path)
    with pytest.raises(io.RefusedOverwrite, match="symbolic link"):
        io.publish_dir(work, link)
    io.publish_dir(work, link, force=True)  # the link is replaced, its target left alone
    assert not link.is_symlink() and (link / "model.pt").is_file() and (target / "data").read_text() == "kept"


def test_remove_path_only_removes_marked_runs(tmp_path):
    mine = io.publish_dir(_work(tmp_path), tmp_path / "seed0")
    io.remove_path(mine)
    assert not mine.exists()
    io.remove_path(tmp_path / "absent")  # nothing to do
    other = tmp_path / "other"
    other.mkdir()
    (other / "f").write_text("x")
    with pytest.raises(io.RefusedOverwrite):
        io.remove_path(other)
    assert (other / "f").is_file()


def test_the_same_weights_are_the_same_bytes(tmp_path):
    """torch.save records the file name it writes to; the temporary name must not leak in."""
    import torch

    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    first = io.save_torch(weights, tmp_path / "a.pt").read_bytes()
    second = io.save_torch(weights, tmp_path / "a.pt").read_bytes()
    assert first == second
    assert b".a.pt." not in first
