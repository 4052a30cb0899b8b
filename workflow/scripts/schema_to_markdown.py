"""Write docs/configuration.md from workflow/schemas/config.schema.yaml.

The schema is the one place a config key, its default, its allowed values and its meaning are
written down; the manual page is generated from it, deterministically (same schema, same bytes).

Usage:
    python workflow/scripts/schema_to_markdown.py                 # print the page
    python workflow/scripts/schema_to_markdown.py --output docs/configuration.md
    python workflow/scripts/schema_to_markdown.py --check docs/configuration.md

--check exits with status 1 (and a diff) when the file differs from what the schema gives;
tests/test_docs.py runs the same comparison.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
OUTPUT = REPO / "docs" / "configuration.md"
COMMAND = "python workflow/scripts/schema_to_markdown.py --output docs/configuration.md"

PREAMBLE = """\
# Configuration

Every key of an experiment's config file, with its default, the values it accepts and what it
means. `config.yaml` is the default experiment (it sets a few keys to values other than the
defaults below; its comments say why), `workflow/configs/test.yaml` the tiny experiment of the
tests, `workflow/configs/paper-cifar10.yaml` and `workflow/configs/paper-svhn.yaml` the
paper-scale ones.

## How a config is read

- Override single keys with `snakemake --config experiment=mine`, or use your own file with
  `--configfile`. A `--configfile` stands on its own: nothing is merged in from `config.yaml`, so
  keys it omits take the defaults below, and `experiment` is required.
- One validator (`perinstance.config.validate_config`) checks the config in the Snakefile, before
  the DAG is built, and again in every job. It fills in the defaults and refuses, with one line
  naming the file and every offending key: unknown keys, duplicate keys in the YAML file, wrong
  types (an integer key given `10.0`), NaN or infinite numbers, names that are not registered
  (`dataset.name`, `model.name`, unlearning methods), and combinations that would fail or mislead
  later, such as `unlearning.k_max` too short for `oracles.consecutive` evaluations,
  `barrier.methods` not in `unlearning.methods`, `barrier.spawn_epoch` without a checkpoint, a
  proxy without its inputs, or forget groups larger than the dataset.
- `snakemake -n`, `--lint`, `--unlock` and `--report` write no result.
- Each run's jobs read the validated config from `results/<experiment>/configs/<digest>.yaml`, a
  file named by the digest of its content and written once the run holds Snakemake's lock. A
  second invocation with another config (refused by the lock, or a dry run) therefore cannot
  change what a running workflow reads. A rule reruns when the config sections it reads change,
  and only then.

The method behind the keys is in [method.md](method.md); which keys are this project's own
choices (the paper is silent on them) is listed there under "Our choices where the paper is
silent".
"""


def _cell(text: str) -> str:
    """One table cell: a single line, the column separator escaped, and `<` escaped outside
    code spans (so `results/<experiment>/` is not read as an HTML tag)."""
    parts = " ".join(str(text).split()).replace("|", "\\|").split("`")
    parts[::2] = [re.sub(r"<(?=[A-Za-z/])", "&lt;", part) for part in parts[::2]]
    return "`".join(parts)


def _code(value) -> str:
    shown = value if isinstance(value, str) else json.dumps(value)
    return f"`{shown}`"


def _bounds(node: dict) -> str:
    low = ("[", node["minimum"]) if "minimum" in node else None
    if "exclusiveMinimum" in node:
        low = ("(", node["exclusiveMinimum"])
    high = (node["maximum"], "]") if "maximum" in node else None
    if "exclusiveMaximum" in node:
        high = (node["exclusiveMaximum"], ")")
    if low and high:
        return f" in {low[0]}{low[1]}, {high[0]}{high[1]}"
    if low:
        return f" {'≥' if low[0] == '[' else '>'} {low[1]}"
    if high:
        return f" {'≤' if high[1] == ']' else '<'} {high[0]}"
    return ""


_PLURAL = re.compile(r"^(integer|number|string|boolean)\b")


def allowed(node: dict) -> str:
    """What a key accepts, in words, from its JSON Schema."""
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    nullable = "null" in types
    types = [t for t in types if t != "null"]
    if "enum" in node:
        text = "one of " + ", ".join(_code(v) for v in node["enum"])
    elif types == ["array"]:
        items = node.get("items", {})
        if "enum" in items:
            text = "list drawn from " + ", ".join(_code(v) for v in items["enum"])
        else:
            text = "list of " + _PLURAL.sub(r"\1s", allowed(items), count=1)
        if node.get("minItems") is not None and node.get("minItems") == node.get("maxItems"):
            text += f", exactly {node['minItems']}"
        elif "minItems" in node:
            text += f", at least {node['minItems']}"
        if node.get("uniqueItems"):
            text += ", no repeats"
    else:
        text = " or ".join(types) or "any"
        text += _bounds(node)
        if "pattern" in node:
            text += f" matching `{node['pattern']}`"
    return text + (" or `null`" if nullable else "")


def rows(node: dict, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    """(key, default, allowed, meaning) of every key under `node`, in schema order."""
    for name, sub in node.get("properties", {}).items():
        key = prefix + name
        if sub.get("type") == "object":
            yield key, "", "section", sub["description"]
            yield from rows(sub, key + ".")
        else:
            required = name in node.get("required", [])
            default = "(required)" if required else _code(sub.get("default"))
            yield key, default, allowed(sub), sub["description"]


def _table(entries) -> list[str]:
    lines = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key, default, accepts, meaning in entries:
        cells = [f"`{key}`", default, _cell(accepts), _cell(meaning)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(schema: dict) -> str:
    """The whole page for `schema` (a parsed config.schema.yaml)."""
    lines = [
        "<!-- Generated from workflow/schemas/config.schema.yaml by"
        " workflow/scripts/schema_to_markdown.py; do not edit by hand."
        f" Regenerate: {COMMAND} -->",
        "",
        PREAMBLE.rstrip("\n"),
        "",
        "## Keys",
        "",
        "One section per block of the config file; a default of `null` means the key is off or"
        " falls back to the setting its meaning names.",
    ]
    properties = schema.get("properties", {})
    top = {k: v for k, v in properties.items() if v.get("type") != "object"}
    sections = {k: v for k, v in properties.items() if v.get("type") == "object"}
    if top:
        lines += ["", "### Top level", ""]
        lines += _table(rows({"properties": top, "required": schema.get("required", [])}))
    for name, section in sections.items():
        lines += ["", f"### `{name}`", "", _cell(section["description"]), ""]
        lines += _table(rows(section, name + "."))
    return "\n".join(lines) + "\n"


def generate(schema_path: Path = SCHEMA) -> str:
    return render(yaml.safe_load(schema_path.read_text(encoding="utf-8")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--output", type=Path, help="write the page to this file")
    group.add_argument("--check", type=Path, help="compare this file with the page; 1 if it differs")
    args = parser.parse_args(argv)
    page = generate()
    if args.output:
        args.output.write_text(page, encoding="utf-8", newline="\n")
    elif args.check:
        current = args.check.read_text(encoding="utf-8") if args.check.exists() else ""
        if current != page:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                page.splitlines(keepends=True),
                fromfile=str(args.check),
                tofile="generated from the schema",
            )
            sys.stdout.writelines(diff)
            print(f"{args.check} is out of date; regenerate it with: {COMMAND}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
