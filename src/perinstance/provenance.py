"""Provenance of a result: which package version, config and seeds produced a table or figure.

A job's record is built once from the experiment config it runs with (`Provenance.from_config`)
and made current for the job (`recording`); `perinstance.io.save_table` writes the current record
into every table (CSV: `# key: value` lines above the header; Parquet: the file's key-value
metadata) and `perinstance.figures.save_figure` into the PNG's text chunks and the PDF's subject.
`perinstance.io.read_provenance` reads it back. A table written outside a job has none.

Everything in the record is a function of the package and the config (no time, host or path), so
reruns and runs on other machines or schedulers write byte-identical files.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

PACKAGE = "perinstance"
# the key of the record in Parquet key-value metadata and in PNG text chunks
METADATA_KEY = "perinstance.provenance"
# the order of the fields in files; the CSV header starts with its first field ("# package: ...")
_FIELDS = ("package", "version", "config_digest", "experiment", "seeds", "unlearning_seeds", "ranking_seed")
_LINE = re.compile(r"# ([a-z_]+): (.*)")


@dataclass(frozen=True)
class Provenance:
    """What produced a result file.

    Attributes:
        package: always "perinstance".
        version: `perinstance.__version__` of the code that wrote the file.
        config_digest: 16 hex digits of sha256 over the whole validated config
            (`perinstance.config.config_digest`); the workflow stores that config as
            `results/<experiment>/configs/<config_digest>.yaml`.
        experiment: config key `experiment`.
        seeds: the training seeds (config key `seeds`).
        unlearning_seeds: how many unlearning runs per (method, group) (`unlearning.seeds`).
        ranking_seed: `groups.ranking_seed` when the config sets one, else None.
    """

    package: str
    version: str
    config_digest: str
    experiment: str
    seeds: tuple[int, ...]
    unlearning_seeds: int | None = None
    ranking_seed: int | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Provenance:
        """The record of a job that runs with the validated `config`."""
        from . import __version__
        from .config import config_digest

        unlearning = config.get("unlearning") or {}
        groups = config.get("groups") or {}
        return cls(
            package=PACKAGE,
            version=__version__,
            config_digest=config_digest(config),
            experiment=str(config["experiment"]),
            seeds=tuple(int(s) for s in config.get("seeds", ())),
            unlearning_seeds=None if unlearning.get("seeds") is None else int(unlearning["seeds"]),
            ranking_seed=None if groups.get("ranking_seed") is None else int(groups["ranking_seed"]),
        )

    def fields(self) -> dict[str, str]:
        """The record as text, in file order; fields that are None are left out."""
        values: dict[str, Any] = {name: getattr(self, name) for name in _FIELDS}
        values["seeds"] = ",".join(str(s) for s in self.seeds)
        return {name: str(value) for name, value in values.items() if value is not None}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Provenance:
        """The record from its text fields (`fields()`); unknown fields are ignored."""
        missing = [name for name in _FIELDS[:5] if name not in fields]
        if missing:
            raise ValueError(f"provenance without {', '.join(missing)}")

        def optional(name: str) -> int | None:
            return int(fields[name]) if fields.get(name, "") not in ("", "None") else None

        seeds = fields["seeds"].strip()
        return cls(
            package=fields["package"],
            version=fields["version"],
            config_digest=fields["config_digest"],
            experiment=fields["experiment"],
            seeds=tuple(int(s) for s in seeds.split(",")) if seeds else (),
            unlearning_seeds=optional("unlearning_seeds"),
            ranking_seed=optional("ranking_seed"),
        )

    def summary(self) -> str:
        """One line for places with room for one (a PDF's subject), e.g.
        `perinstance 0.1.0 | config 1a2b3c4d5e6f7a8b | experiment default | seeds 0,1,2 | ...`."""
        fields = self.fields()
        parts = [f"{fields.pop('package')} {fields.pop('version')}", f"config {fields.pop('config_digest')}"]
        return " | ".join(parts + [f"{name} {value}" for name, value in fields.items()])

    def header_lines(self) -> list[str]:
        """The comment lines a CSV table starts with: `# key: value`, one field a line."""
        return [f"# {name}: {value}" for name, value in self.fields().items()]


def parse_header(lines: list[str]) -> tuple[Provenance | None, int]:
    """The record in the leading lines of a CSV file and how many lines it takes (0 without one).

    A header is recognised only when the file starts with `# package: perinstance`; it ends at the
    first line that is not a `# key: value` line (the CSV's own header row).
    """
    if not lines or lines[0].rstrip("\r\n") != f"# package: {PACKAGE}":
        return None, 0
    fields: dict[str, str] = {}
    count = 0
    for line in lines:
        match = _LINE.fullmatch(line.rstrip("\r\n"))
        if not match:
            break
        fields[match.group(1)] = match.group(2)
        count += 1
    return Provenance.from_fields(fields), count


# --------------------------------------------------------------------------- the current record

# One record per process (a job is a process), not a ContextVar: threads and forked workers that
# write files for the job see it as well.
_current: Provenance | None = None


def current() -> Provenance | None:
    """The record that files written now carry (None outside a job)."""
    return _current


@contextlib.contextmanager
def recording(record: Provenance | Mapping[str, Any] | None) -> Iterator[Provenance | None]:
    """Make `record` (or the record of a config mapping) current for the block, then restore the
    previous one."""
    global _current
    if record is not None and not isinstance(record, Provenance):
        record = Provenance.from_config(record)
    previous, _current = _current, record
    try:
        yield record
    finally:
        _current = previous
