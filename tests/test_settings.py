from __future__ import annotations

import copy
import dataclasses
import types
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from perinstance.config import ConfigError, load_schema, read_config_file, validate_config
from perinstance.settings import Settings, as_settings

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILES = [REPO / "config.yaml", *sorted((REPO / "workflow/configs").glob("*.yaml"))]
SCALARS = {"integer": int, "number": float, "boolean": bool, "string": str}


def _sections(schema: dict, cls: type, path: str = ""):
    """(path, object schema, dataclass) for the root and every nested object of the schema."""
    yield path, schema, cls
    hints = get_type_hints(cls)
    for name, sub in schema["properties"].items():
        if sub.get("type") == "object":
            yield from _sections(sub, hints[name], f"{path}.{name}" if path else name)


SECTIONS = list(_sections(load_schema(), Settings))


def _expected_type(prop: dict, where: str) -> Any:
    kinds = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    nullable = "null" in kinds
    (kind,) = [k for k in kinds if k != "null"]
    if kind == "array":
        item = _expected_type(prop["items"], f"{where}[]")
        assert item is not None and not isinstance(item, types.UnionType), f"{where}: items must be scalars"
        base = tuple[item, ...]
    else:
        assert kind in SCALARS, f"{where}: schema type {kind} has no dataclass counterpart"
        base = SCALARS[kind]
    if "enum" in prop:
        assert base is str and all(isinstance(e, str) for e in prop["enum"]), f"{where}: non-string enum"
    return base | None if nullable else base


def test_the_walk_reaches_every_section():
    paths = [p for p, _, _ in SECTIONS]
    assert paths == [
        "",
        "dataset",
        "dataset.synthetic",
        "model",
        "training",
        "training.checkpoints",
        "training.dynamics",
        "privacy",
        "proxies",
        "groups",
        "oracles",
        "unlearning",
        "barrier",
    ]


@pytest.mark.parametrize("path, schema, cls", SECTIONS, ids=[p or "<root>" for p, _, _ in SECTIONS])
def test_fields_mirror_the_schema(path, schema, cls):
    assert dataclasses.is_dataclass(cls), f"{path}: {cls} is not a dataclass"
    assert cls.__dataclass_params__.frozen, f"{cls.__name__} is not frozen"
    fields = dataclasses.fields(cls)
    # same keys, in the schema's order
    assert [f.name for f in fields] == list(schema["properties"]), cls.__name__
    hints = get_type_hints(cls)
    for f in fields:
        where = f"{path}.{f.name}" if path else f.name
        # the schema is the only source of defaults
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, where
        prop = schema["properties"][f.name]
        if prop.get("type") == "object":
            assert dataclasses.is_dataclass(hints[f.name]), where
        else:
            assert hints[f.name] == _expected_type(prop, where), where


@pytest.mark.parametrize("path, schema, cls", SECTIONS, ids=[p or "<root>" for p, _, _ in SECTIONS])
def test_every_validated_config_has_every_field(path, schema, cls):
    # what makes from_config total: no extra keys, and each key filled in (default) or required
    assert schema.get("additionalProperties") is False, path
    required = set(schema.get("required", []))
    for name, prop in schema["properties"].items():
        assert "default" in prop or name in required, f"{path}.{name} has no default and is not required"


def _same(a: Any, b: Any, where: str = "") -> None:
    """Equality that also compares types (2 == 2.0 and True == 1 for ==); key order is free (to_config
    lists keys in the schema's order, validate_config in the file's; every serialisation sorts them)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize(
    "raw",
    [*CONFIG_FILES, {"experiment": "x"}],
    ids=[*(str(p.relative_to(REPO)) for p in CONFIG_FILES), "defaults"],
)
def test_round_trip(raw):
    raw = read_config_file(raw) if isinstance(raw, Path) else raw
    validated = validate_config(raw)
    settings = Settings.from_config(validated)
    _same(settings.to_config(), validated)
    assert Settings.from_config(settings.to_config()) == settings
    assert as_settings(raw) == settings


def test_lists_become_tuples_and_nested_sections_are_dataclasses():
    settings = as_settings(read_config_file(REPO / "config.yaml"))
    assert settings.seeds == (0, 1, 2)
    assert settings.training.lr_milestones == ()
    assert settings.dataset.synthetic.shape == (1, 8, 8)
    assert settings.training.checkpoints.every_epochs == 1
    assert settings.unlearning.lr is None
    assert settings.privacy.alpha == 2 and type(settings.privacy.alpha) is int  # as validated, not converted
    hash(settings)  # frozen all the way down


def test_frozen():
    settings = as_settings({"experiment": "x"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.experiment = "y"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.training.checkpoints.every_epochs = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        settings.unlearning.seeds.append(3)  # type: ignore[attr-defined]
    with pytest.raises((AttributeError, TypeError)):
        settings.new_key = 1  # type: ignore[attr-defined]


def test_settings_do_not_share_state_with_the_dict():
    validated = validate_config({"experiment": "x"})
    settings = Settings.from_config(validated)
    validated["seeds"].append(9)
    validated["training"]["lr"] = 1.0
    assert settings.seeds == (0, 1, 2) and settings.training.lr == 0.05
    out = settings.to_config()
    out["groups"]["privacy_kinds"].append("extra")
    assert settings.groups.privacy_kinds == ("low", "mid", "high")


def test_as_settings_returns_settings_as_is_and_leaves_dicts_alone():
    raw = {"experiment": "x", "training": {}}
    settings = as_settings(raw)
    assert raw == {"experiment": "x", "training": {}}
    assert as_settings(settings) is settings
    assert as_settings(types.MappingProxyType(raw)) == settings


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({}, "'experiment' is a required property"),
        ({"experiment": "x", "trainig": {}}, "unknown config key trainig"),
        ({"experiment": "x", "training": {"epochs": 0}}, "'training.epochs'"),
        ({"experiment": "x", "privacy": {"beta": float("nan")}}, "must be a finite number"),
        ({"experiment": "x", "groups": {"ranking_seed": 7}}, "'groups.ranking_seed'"),  # a rule between keys
        (["experiment"], "must be a mapping"),
    ],
)
def test_as_settings_refuses_a_bad_config(bad, needle):
    with pytest.raises(ConfigError, match=needle):
        as_settings(bad)


def test_from_config_needs_a_validated_dict():
    with pytest.raises(ConfigError, match="missing config key seeds"):
        Settings.from_config({"experiment": "x"})
    validated = validate_config({"experiment": "x"})
    extra = copy.deepcopy(validated)
    extra["training"]["checkpoints"]["every"] = 2
    with pytest.raises(ConfigError, match="unknown config key training.checkpoints.every"):
        Settings.from_config(extra)
    flat = copy.deepcopy(validated)
    flat["model"] = "smallcnn"
    with pytest.raises(ConfigError, match="'model': expected a mapping"):
        Settings.from_config(flat)
