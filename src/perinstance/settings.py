"""A typed, frozen view of a validated experiment configuration.

`config.validate_config` stays the one validator and the schema (workflow/schemas/config.schema.yaml)
the one source of keys, defaults and descriptions: these dataclasses carry no defaults and no
documentation of their own, only the shape of the schema (tests/test_settings.py checks that the
two agree, key by key and type by type). Build one with `as_settings(config)` from a raw or
validated dict, or `Settings.from_config(validated)` from validate_config's output; read
`cfg.training.checkpoints.every_epochs` instead of `config["training"]["checkpoints"]["every_epochs"]`.

Every section is a frozen dataclass and every list a tuple, so a Settings cannot be changed after
validation (and is hashable). Values are those of the validated dict, unconverted: a `number`
the YAML wrote as `2` stays the int 2 (PEP 484 lets an int stand for a float), so that
`to_config()` gives back exactly the dict it was built from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from .config import ConfigError, validate_config

__all__ = [
    "Settings",
    "as_settings",
    "DatasetSettings",
    "SyntheticSettings",
    "ModelSettings",
    "TrainingSettings",
    "CheckpointSettings",
    "DynamicsSettings",
    "PrivacySettings",
    "ProxySettings",
    "GroupSettings",
    "OracleSettings",
    "UnlearningSettings",
    "BarrierSettings",
]

_S = TypeVar("_S", bound="_Section")


class _Section:
    """Conversion shared by every section: from a validated mapping, back to a plain dict."""

    __slots__ = ()

    @classmethod
    def _from_mapping(cls: type[_S], values: Mapping[str, Any], path: str) -> _S:
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"config key '{path or '<root>'}': expected a mapping, got {type(values).__name__}"
            )
        hints = _nested_sections(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in values]
        unknown = sorted(str(k) for k in values if k not in names)
        if missing or unknown:
            prefix = f"{path}." if path else ""
            parts = ([f"missing config key {', '.join(prefix + n for n in missing)}"] if missing else []) + (
                [f"unknown config key {', '.join(prefix + u for u in unknown)}"] if unknown else []
            )
            raise ConfigError("; ".join(parts) + " (Settings.from_config needs validate_config's output)")
        kwargs: dict[str, Any] = {}
        for name in names:
            value = values[name]
            where = f"{path}.{name}" if path else name
            if name in hints:
                kwargs[name] = hints[name]._from_mapping(value, where)
            elif isinstance(value, (list, tuple)):
                kwargs[name] = tuple(value)
            elif isinstance(value, Mapping):
                raise ConfigError(f"config key '{where}': expected a value, got a mapping")
            else:
                kwargs[name] = value
        return cls(**kwargs)

    def to_config(self) -> dict[str, Any]:
        """The plain dict (lists, not tuples) this section was built from."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, _Section):
        return value.to_config()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@cache
def _nested_sections(cls: type) -> dict[str, type[_Section]]:
    """Fields of `cls` whose type is itself a section (resolved once per class)."""
    nested = {}
    for name, hint in get_type_hints(cls).items():
        if isinstance(hint, type) and issubclass(hint, _Section):
            nested[name] = hint
        elif get_origin(hint) is Union and any(
            isinstance(a, type) and issubclass(a, _Section) for a in get_args(hint)
        ):
            raise TypeError(f"{cls.__name__}.{name}: a section cannot be optional")
    return nested


_frozen = dataclasses.dataclass(frozen=True, slots=True)


# --------------------------------------------------------------------------- sections (schema order)


@_frozen
class SyntheticSettings(_Section):
    n: int
    num_classes: int
    shape: tuple[int, ...]
    signal: float
    label_noise: float
    seed: int


@_frozen
class DatasetSettings(_Section):
    name: str
    root: str
    download: bool
    test_fraction: float
    split_seed: int
    n_train: int | None
    n_test: int | None
    synthetic: SyntheticSettings
    path: str | None
    image_size: tuple[int, ...] | None
    channels: int | None


