"""Atomic file I/O: an interrupted job never leaves a file that looks complete.

Every writer goes to a temporary sibling first and is renamed into place; directories
are built under a `.partial` sibling and published with one rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _write_with(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


# torch is imported where used: table and figure jobs read and write files through this module
# without paying torch's start-up.


def save_torch(obj: Any, path: str | Path) -> Path:
    import torch

    return _write_with(path, lambda tmp: torch.save(obj, tmp))


def load_state_dict(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    import torch

    return torch.load(path, map_location=map_location, weights_only=True)


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:  # a file handle stops numpy from appending ".npz" to the temp name
            np.savez(fh, **arrays)

    return _write_with(path, write)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"array file {path} does not exist")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def save_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a tidy table as CSV or Parquet, chosen by the file suffix."""
    path = Path(path)
    if path.suffix == ".parquet":
        return _write_with(path, lambda tmp: frame.to_parquet(tmp, index=False))
    if path.suffix == ".csv":
        return _write_with(path, lambda tmp: frame.to_csv(tmp, index=False))
    raise ValueError(f"unsupported table format {path.suffix!r} for {path} (use .csv or .parquet)")


def load_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} does not exist")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def save_json(obj: Any, path: str | Path) -> Path:
    return _write_with(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def partial_dir(final_dir: str | Path) -> Path:
    """Work directory of a run whose finished result will be published as `final_dir`.

    It survives an interrupted job (Snakemake deletes declared outputs of failed jobs, not
    this sibling), so a rerun can resume from what it holds.
    """
    final_dir = Path(final_dir)
    return final_dir.parent / f".{final_dir.name}.partial"


def publish_dir(work_dir: str | Path, final_dir: str | Path) -> Path:
    """Atomically move a finished work directory onto `final_dir`, replacing what was there."""
    work_dir, final_dir = Path(work_dir), Path(final_dir)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(work_dir, final_dir)
    return final_dir
