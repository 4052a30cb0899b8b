"""Print the README's configuration table from workflow/schemas/config.schema.yaml.

Usage: python workflow/scripts/schema_to_markdown.py > /tmp/table.md  (then paste into README.md)
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


def rows(node: dict, prefix: str = ""):
    for name, sub in node.get("properties", {}).items():
        key = prefix + name
        if sub.get("type") == "object":
            yield key, "", sub["description"]
            yield from rows(sub, key + ".")
        else:
            default = sub.get("default", "(required)")
            shown = "`null`" if default is None else f"`{default if isinstance(default, str) else json.dumps(default)}`"
            yield key, shown, sub["description"]


def main() -> None:
    print("| key | default | meaning |\n|---|---|---|")
    for key, default, description in rows(yaml.safe_load(SCHEMA.read_text())):
        print(f"| `{key}` | {default} | {' '.join(description.split())} |")


if __name__ == "__main__":
    main()