@_frozen
class ModelSettings(_Section):
    name: str
    width: int
    norm_groups: int


@_frozen
class CheckpointSettings(_Section):
    step0: bool
    log_start: int | None
    every_epochs: int


@_frozen
class DynamicsSettings(_Section):
    early_epoch: int | None
    batch_grad_norms: bool


@_frozen
class TrainingSettings(_Section):
    optimizer: str
    sgld_beta: float
    epochs: int
    batch_size: int
    sampling: str
    lr: float
    lr_schedule: str
    lr_warmup_epochs: float
    lr_milestones: tuple[float, ...]
    lr_gamma: float
    momentum: float
    weight_decay: float
    augment: str
    eval_every_epochs: int
    eval_batch_size: int
    checkpoints: CheckpointSettings
    dynamics: DynamicsSettings


@_frozen
class PrivacySettings(_Section):
    alpha: float
    orders: tuple[float, ...]
    beta: float
    clip: float | None
    include_step0: bool
    rdp_method: str
    delta: float
    norm_batch_size: int
    norm_jobs: int
    robustness_betas: tuple[float, ...]
    robustness_orders: tuple[float, ...]
    max_lr_levels: int


@_frozen
class ProxySettings(_Section):
    holdout_models: int
    holdout_fraction: float
    holdout_epochs: int | None
    published_cscores: str | None
    bootstrap: int
    ci: float


@_frozen
class GroupSettings(_Section):
    size: int
    privacy_kinds: tuple[str, ...]
    linear_bins: int
    log_bins: int
    log_bins_to: str
    proxy_scores: tuple[str, ...]
    random_groups: int
    class_balanced: bool
    seed: int
    ranking_seed: int | None


@_frozen
class OracleSettings(_Section):
    count: int
    tol_abs: float
    z: float
    consecutive: int


@_frozen
class UnlearningSettings(_Section):
    methods: tuple[str, ...]
    proxy_methods: tuple[str, ...]
    seeds: int
    lr: float | None
    momentum: float | None
    weight_decay: float | None
    batch_size: int | None
    sgld_beta: float
    l1_gamma: float
    neggrad_alpha: float
    scrub_alpha: float
    scrub_gamma: float
    scrub_temperature: float
    scrub_max_epochs: int
    salun_fraction: float
    k_max: int
    eval_every: int
    eval_retain_size: int | None
    eval_test_size: int | None
    stop_when_unlearned: bool
    stop_margin: int
    stop_when_overshot: int | None
    gap_budgets: tuple[int, ...]
    seed_offset: int


@_frozen
class BarrierSettings(_Section):
    lambdas: int
    spawn_epoch: int
    methods: tuple[str, ...]
    unlearning_steps: int
    variant: str


@_frozen
class Settings(_Section):
    """One experiment's validated configuration; field names are the schema's top-level keys."""

    experiment: str
    seeds: tuple[int, ...]
    device: str
    threads: int
    models_per_job: str
    keep_models: bool
    dataset: DatasetSettings
    model: ModelSettings
    training: TrainingSettings
    privacy: PrivacySettings
    proxies: ProxySettings
    groups: GroupSettings
    oracles: OracleSettings
    unlearning: UnlearningSettings
    barrier: BarrierSettings

    @classmethod
    def from_config(cls, validated: Mapping[str, Any]) -> Settings:
        """The Settings of a dict that validate_config returned (every default already filled in).

        Not a validator: it only refuses a dict whose keys are not exactly the schema's. Use
        `as_settings` for a raw dict.
        """
        return cls._from_mapping(validated, "")


def as_settings(config: Mapping[str, Any] | Settings) -> Settings:
    """`config` as Settings: a Settings as is, anything else validated with validate_config first.

    Raises config.ConfigError (one line, naming the keys) when the dict is not a valid config.
    """
    if isinstance(config, Settings):
        return config
    if isinstance(config, Mapping) and not isinstance(config, dict):
        config = dict(config)
    return Settings.from_config(validate_config(config))  # type: ignore[arg-type]
