"""Experiment configuration: the one validator, run by the Snakefile before the DAG and by every CLI job.

The schema (workflow/schemas/config.schema.yaml, shipped inside the package as
config.schema.yaml) is the single source of truth for every key and default. `validate_config`
adds what JSON Schema cannot say: finite numbers only, integers that are really integers, and the
rules between keys and against the dataset's size (`plan_errors`), so that a config every job
would reject is refused before any job runs.

Standard library + jsonschema + PyYAML only: the Snakefile imports this module.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """A configuration key is missing, unknown or has a bad value; the message is one line."""


# Training-set sizes of the registered datasets before `test_fraction` / `n_train`, known without
# loading them (tests check these against perinstance.data). `full` sets are split by test_fraction.
DATASET_SIZES: dict[str, tuple[str, int]] = {
    "cifar10": ("train", 50_000),
    "svhn": ("train", 73_257),
    "mnist": ("train", 60_000),
    "fashionmnist": ("train", 60_000),
    "mnist5k": ("full", 5_000),
    "digits": ("full", 1_797),
    "synthetic": ("full", -1),  # dataset.synthetic.n
    # the user's own data: sizes read from dataset.path (see user_dataset_size)
    "npz": ("file", -1),
    "imagefolder": ("file", -1),
}
# torchvision.datasets.folder.IMG_EXTENSIONS, the files ImageFolder reads (checked in tests)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


# --------------------------------------------------------------------------- reading YAML


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: PyYAML lets the last one silently replace the first."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    mapping: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a YAML config file; duplicate keys and syntax errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except ConfigError as err:
        raise ConfigError(f"config file {path}, {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise ConfigError(f"config file {path}{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(raw).__name__}")
    return raw


def merge_configs(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Nested mappings merged key by key (later wins), as Snakemake layers several config files."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_configs(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --------------------------------------------------------------------------- schema


@lru_cache(maxsize=1)
def load_schema() -> dict:
    text = resources.files("perinstance").joinpath("config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _is_integer(checker, instance) -> bool:
    # JSON Schema counts 10.0 as an integer; as a group size or a count it is a typo to refuse
    return isinstance(instance, int) and not isinstance(instance, bool)


@lru_cache(maxsize=1)
def _validator_class():
    """Draft-2020-12 validator with strict integers that fills `default` values while validating."""
    base = jsonschema.validators.validator_for(load_schema())
    type_checker = base.TYPE_CHECKER.redefine("integer", _is_integer)
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema and key not in instance:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults}, type_checker=type_checker)


def _schema_message(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        prefix = f"{path}." if path else ""
        return f"unknown config key {', '.join(prefix + u for u in unknown)!s} (allowed here: {allowed})"
    if error.validator == "required":
        return f"config key {error.message}"
    if error.validator == "anyOf" and all("description" in alt for alt in error.validator_value):
        forms = " nor ".join(alt["description"] for alt in error.validator_value)
        return f"config key '{path or '<root>'}': {error.instance!r} is neither {forms}"
    return f"config key '{path or '<root>'}': {error.message}"


def _non_finite(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, float) and not math.isfinite(value):
        yield f"config key '{path}': must be a finite number, got {value}"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _non_finite(item, f"{path}[{i}]")


# --------------------------------------------------------------------------- rules between keys


def _npy_length(archive, member: str) -> int:
    """Length of the first axis of one array of an .npz archive, from its .npy header alone."""
    import ast
    import struct

    with archive.open(member) as f:
        head = f.read(12)
        if len(head) < 10 or head[:6] != b"\x93NUMPY":
            raise ValueError(f"array {member[:-4]!r} is not a .npy array")
        if head[6] == 1:
            (length,), start = struct.unpack("<H", head[8:10]), 10
        else:
            (length,), start = struct.unpack("<I", head[8:12]), 12
        header = (head[start:] + f.read(length - (len(head) - start))).decode("latin1")
    shape = ast.literal_eval(header).get("shape")
    if not isinstance(shape, tuple) or not shape:
        raise ValueError(f"array {member[:-4]!r} has shape {shape}, expected one entry per example")
    return int(shape[0])


def user_dataset_size(dataset: dict[str, Any]) -> tuple[str, int]:
    """(kind, examples) of an npz or imagefolder `dataset:` section, read from dataset.path.

    kind is "train" when an npz file holds its own test split (x_test), else "full" (split by
    test_fraction). Only sizes are read: the npz arrays' headers, the ImageFolder file names;
    the contents are checked when perinstance.data loads them. Raises ConfigError naming
    dataset.path when the file or folder is missing or unreadable.
    """
    import os
    import zipfile

    name, path = dataset["name"], dataset["path"]
    where = f"config key 'dataset.path': {path}"
    if path is None:
        what = "an .npz file" if name == "npz" else "a folder with one subfolder of images per class"
        raise ConfigError(f"config key 'dataset.path': dataset.name {name} needs the path of {what}")
    target = Path(path).expanduser()
    if not target.exists():
        raise ConfigError(f"{where} does not exist (relative paths are read from the working directory)")
    if name == "npz":
        try:
            with zipfile.ZipFile(target) as archive:
                members = set(archive.namelist())
                if "y.npy" not in members or "x.npy" not in members:
                    raise ValueError("an npz dataset needs arrays 'x' and 'y'")
                if "x_test.npy" in members:
                    return "train", _npy_length(archive, "y.npy")
                return "full", _npy_length(archive, "y.npy")
        except (OSError, ValueError, SyntaxError, zipfile.BadZipFile, KeyError) as err:
            raise ConfigError(f"{where} is not a readable npz dataset: {err}") from None
    if not target.is_dir():
        raise ConfigError(f"{where} is not a folder (dataset.name imagefolder)")
    # ImageFolder's rule: each subfolder is a class, its image files found recursively
    count = 0
    for entry in os.scandir(target):
        if entry.is_dir():
            for _, _, files in os.walk(entry.path, followlinks=True):
                count += sum(f.lower().endswith(IMAGE_EXTENSIONS) for f in files)
    if count == 0:
        raise ConfigError(f"{where} holds no images in class subfolders ({', '.join(IMAGE_EXTENSIONS)})")
    return "full", count


def train_size(dataset: dict[str, Any]) -> int:
    """Number of training examples the `dataset:` section yields (mirrors perinstance.data.load_dataset)."""
    kind, total = DATASET_SIZES[dataset["name"]]
    if kind == "file":
        kind, total = user_dataset_size(dataset)
    if kind == "full":
        total = dataset["synthetic"]["n"] if total < 0 else total
        total -= round(dataset["test_fraction"] * total)
    return total if dataset["n_train"] is None else min(total, dataset["n_train"])


def plan_errors(config: dict[str, Any]) -> list[str]:
    """Rules between keys and against the dataset that the schema cannot express (config has defaults)."""
    errors: list[str] = []

    def need(condition: bool, key: str, message: str) -> None:
        if not condition:
            errors.append(f"config key '{key}': {message}")

    need(
        _EXPERIMENT_NAME.fullmatch(config["experiment"]) is not None,
        "experiment",
        f"{config['experiment']!r} must be letters, digits, '_', '.' or '-' (it names directories)",
    )
    training, dataset, groups = config["training"], config["dataset"], config["groups"]
    epochs = training["epochs"]
    need(
        training["lr_schedule"] != "multistep" or bool(training["lr_milestones"]),
        "training.lr_milestones",
        "the multistep schedule needs at least one milestone",
    )
    need(
        all(m < epochs for m in training["lr_milestones"]),
        "training.lr_milestones",
        f"milestones {training['lr_milestones']} must lie before the last epoch ({epochs})",
    )
    need(
        training["lr_warmup_epochs"] < epochs,
        "training.lr_warmup_epochs",
        f"{training['lr_warmup_epochs']} leaves no epoch after the warm-up (training.epochs = {epochs})",
    )
    early = training["dynamics"]["early_epoch"]
    need(
        early is None or early <= epochs,
        "training.dynamics.early_epoch",
        f"{early} is after the last epoch ({epochs})",
    )

    kind, total = DATASET_SIZES[dataset["name"]]
    if kind == "file":
        need(
            dataset["channels"] in (None, 1, 3),
            "dataset.channels",
            f"{dataset['channels']} must be 1 (grayscale), 3 (RGB) or null",
        )
        try:
            kind, total = user_dataset_size(dataset)
        except ConfigError as err:  # the rules below need the dataset's size
            return [*errors, str(err)]
    if dataset["n_train"] is not None and kind == "train":
        need(
            dataset["n_train"] <= total,
            "dataset.n_train",
            f"{dataset['n_train']} exceeds the {total} training examples of {dataset['name']}",
        )
    if kind == "full":
        full = dataset["synthetic"]["n"] if total < 0 else total
        held_out = round(dataset["test_fraction"] * full)
        need(
            0 < held_out < full,
            "dataset.test_fraction",
            f"{dataset['test_fraction']} leaves an empty split of the {full} examples of {dataset['name']}",
        )
        if dataset["n_train"] is not None:
            need(
                dataset["n_train"] <= full - held_out,
                "dataset.n_train",
                f"{dataset['n_train']} exceeds the {full - held_out} training examples of {dataset['name']}",
            )
    n = train_size(dataset)
    size = groups["size"]
    kinds = [k for k in ("low", "mid", "high") if k in groups["privacy_kinds"]]
    need(
        not kinds or 3 * size <= n,
        "groups.size",
        f"low/mid/high groups of {size} need {3 * size} training examples, the dataset has {n}",
    )
    # the rank bins continue below `high` (which takes the top m) when both are asked for
    bins = (
        groups["linear_bins"]
        + groups["log_bins"]
        + int("high" in kinds and groups["linear_bins"] + groups["log_bins"] > 0)
    )
    room = (n - size) // 2 if groups["log_bins_to"] == "median" else n
    need(
        bins * size <= room,
        "groups.linear_bins",
        f"{bins} rank bins of {size} examples do not fit in the top {room} of {n} training examples "
        f"(groups.log_bins_to: {groups['log_bins_to']})",
    )
    need(size < n, "groups.size", f"{size} leaves no training example to retain (the dataset has {n})")
    need(
        training["sampling"] != "poisson" or training["batch_size"] <= n - size,
        "training.batch_size",
        f"{training['batch_size']} is larger than the {n - size} examples an oracle trains on: "
        "Poisson sampling needs a rate B/n <= 1",
    )
    if dataset["name"] == "synthetic":
        need(
            dataset["synthetic"]["n"] >= dataset["synthetic"]["num_classes"],
            "dataset.synthetic.n",
            "needs at least one example per class",
        )

    need(
        groups["ranking_seed"] is None or groups["ranking_seed"] in config["seeds"],
        "groups.ranking_seed",
        f"{groups['ranking_seed']} is not one of the original models' seeds {config['seeds']}",
    )
    proxies = config["proxies"]
    scores = groups["proxy_scores"]
    need(
        "cscore_holdout" not in scores or proxies["holdout_models"] >= 1,
        "groups.proxy_scores",
        "cscore_holdout needs proxies.holdout_models >= 1",
    )
    need(
        "cscore_published" not in scores or proxies["published_cscores"] is not None,
        "groups.proxy_scores",
        "cscore_published needs the file named by proxies.published_cscores",
    )
    need(
        proxies["published_cscores"] is None or dataset["name"] == "cifar10",
        "proxies.published_cscores",
        "the published C-scores are for dataset.name cifar10 only",
    )
    need(
        round(proxies["holdout_fraction"] * n) >= 1 or proxies["holdout_models"] == 0,
        "proxies.holdout_fraction",
        f"{proxies['holdout_fraction']} of {n} examples is an empty holdout subset",
    )

    unlearning, oracles, barrier = config["unlearning"], config["oracles"], config["barrier"]
    evaluations = unlearning["k_max"] // unlearning["eval_every"] + 1
    need(
        evaluations >= oracles["consecutive"],
        "unlearning.k_max",
        f"{unlearning['k_max']} allows {evaluations} evaluations every {unlearning['eval_every']} steps, "
        f"fewer than the {oracles['consecutive']} consecutive ones a run needs to count as unlearned "
        "(oracles.consecutive); every run would be censored",
    )
    budgets = unlearning["gap_budgets"]
    need(
        all(b % unlearning["eval_every"] == 0 and b <= unlearning["k_max"] for b in budgets),
        "unlearning.gap_budgets",
        f"{budgets} must be multiples of unlearning.eval_every ({unlearning['eval_every']}) "
        f"and at most unlearning.k_max ({unlearning['k_max']})",
    )
    missing = [m for m in barrier["methods"] if m not in unlearning["methods"]]
    need(
        not missing,
        "barrier.methods",
        f"{missing} are not in unlearning.methods {unlearning['methods']}: "
        "their unlearned models are never made",
    )
    steps = barrier["unlearning_steps"]
    need(
        steps <= unlearning["k_max"],
        "barrier.unlearning_steps",
        f"{steps} exceeds unlearning.k_max ({unlearning['k_max']}): every unlearning run saves its "
        "barrier endpoint after exactly this many steps",
    )
    spawn = barrier["spawn_epoch"]
    checkpoints = training["checkpoints"]
    need(spawn < epochs, "barrier.spawn_epoch", f"{spawn} must be before the last epoch ({epochs})")
    need(
        spawn > 0 or checkpoints["step0"],
        "barrier.spawn_epoch",
        "0 needs the step-0 checkpoint (training.checkpoints.step0: true)",
    )
    need(
        spawn == 0 or spawn % checkpoints["every_epochs"] == 0,
        "barrier.spawn_epoch",
        f"{spawn} has no checkpoint: training.checkpoints.every_epochs ({checkpoints['every_epochs']}) "
        "must divide it",
    )
    return errors


# --------------------------------------------------------------------------- public API


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return a validated deep copy of `config` with every default filled in.

    Raises ConfigError with a one-line message naming every offending key.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping of keys, got {type(config).__name__}")
    errors = list(_non_finite(config))
    if errors:  # NaN passes every bound check of the schema, so it is reported first and alone
        raise ConfigError("; ".join(errors))
    instance = copy.deepcopy(config)
    schema_errors = sorted(
        _validator_class()(load_schema()).iter_errors(instance), key=lambda e: list(e.absolute_path)
    )
    if schema_errors:
        raise ConfigError("; ".join(_schema_message(e) for e in schema_errors))
    errors = plan_errors(instance)
    if errors:
        raise ConfigError("; ".join(errors))
    return instance


def config_digest(config: dict[str, Any], *sections: str) -> str:
    """16 hex digits of sha256 over `config`'s sections (all of them when none are named).

    The workflow names its run config `results/<experiment>/configs/<digest>.yaml` by the digest
    of the whole validated config, reruns a rule when the digest of the sections it reads changes,
    and every table records the whole-config digest (perinstance.provenance).
    """
    chosen = {s: config[s] for s in sections} if sections else dict(config)
    text = yaml.safe_dump(chosen, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate one config file; errors name the file and the key."""
    try:
        return validate_config(read_config_file(path))
    except ConfigError as err:
        message = str(err)
        raise ConfigError(message if message.startswith("config file") else f"{path}: {message}") from None
