from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from perinstance.config import ConfigError, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_filled_recursively():
    config = validate_config({"experiment": "x"})
    assert config["seeds"] == [0, 1, 2]
    assert config["dataset"]["name"] == "mnist5k"
    assert config["training"]["checkpoints"] == {"step0": True, "log_start": 8, "every_epochs": 1}
    assert config["training"]["dynamics"]["batch_grad_norms"] is True


def test_input_is_not_mutated():
    raw = {"experiment": "x", "training": {}}
    validate_config(raw)
    assert raw == {"experiment": "x", "training": {}}


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({}, "'experiment' is a required property"),
        ({"experiment": "x", "trainig": {}}, "unknown config key trainig"),
        ({"experiment": "x", "training": {"checkpoints": {"every": 2}}}, "training.checkpoints.every"),
        ({"experiment": "x", "training": {"lr": -1}}, "'training.lr'"),
        ({"experiment": "x", "training": {"sampling": "random"}}, "'training.sampling'"),
        ({"experiment": "x", "model": {"name": "vgg"}}, "'model.name'"),
        ({"experiment": "x", "seeds": []}, "'seeds'"),
        ({"experiment": "a/b"}, "'experiment'"),
        ({"experiment": "x", "dataset": {"test_fraction": 1.5}}, "'dataset.test_fraction'"),
        ({"experiment": "x", "training": {"lr_schedule": "multistep"}}, "'training.lr_milestones'"),
        (
            {"experiment": "x", "training": {"epochs": 3, "dynamics": {"early_epoch": 5}}},
            "'training.dynamics.early_epoch'",
        ),
    ],
)
def test_bad_config_names_the_key(raw, needle):
    with pytest.raises(ConfigError, match=None) as err:
        validate_config(raw)
    assert needle in str(err.value)


def test_shipped_configs_validate():
    for path in [REPO / "config.yaml", *sorted((REPO / "workflow/configs").glob("*.yaml"))]:
        assert load_config(path)["experiment"]


def test_load_config_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"experiment": "x", "model": {"widht": 3}}))
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model\.widht"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_every_schema_key_is_documented():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    readme = (REPO / "docs/configuration.md").read_text()

    def keys(node, prefix=""):
        for name, sub in node.get("properties", {}).items():
            yield prefix + name
            yield from keys(sub, prefix + name + ".")

    missing = [k for k in keys(schema) if f"`{k}`" not in readme]
    assert not missing, f"docs/configuration.md does not document config keys: {missing}"


def test_every_schema_key_has_a_description_and_objects_reject_unknown_keys():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())

    def walk(node, path):
        for name, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}{name} has no description"
            if sub.get("type") == "object":
                assert sub.get("additionalProperties") is False, f"{path}{name} accepts unknown keys"
                walk(sub, f"{path}{name}.")

    walk(schema, "")


def test_schema_names_exactly_the_registered_components():
    from perinstance.config import DATASET_SIZES, load_schema
    from perinstance.data import available_datasets
    from perinstance.models import available_models
    from perinstance.unlearning import METHODS

    properties = load_schema()["properties"]
    assert sorted(properties["dataset"]["properties"]["name"]["enum"]) == available_datasets()
    assert sorted(DATASET_SIZES) == available_datasets()
    # a built-in name, or a "package.module:factory" import path
    assert sorted(properties["model"]["properties"]["name"]["anyOf"][0]["enum"]) == available_models()
    for section, key in (("unlearning", "methods"), ("unlearning", "proxy_methods"), ("barrier", "methods")):
        assert properties[section]["properties"][key]["items"]["enum"] == list(METHODS), (section, key)


@pytest.mark.parametrize(
    "dataset",
    [
        {"name": "mnist5k"},
        {"name": "digits"},
        {"name": "digits", "test_fraction": 0.33, "n_train": 500},
        {"name": "synthetic", "test_fraction": 0.25, "synthetic": {"n": 241, "num_classes": 3}},
    ],
)
def test_train_size_matches_the_loaded_dataset(dataset):
    from perinstance.config import train_size
    from perinstance.data import load_dataset

    spec = validate_config({"experiment": "x", "dataset": dataset, "groups": {"size": 10}})["dataset"]
    assert train_size(spec) == len(load_dataset(**spec).train)


def test_plan_rules_report_every_broken_key_at_once():
    with pytest.raises(ConfigError) as err:
        validate_config(
            {
                "experiment": "x",
                "unlearning": {"k_max": 10, "eval_every": 50, "methods": ["finetune"]},
                "barrier": {"methods": ["sgld"]},
            }
        )
    assert "'unlearning.k_max'" in str(err.value) and "'barrier.methods'" in str(err.value)


def test_duplicate_keys_name_file_and_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("experiment: x\nseeds: [0]\nseeds: [1]\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml, line 3: duplicate key 'seeds'"):
        load_config(path)


def test_torchvision_sizes_are_the_official_training_splits():
    # the table is used before any download; these are the datasets' published sizes
    from perinstance.config import DATASET_SIZES

    assert DATASET_SIZES["cifar10"] == ("train", 50_000) and DATASET_SIZES["svhn"] == ("train", 73_257)
    assert DATASET_SIZES["mnist"] == DATASET_SIZES["fashionmnist"] == ("train", 60_000)
