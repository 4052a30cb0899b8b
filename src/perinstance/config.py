"""Experiment configuration: load, validate against the JSON schema, fill defaults.

The schema (workflow/schemas/config.schema.yaml, shipped inside the package as
config.schema.yaml) is the single source of truth for every key and default; the
Snakefile validates with the same file.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """A configuration key is missing, unknown or has a bad value."""


@lru_cache(maxsize=1)
def load_schema() -> dict:
    text = resources.files("perinstance").joinpath("config.schema.yaml").read_text()
    return yaml.safe_load(text)


def _with_defaults(validator_class):
    """Validator that fills `default` values while validating (jsonschema FAQ pattern)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema and key not in instance:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key_path(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        prefix = f"{path}." if path else ""
        return f"unknown config key {', '.join(prefix + u for u in unknown)!s} (allowed here: {allowed})"
    if error.validator == "required":
        return f"config key {error.message}"
    return f"config key '{path or '<root>'}': {error.message}"


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return a validated deep copy of `config` with every default filled in.

    Raises ConfigError naming the offending key.
    """
    schema = load_schema()
    instance = copy.deepcopy(config)
    validator_class = _with_defaults(jsonschema.validators.validator_for(schema))
    errors = sorted(validator_class(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("; ".join(_key_path(e) for e in errors))
    _check_cross_field(instance)
    return instance


def _check_cross_field(config: dict[str, Any]) -> None:
    training = config["training"]
    if training["lr_schedule"] == "multistep" and not training["lr_milestones"]:
        raise ConfigError("config key 'training.lr_milestones': multistep schedule needs at least one milestone")
    early = training["dynamics"]["early_epoch"]
    if early is not None and early > training["epochs"]:
        raise ConfigError(
            f"config key 'training.dynamics.early_epoch': {early} is after the last epoch ({training['epochs']})"
        )


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with path.open() as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(raw).__name__}")
    try:
        return validate_config(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
