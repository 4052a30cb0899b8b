"""The user's own data (npz, imagefolder) and model (import path of a factory), end to end.

The example factories live in examples/byo/byo_models.py, put on sys.path here (and on
PYTHONPATH for the workflow run); factories that misbehave on purpose are written per test
into tmp_path.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import snakemake_command
from PIL import Image
from torch import nn

from perinstance import io
from perinstance.config import (
    IMAGE_EXTENSIONS,
    ConfigError,
    train_size,
    user_dataset_size,
    validate_config,
)
from perinstance.data import NPZ_ARRAYS, load_dataset
from perinstance.model_checks import batchnorm_modules, batchnorm_to_groupnorm, check_model
from perinstance.models import build_from_config, build_model, is_import_path, resolve_factory

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples/byo"
TEST_CONFIG = REPO / "workflow/configs/test.yaml"


def _raw(ds, split):
    """Pixels before standardization, as the loader saw them after dividing by its scale."""
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    return split.x * std + mean


def _write(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _images(n=30, shape=(3, 6, 5), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % 3


# --------------------------------------------------------------------------- npz: correct loading


def test_npz_round_trip_of_pixels_labels_and_ids(tmp_path):
    x, y = _images(40)
    ids = 10_000 + 7 * np.random.default_rng(1).permutation(40)
    path = _write(tmp_path / "d.npz", x=x, y=y, index=ids)
    ds = load_dataset("npz", path=str(path), test_fraction=0.25)
    assert ds.name == "npz" and ds.input_shape == (3, 6, 5) and ds.num_classes == 3
    assert ds.class_names == ("class0", "class1", "class2")
    assert len(ds.train) == 30 and len(ds.test) == 10
    row_of = {int(i): r for r, i in enumerate(ids)}
    for split in (ds.train, ds.test):
        rows = np.array([row_of[int(i)] for i in split.index])
        assert split.index.dtype == torch.int64
        np.testing.assert_array_equal(split.y.numpy(), y[rows])
        # uint8 pixels are divided by 255, then standardized with the train split's statistics
        torch.testing.assert_close(
            _raw(ds, split), torch.from_numpy(x[rows]).float() / 255, atol=1e-5, rtol=0
        )
    assert sorted(ds.train.index.tolist() + ds.test.index.tolist()) == sorted(ids.tolist())
    # per-class test shares as for the embedded sets: 40 examples, 14/13/13 per class -> 10 held out
    assert np.bincount(ds.test.y.numpy(), minlength=3).tolist() == [4, 3, 3]


def test_npz_train_statistics_standardize_both_splits(tmp_path):
    x, y = _images(40)
    ds = load_dataset("npz", path=_write(tmp_path / "d.npz", x=x, y=y), test_fraction=0.25)
    train = x[ds.train.index.numpy()].astype(np.float64) / 255
    for c in range(3):
        assert ds.mean[c] == pytest.approx(train[:, c].mean(), abs=1e-6)  # float32 pixels
        assert ds.std[c] == pytest.approx(train[:, c].std(), abs=1e-6)
        assert ds.train.x[:, c].mean().item() == pytest.approx(0, abs=1e-5)


def test_npz_without_index_uses_positions_and_split_is_seeded(tmp_path):
    x, y = _images(40)
    path = _write(tmp_path / "d.npz", x=x, y=y)
    a = load_dataset("npz", path=path, test_fraction=0.25, split_seed=3)
    b = load_dataset("npz", path=path, test_fraction=0.25, split_seed=3)
    c = load_dataset("npz", path=path, test_fraction=0.25, split_seed=4)
    assert torch.equal(a.test.index, b.test.index) and not torch.equal(a.test.index, c.test.index)
    assert sorted(a.train.index.tolist() + a.test.index.tolist()) == list(range(40))
    np.testing.assert_array_equal(a.train.y.numpy(), y[a.train.index.numpy()])


def test_npz_images_without_channel_axis_and_floats_kept_as_given(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 4, 4)).astype(np.float32) * 3 + 5
    y = np.arange(20) % 2
    ds = load_dataset("npz", path=_write(tmp_path / "d.npz", x=x, y=y), test_fraction=0.5)
    assert ds.input_shape == (1, 4, 4)
    rows = ds.train.index.numpy()
    # floats are not divided by anything: raw values come back
    torch.testing.assert_close(_raw(ds, ds.train)[:, 0], torch.from_numpy(x[rows]), atol=1e-4, rtol=0)


def test_npz_own_test_split_class_names_and_float_labels(tmp_path):
    x, y = _images(30)
    xt, yt = _images(9, seed=2)
    path = _write(
        tmp_path / "d.npz",
        x=x,
        y=y.astype(np.float64),  # integral floats are labels too
        x_test=xt,
        y_test=yt,
        index_test=np.arange(9) + 500,
        class_names=np.array(["cat", "dog", "eel", "fox"]),
    )
    ds = load_dataset("npz", path=path, test_fraction=0.9)  # ignored: the file has its own split
    assert ds.class_names == ("cat", "dog", "eel", "fox") and ds.num_classes == 4
    assert len(ds.train) == 30 and len(ds.test) == 9
    assert ds.train.index.tolist() == list(range(30)) and ds.test.index.tolist() == list(range(500, 509))
    np.testing.assert_array_equal(ds.test.y.numpy(), yt)
    torch.testing.assert_close(_raw(ds, ds.test), torch.from_numpy(xt).float() / 255, atol=1e-5, rtol=0)
    sub = load_dataset("npz", path=path, n_train=12, n_test=3)
    assert len(sub.train) == 12 and set(sub.train.index.tolist()) <= set(range(30))
    assert set(sub.test.index.tolist()) <= set(range(500, 509))


# --------------------------------------------------------------------------- npz: bad input


def _bad_cases(tmp_path):
    x, y = _images(12)
    f = np.float32
    cases = {
        "x as int64": (dict(x=x.astype(np.int64), y=y), "array 'x' must be uint8"),
        "x 2-D": (dict(x=x.reshape(12, -1), y=y), "must be [N, C, H, W] or [N, H, W]"),
        "x 5-D": (dict(x=x[:, None], y=y), "got shape (12, 1, 3, 6, 5)"),
        "empty x": (dict(x=x[:0], y=y[:0]), "array 'x' is empty"),
        "NaN in x": (
            dict(x=np.where(np.arange(12)[:, None, None, None] == 4, np.nan, x).astype(f), y=y),
            "NaN or infinite values in 1 image(s), the first at position 4",
        ),
        "inf in x": (dict(x=np.full((12, 1, 2, 2), np.inf, f), y=y), "NaN or infinite"),
        "y too short": (dict(x=x, y=y[:-1]), "'x' and 'y' disagree: 12 images but 11 labels"),
        "y 2-D": (dict(x=x, y=y[:, None]), "array 'y' must be 1-D"),
        "y non-integral": (dict(x=x, y=np.where(np.arange(12) == 3, 1.5, y)), "got 1.5 at position 3"),
        "y NaN": (dict(x=x, y=np.where(np.arange(12) == 2, np.nan, y)), "must hold integer labels"),
        "y negative": (dict(x=x, y=np.where(np.arange(12) == 5, -1, y)), "got -1 at position 5"),
        "y strings": (dict(x=x, y=y.astype(str)), "must hold integer labels 0..K-1, got dtype <U"),
        "y bool": (dict(x=x, y=y > 0), "got dtype bool"),
        "class gap": (dict(x=x, y=np.where(y == 1, 2, y) + (y == 2)), "label(s) 1 of 0..3 have none"),
        "one class": (dict(x=x, y=np.zeros(12, int)), "needs at least two classes, got 1"),
        "label beyond class_names": (
            dict(x=x, y=y, class_names=np.array(["a", "b"])),
            "label 2 at position 2 is out of range 0..1",
        ),
        "class_names numbers": (dict(x=x, y=y, class_names=np.arange(3)), "1-D array of strings"),
        "class_names repeated": (dict(x=x, y=y, class_names=np.array(["a", "a", "b"])), "distinct"),
        "index repeated": (
            dict(x=x, y=y, index=np.r_[np.arange(11), 3]),
            "id 3 appears 2 times (positions 3, 11)",
        ),
        "index too short": (dict(x=x, y=y, index=np.arange(11)), "shape (12,), got (11,)"),
        "index float": (dict(x=x, y=y, index=np.arange(12.0)), "integer example ids, got dtype float64"),
        "x_test without y_test": (dict(x=x, y=y, x_test=x), "'x_test' without 'y_test'"),
        "y_test without x_test": (dict(x=x, y=y, y_test=y), "'y_test' without 'x_test'"),
        "index_test alone": (dict(x=x, y=y, index_test=np.arange(12)), "'index_test' without"),
        "x_test other shape": (
            dict(x=x, y=y, x_test=x[:, :1], y_test=y),
            "images of 'x_test' are (1, 6, 5), those of 'x' are (3, 6, 5)",
        ),
        "x_test other dtype": (
            dict(x=x, y=y, x_test=x.astype(f), y_test=y),
            "'x' is uint8 but 'x_test' is float32",
        ),
        "y_test out of range": (dict(x=x, y=y, x_test=x, y_test=y + 1), "array 'y_test': label 3"),
        "index_test repeated": (
            dict(x=x, y=y, x_test=x, y_test=y, index_test=np.zeros(12, int)),
            "array 'index_test' must hold unique example ids",
        ),
        "unknown array": (dict(x=x, y=y, labels=y), "unknown array(s) 'labels'; allowed: x, y, index"),
        "missing y": (dict(x=x), "missing array(s) 'y' (has: x)"),
        "missing x and y": (dict(X=x, Y=y), "unknown array(s) 'X', 'Y'"),
        "object array": (dict(x=x, y=np.array([1, "a"] * 6, dtype=object)), "array 'y' cannot be read"),
    }
    return cases


BAD = sorted(_bad_cases(Path(".")))


@pytest.mark.parametrize("case", BAD)
def test_bad_npz_fails_naming_file_and_problem(tmp_path, case):
    arrays, needle = _bad_cases(tmp_path)[case]
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError) as err:
        load_dataset("npz", path=str(path))
    message = str(err.value)
    assert needle in message, message
    assert str(path) in message and "dataset.path" in message


def test_missing_arrays_only_is_reported_as_missing(tmp_path):
    x, _ = _images(4)
    with pytest.raises(ValueError, match=r"missing array\(s\) 'x' \(has: y\)"):
        load_dataset("npz", path=_write(tmp_path / "d.npz", y=np.arange(4) % 2))
    with pytest.raises(ValueError, match=r"missing array\(s\) 'x', 'y' \(has: none\)"):
        load_dataset("npz", path=_write(tmp_path / "e.npz"))


def test_npz_file_problems(tmp_path):
    with pytest.raises(ValueError, match=r"dataset\.name npz needs config key dataset\.path"):
        load_dataset("npz")
    with pytest.raises(FileNotFoundError, match=r"dataset\.path: .*nope\.npz does not exist"):
        load_dataset("npz", path=str(tmp_path / "nope.npz"))
    with pytest.raises(IsADirectoryError, match="is not a file"):
        load_dataset("npz", path=str(tmp_path))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match=r"garbage\.npz .*not a readable \.npz archive"):
        load_dataset("npz", path=garbage)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="holds a single array, not an .npz archive"):
        load_dataset("npz", path=single)


def test_npz_array_names_are_documented_in_the_schema():
    from perinstance.config import load_schema

    description = load_schema()["properties"]["dataset"]["properties"]["path"]["description"]
    for name in NPZ_ARRAYS:
        assert f"`{name}`" in description, name


# --------------------------------------------------------------------------- npz: config validation


def _config(dataset: dict, **sections) -> dict:
    return {"experiment": "x", "dataset": dataset, "groups": {"size": 2}, **sections}


def test_config_needs_the_path_and_checks_it_before_any_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, needle in (
        ("npz", "dataset.name npz needs the path of an .npz file"),
        ("imagefolder", "dataset.name imagefolder needs the path of a folder"),
    ):
        with pytest.raises(ConfigError, match=r"'dataset\.path'.*" + needle.replace(".", r"\.")):
            validate_config(_config({"name": name}))
    with pytest.raises(ConfigError, match=r"'dataset\.path': missing\.npz does not exist"):
        validate_config(_config({"name": "npz", "path": "missing.npz"}))
    (tmp_path / "junk.npz").write_text("no zip")
    with pytest.raises(ConfigError, match=r"junk\.npz is not a readable npz dataset"):
        validate_config(_config({"name": "npz", "path": "junk.npz"}))
    np.savez(tmp_path / "only_x.npz", x=np.zeros((4, 2, 2)))
    with pytest.raises(ConfigError, match="needs arrays 'x' and 'y'"):
        validate_config(_config({"name": "npz", "path": "only_x.npz"}))
    with pytest.raises(ConfigError, match=r"'dataset\.channels': 2 must be 1 \(grayscale\), 3 \(RGB\)"):
        validate_config(_config({"name": "imagefolder", "path": ".", "channels": 2}))
    with pytest.raises(ConfigError, match=r"'dataset\.image_size'"):
        validate_config(_config({"name": "imagefolder", "path": ".", "image_size": [8]}))


@pytest.mark.parametrize("own_test", [False, True])
@pytest.mark.parametrize("compressed", [False, True])
def test_config_size_rules_use_the_files_size(tmp_path, monkeypatch, own_test, compressed):
    monkeypatch.chdir(tmp_path)
    x, y = _images(40)
    arrays = dict(x=x, y=y, **(dict(x_test=x[:10], y_test=y[:10]) if own_test else {}))
    (np.savez_compressed if compressed else np.savez)(tmp_path / "d.npz", **arrays)
    dataset = {"name": "npz", "path": "d.npz", "test_fraction": 0.25}
    spec = validate_config(_config(dataset, proxies={"holdout_fraction": 0.5}))["dataset"]
    assert user_dataset_size(spec) == ("train" if own_test else "full", 40)
    assert train_size(spec) == len(load_dataset(**spec).train) == (40 if own_test else 30)
    n = 40 if own_test else 30
    with pytest.raises(ConfigError, match=rf"groups of 14 need 42 training examples, the dataset has {n}"):
        validate_config(_config(dataset, groups={"size": 14}))
    with pytest.raises(ConfigError, match=rf"'dataset\.n_train': 41 exceeds the {n} training examples"):
        validate_config(_config({**dataset, "n_train": 41}))


# --------------------------------------------------------------------------- imagefolder


def _folder(root: Path, spec: dict[str, list[np.ndarray]], suffix=".png") -> Path:
    for cls, images in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, pixels in enumerate(images):
            Image.fromarray(pixels).save(root / cls / f"img{i}{suffix}")
    return root


def _gray(n, seed, shape=(6, 5)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(n)]


def test_imagefolder_gray_pngs_load_exactly(tmp_path):
    spec = {"b_dog": _gray(4, 1), "a_cat": _gray(4, 0), "c_eel": _gray(4, 2)}
    root = _folder(tmp_path / "imgs", spec)
    (root / "a_cat" / "notes.txt").write_text("not an image: skipped by ImageFolder")
    ds = load_dataset("imagefolder", path=str(root), test_fraction=0.25)
    assert ds.class_names == ("a_cat", "b_dog", "c_eel") and ds.input_shape == (1, 6, 5)
    # ImageFolder order: classes sorted, files sorted within a class; ids are positions in it
    ordered = [(c, i) for c, name in enumerate(sorted(spec)) for i in range(4)]
    assert len(ds.train) == 9 and len(ds.test) == 3
    for split in (ds.train, ds.test):
        for row, position in enumerate(split.index.tolist()):
            c, i = ordered[position]
            assert split.y[row].item() == c
            expected = torch.from_numpy(spec[sorted(spec)[c]][i]).float() / 255
            torch.testing.assert_close(_raw(ds, split)[row, 0], expected, atol=1e-5, rtol=0)
    assert user_dataset_size({"name": "imagefolder", "path": str(root)}) == ("full", 12)


def test_imagefolder_rgb_channels_and_resizing(tmp_path):
    rng = np.random.default_rng(0)
    rgb = {c: [rng.integers(0, 256, (4, 6, 3), dtype=np.uint8) for _ in range(3)] for c in ("a", "b")}
    root = _folder(tmp_path / "rgb", rgb)
    ds = load_dataset("imagefolder", path=root, test_fraction=0.34)
    assert ds.input_shape == (3, 4, 6)
    chw = np.stack([p.transpose(2, 0, 1) for c in "ab" for p in rgb[c]])
    for split in (ds.train, ds.test):
        expected = torch.from_numpy(chw[split.index.numpy()]).float() / 255
        torch.testing.assert_close(_raw(ds, split), expected, atol=1e-5, rtol=0)
    # channels=1: PIL's own RGB -> L conversion, exactly
    gray = load_dataset("imagefolder", path=root, channels=1, test_fraction=0.34)
    assert gray.input_shape == (1, 4, 6)
    expected = np.stack([np.asarray(Image.fromarray(p).convert("L")) for c in "ab" for p in rgb[c]])
    rows = gray.train.index.numpy()
    torch.testing.assert_close(
        _raw(gray, gray.train)[:, 0], torch.from_numpy(expected[rows]).float() / 255, atol=1e-5, rtol=0
    )
    # image_size resizes (bilinear, antialiased) every image of another size
    resized = load_dataset("imagefolder", path=root, image_size=[8, 3], test_fraction=0.34)
    assert resized.input_shape == (3, 8, 3) and resized.train.x.shape[1:] == (3, 8, 3)


def test_imagefolder_gray_content_saved_as_rgb_reads_as_one_channel(tmp_path):
    spec = {c: [np.repeat(g[:, :, None], 3, axis=2) for g in _gray(3, s)] for s, c in enumerate("ab")}
    root = _folder(tmp_path / "grayrgb", spec)
    ds = load_dataset("imagefolder", path=root, test_fraction=0.34)
    assert ds.input_shape == (1, 6, 5)
    assert load_dataset("imagefolder", path=root, channels=3, test_fraction=0.34).input_shape == (3, 6, 5)


def test_imagefolder_bad_input(tmp_path):
    def fails(root, needle, error=ValueError, **kw):
        with pytest.raises(error) as err:
            load_dataset("imagefolder", path=str(root), **kw)
        assert needle in str(err.value), str(err.value)
        assert "dataset." in str(err.value)

    fails(tmp_path / "nowhere", "does not exist", FileNotFoundError)
    (tmp_path / "file.png").write_bytes(b"x")
    fails(tmp_path / "file.png", "is not a folder", NotADirectoryError)
    (tmp_path / "flat").mkdir()
    Image.fromarray(_gray(1, 0)[0]).save(tmp_path / "flat" / "a.png")
    fails(tmp_path / "flat", "no class subfolders")
    one = _folder(tmp_path / "one", {"only": _gray(3, 0)})
    fails(one, "only one class folder ('only'); a classifier needs at least two")
    empty = _folder(tmp_path / "empty", {"a": _gray(2, 0), "b": []})
    fails(empty, "class folder(s) 'b' hold no images")
    (tmp_path / "none" / "a").mkdir(parents=True)
    (tmp_path / "none" / "b").mkdir()
    fails(tmp_path / "none", "no images in the class folders")
    broken = _folder(tmp_path / "broken", {"a": _gray(2, 0), "b": _gray(2, 1)})
    (broken / "b" / "zz.png").write_bytes(b"not a png")
    fails(broken, f"cannot read image {broken / 'b' / 'zz.png'}")
    mixed = _folder(tmp_path / "mixed", {"a": _gray(2, 0), "b": _gray(2, 1, shape=(7, 5))})
    fails(mixed, "is 7x5 (height x width), the first image")
    fails(mixed, "set dataset.image_size")
    assert load_dataset("imagefolder", path=mixed, image_size=[7, 5], test_fraction=0.5).input_shape == (
        1,
        7,
        5,
    )
    fails(one, "dataset.channels must be 1 (grayscale), 3 (RGB) or null", channels=2)
    fails(one, "dataset.image_size must be [height, width]", image_size=[3])


def test_image_extensions_are_imagefolders(tmp_path, monkeypatch):
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert IMAGE_EXTENSIONS == IMG_EXTENSIONS
    spec = {"a": _gray(3, 0), "b": _gray(2, 1)}
    root = _folder(tmp_path / "imgs", spec)
    (root / "b" / "deeper").mkdir()
    Image.fromarray(_gray(1, 5)[0]).save(root / "b" / "deeper" / "x.PNG")  # recursive, any case
    (root / "b" / "readme.md").write_text("skipped")
    monkeypatch.chdir(tmp_path)
    spec = {"name": "imagefolder", "path": "imgs", "test_fraction": 0.34, "n_train": None}
    ds = load_dataset(**spec)
    assert user_dataset_size(spec) == ("full", 6) and train_size(spec) == len(ds.train) == 4


# --------------------------------------------------------------------------- models by import path


@pytest.fixture
def examples(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def _module(tmp_path, monkeypatch, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)


KW = dict(num_classes=5, input_shape=(3, 8, 8), width=4, norm_groups=2)


def test_import_path_model_builds_and_runs(examples):
    model = build_model("byo_models:tiny_convnet", **KW)
    assert model(torch.randn(3, 3, 8, 8)).shape == (3, 5)
    assert not batchnorm_modules(model)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert [(m.num_groups, m.num_channels) for m in norms] == [(2, 4), (2, 8)]
    config = {"model": {"name": "byo_models:converted_convnet", "width": 6, "norm_groups": 4}}
    dataset = type("D", (), {"num_classes": 2, "input_shape": (1, 8, 8)})()
    converted = build_from_config(config, dataset)
    assert converted(torch.randn(2, 1, 8, 8)).shape == (2, 2) and not batchnorm_modules(converted)


def test_factory_receives_the_builtins_keyword_arguments(tmp_path, monkeypatch):
    _module(
        tmp_path,
        monkeypatch,
        "recording_factory",
        """
        from torch import nn
        CALLS = []
        class Builder:
            @staticmethod
            def make(**kwargs):
                CALLS.append(kwargs)
                return nn.Linear(1, kwargs["num_classes"])
        """,
    )
    model = build_model("recording_factory:Builder.make", **KW)
    import recording_factory

    assert isinstance(model, nn.Linear) and model.out_features == 5
    assert recording_factory.CALLS == [KW]


@pytest.mark.parametrize(
    "name, needle",
    [
        ("no_such_module_xyz:f", "module 'no_such_module_xyz' not found"),
        ("byo_models.sub:f", "module 'byo_models.sub' not found"),
        ("byo_models:missing", "'byo_models' has no attribute 'missing'"),
        ("byo_models:tiny_convnet.inner", "'byo_models:tiny_convnet' has no attribute 'inner'"),
        ("byo_models:math", "'math' in module 'byo_models' is a module, not a callable factory"),
        ("byo_models:batchnorm_convnet", "model contains BatchNorm (1, 4)"),
        ("vgg", "unknown model 'vgg' (config key model.name)"),
        ("a:b:c", "unknown model 'a:b:c'"),
    ],
)
def test_import_path_errors_say_which_part_failed(examples, name, needle):
    with pytest.raises(ValueError) as err:
        build_model(name, **KW)
    assert needle in str(err.value), str(err.value)
    assert name in str(err.value)


def test_factory_problems(tmp_path, monkeypatch):
    _module(
        tmp_path,
        monkeypatch,
        "bad_factories",
        """
        import torch
        from torch import nn
        import not_installed_dependency_xyz
        """,
    )
    with pytest.raises(
        ValueError, match=r"module 'not_installed_dependency_xyz' \(imported by 'bad_factories'\)"
    ):
        build_model("bad_factories:f", **KW)
    _module(
        tmp_path,
        monkeypatch,
        "odd_factories",
        """
        import torch
        from torch import nn
        CONSTANT = 3
        def returns_tensor(**kwargs):
            return torch.zeros(3)
        def positional(num_classes, input_shape):
            return nn.Linear(1, 1)
        class Scaled(nn.Module):
            # a parameter owned by a module type the fast engine has no rule for
            def __init__(self):
                super().__init__()
                self.scale = nn.Parameter(torch.ones(1))
                self.head = nn.Linear(4, 2)
            def forward(self, x):
                return self.head(x.flatten(1) * self.scale)
        def scaled(**kwargs):
            return Scaled()
        """,
    )
    with pytest.raises(ValueError, match=r"'odd_factories:CONSTANT'.*is a int, not a callable factory"):
        build_model("odd_factories:CONSTANT", **KW)
    with pytest.raises(ValueError, match=r"returned a Tensor, not a torch\.nn\.Module"):
        build_model("odd_factories:returns_tensor", **KW)
    with pytest.raises(
        ValueError, match=r"cannot be called with the keyword arguments num_classes, input_shape"
    ):
        build_model("odd_factories:positional", **KW)
    with pytest.warns(UserWarning, match=r"<root> \(Scaled\) owns trainable parameters.*reference engine"):
        model = build_model("odd_factories:scaled", **KW)
    assert model(torch.randn(2, 2, 2)).shape == (2, 2)


def test_import_path_syntax_and_schema():
    assert is_import_path("a.b_c:make") and is_import_path("m:Class.build")
    for bad in ("smallcnn", "a.b", ":f", "a:", "a b:c", "1a:f", "a:b:c", "a.:f"):
        assert not is_import_path(bad), bad
    with pytest.raises(ValueError, match="neither a built-in model"):
        resolve_factory("a.b")
    assert (
        validate_config({"experiment": "x", "model": {"name": "pkg.mod:make"}})["model"]["name"]
        == "pkg.mod:make"
    )
    with pytest.raises(ConfigError) as err:
        validate_config({"experiment": "x", "model": {"name": "pkg.mod"}})
    assert str(err.value) == (
        "config key 'model.name': 'pkg.mod' is neither a built-in model (smallcnn, resnet18) "
        "nor an import path 'package.module:factory'"
    )


# --------------------------------------------------------------------------- model_checks


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.block = nn.Sequential(nn.Conv1d(6, 10, 1), nn.BatchNorm1d(10, affine=False, eps=1e-3))
        self.vol = nn.BatchNorm3d(2)
        self.head = nn.Linear(10, 4)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))  # [B, 6, H, W]
        h = self.block(h.flatten(2))  # [B, 10, HW]
        v = self.vol(h[:, :2, None, None])  # [B, 2, 1, 1, HW]
        return self.head(h.mean(2)) + v.mean()


def test_batchnorm_modules_lists_qualified_names():
    assert batchnorm_modules(_Net()) == ["bn", "block.1", "vol"]
    assert batchnorm_modules(nn.BatchNorm2d(3)) == ["<root>"]
    assert batchnorm_modules(nn.Sequential(nn.Linear(2, 2))) == []


def test_batchnorm_to_groupnorm_replaces_every_batchnorm():
    net = _Net()
    converted = batchnorm_to_groupnorm(net, groups=4)
    assert batchnorm_modules(converted) == [] and batchnorm_modules(net) == ["bn", "block.1", "vol"]
    norms = {name: m for name, m in converted.named_modules() if isinstance(m, nn.GroupNorm)}
    # gcd(4, 6) = 2, gcd(4, 10) = 2, gcd(4, 2) = 2 groups; affine and eps carried over
    assert {n: (m.num_groups, m.num_channels, m.affine, m.eps) for n, m in norms.items()} == {
        "bn": (2, 6, True, 1e-5),
        "block.1": (2, 10, False, 1e-3),
        "vol": (2, 2, True, 1e-5),
    }
    assert torch.equal(converted.conv.weight, net.conv.weight)  # everything else copied as it was
    assert converted.conv.weight is not net.conv.weight
    x = torch.randn(5, 3, 4, 4)
    assert converted(x).shape == net(x).shape == (5, 4)
    assert math.gcd(3, 6) == 3 and batchnorm_to_groupnorm(nn.BatchNorm2d(6), groups=3).num_groups == 3
    with pytest.raises(ValueError, match="groups must be an int >= 1"):
        batchnorm_to_groupnorm(net, groups=0)


def test_converted_model_has_per_example_outputs():
    # the property the check protects: with BatchNorm in training mode an example's output depends
    # on the rest of its batch; after conversion it does not
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    net.train()
    x = torch.randn(6, 1, 6, 6)
    alone = net(x[:1])
    assert not torch.allclose(net(x)[:1], alone, atol=1e-4)
    converted = batchnorm_to_groupnorm(net, groups=2).train()
    torch.testing.assert_close(converted(x)[:1], converted(x[:1]), atol=1e-6, rtol=1e-5)


def test_check_model_refuses_batchnorm_and_warns_on_slow_layers():
    with pytest.raises(ValueError) as err:
        check_model(_Net())
    message = str(err.value)
    for needle in ("bn, block.1, vol", "per-example gradients", "privacy", "batchnorm_to_groupnorm"):
        assert needle in message, needle
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_model(batchnorm_to_groupnorm(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))))
        check_model(build_model("smallcnn", num_classes=3, input_shape=(1, 8, 8), width=4))
    with pytest.warns(UserWarning, match=r"0 \(Embedding\) owns trainable parameters.*slower"):
        check_model(nn.Sequential(nn.Embedding(5, 3)))
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        check_model("not a model")


# --------------------------------------------------------------------------- the whole workflow


@pytest.mark.slow
def test_tiny_workflow_with_npz_data_and_import_path_model(tmp_path):
    raw = yaml.safe_load(TEST_CONFIG.read_text())
    source = load_dataset(**validate_config(raw)["dataset"])
    x = torch.cat([source.train.x, source.test.x])[:, 0].numpy()  # [N, H, W] floats
    y = torch.cat([source.train.y, source.test.y]).numpy()
    ids = 7_000 + 3 * np.random.default_rng(0).permutation(len(y))  # ids unrelated to positions
    np.savez(tmp_path / "own.npz", x=x, y=y, index=ids, class_names=np.array(["red", "green", "blue"]))
    raw["experiment"] = "byo"
    raw["dataset"] = {"name": "npz", "path": "own.npz", "test_fraction": 0.25}
    raw["model"] = {"name": "byo_models:tiny_convnet", "width": 4, "norm_groups": 2}
    raw["unlearning"]["methods"] = ["finetune", "sgld"]  # the data and model paths, not every method
    (tmp_path / "byo.yaml").write_text(yaml.safe_dump(raw))
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")  # as tests/test_workflow.py runs it
    command, env = snakemake_command("--cores", "2", "--configfile", "byo.yaml", cwd=tmp_path)
    env["PYTHONPATH"] = f"{EXAMPLES}{':' + env['PYTHONPATH'] if env.get('PYTHONPATH') else ''}"
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    results = tmp_path / "results/byo"
    scores = pd.read_parquet(results / "scores.parquet")
    # 240 examples, a quarter held out: the scores table speaks the file's ids
    assert len(scores) == 180 and scores["index"].is_unique and set(scores["index"]) <= set(ids.tolist())
    label_of = dict(zip(ids.tolist(), y.tolist()))
    assert all(label_of[i] == label for i, label in zip(scores["index"], scores["label"]))
    assert scores["privacy_loss"].notna().all() and scores["privacy_loss"].std() > 0
    steps = io.load_table(results / "steps.csv")
    assert len(steps) == 7 and steps["steps"].between(0, 40).all()
    examples = pd.read_parquet(results / "unlearning_examples.parquet")
    assert set(examples["index"]) <= set(ids.tolist())
    assert (tmp_path / "figures/byo/results.md").stat().st_size > 0
    state = torch.load(results / "train/seed0/model.pt", weights_only=True)
    weights = state["model"] if "model" in state else state
    assert any(k.endswith("weight") and v.dim() == 4 for k, v in weights.items())  # the factory's convs


@pytest.mark.slow
def test_snakemake_refuses_an_npz_config_without_path_before_the_dag(tmp_path):
    raw = yaml.safe_load(TEST_CONFIG.read_text())
    raw["dataset"] = {"name": "npz", "test_fraction": 0.25}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    command, env = snakemake_command("-n", "--configfile", "bad.yaml", cwd=tmp_path)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0 and "Traceback" not in output
    assert "config key 'dataset.path': dataset.name npz needs the path of an .npz file" in output
    assert not (tmp_path / "results").exists()
