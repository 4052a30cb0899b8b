"""Atomic, checked file I/O: an interrupted job never leaves a file that looks complete, a
damaged file is reported by name instead of surfacing as a library traceback, and nothing the
project did not create is ever deleted.

Every writer goes to a temporary sibling first and is renamed into place; directories
are built under a `.partial` sibling and published with one rename. Published run directories
carry a marker file (`RUN_MARKER`): only marked directories are replaced or removed without
`force`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import supervisor

if TYPE_CHECKING:
    import torch

    from .provenance import Provenance

RUN_MARKER = ".perinstance-run"


class RefusedOverwrite(ValueError):
    """A path to replace or remove was not made by the project; the message is one line."""


class CorruptArtefact(ValueError):
    """A stored artefact exists but cannot be used (truncated, corrupt, incomplete); one-line message."""


# --------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    # Linux reports the umask without changing it; the os.umask round trip is the fallback
    # (it briefly sets 0, which only matters to threads creating files at that very moment).
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    The file gets the permissions a plain `open` would give it (0666 less the umask), not
    mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        supervisor.check()  # a job whose Snakemake is gone publishes nothing
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _write_with(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def copy_file(source: str | Path, target: str | Path) -> Path:
    """Copy `source` onto `target` atomically."""
    return _write_with(target, lambda tmp: shutil.copyfile(source, tmp))


# --------------------------------------------------------------------------- checked reads


def _first_line(err: BaseException, limit: int = 160) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()  # torch styles some messages
    line = text[0] if text else type(err).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _corrupt(path: Path, what: str) -> CorruptArtefact:
    return CorruptArtefact(f"{path}: {what}; delete it and rerun")


def _require_file(path: str | Path, kind: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} {path} does not exist")
    return path


def _arrow_errors() -> tuple[type[BaseException], ...]:
    try:
        import pyarrow
    except ImportError:
        return ()
    return (pyarrow.ArrowException,)


# What the readers raise on a damaged file. A missing or unreadable (permissions) file is not
# damaged: those OSErrors pass through as they are.
_NOT_DAMAGE: tuple[type[BaseException], ...] = (FileNotFoundError, PermissionError, IsADirectoryError)
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    ValueError,
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    UnicodeDecodeError,
    pickle.UnpicklingError,
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
    KeyError,
)


def require_finite(array: Any, what: str, path: str | Path) -> None:
    """Raise CorruptArtefact naming `path` if the numpy array or tensor `array` holds NaN or inf."""
    if hasattr(array, "is_floating_point"):  # a tensor, checked without a copy to numpy
        import torch

        bad = (array.is_floating_point() or array.is_complex()) and not bool(torch.isfinite(array).all())
    else:
        array = np.asarray(array)
        bad = array.dtype.kind in "fc" and not bool(np.isfinite(array).all())
    if bad:
        raise _corrupt(Path(path), f"{what} holds non-finite values (NaN or inf)")


# torch is imported where used: table and figure jobs read and write files through this module
# without paying torch's start-up.


def save_torch(obj: Any, path: str | Path) -> Path:
    """Write `obj` with torch.save, atomically.

    Saved through a file object: torch names the records inside the zip after a path's stem, so
    saving to the temporary path would put its random name into the file and make the same weights
    differ byte for byte between runs.
    """
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)

    return _write_with(path, write)


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Read a torch.save file holding only tensors and plain containers (weights_only)."""
    path = _require_file(path, "file")
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except _NOT_DAMAGE:
        raise
    except pickle.UnpicklingError as err:
        raise _corrupt(
            path,
            f"holds objects other than tensors and plain containers, refused "
            f"(weights_only): {_first_line(err)}",
        ) from err
    except (RuntimeError, *_READ_ERRORS) as err:  # torch: "PytorchStreamReader failed ..."
        raise _corrupt(
            path, f"not a readable PyTorch file (truncated or corrupt: {_first_line(err)})"
        ) from err


def load_state_dict(
    path: str | Path, map_location: str | torch.device = "cpu", *, check_finite: bool = True
) -> dict[str, torch.Tensor]:
    """Model weights saved as a state_dict; non-finite weights are refused unless `check_finite` is off."""
    path = _require_file(path, "checkpoint")
    state = load_torch(path, map_location=map_location)
    import torch

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _corrupt(path, f"not a state_dict of tensors (holds {type(state).__name__})")
    if check_finite:
        for key, tensor in state.items():
            require_finite(tensor, f"weight {key!r}", path)
    return state


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """Write named arrays as an uncompressed .npz, atomically."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as fh:  # a file handle stops numpy from appending ".npz" to the temp name
            np.savez(fh, **arrays)

    return _write_with(path, write)


def load_npz(path: str | Path, required: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """All arrays of an .npz file (pickles refused); `required` names arrays that must be present."""
    path = _require_file(path, "array file")
    unreadable = "not a readable .npz archive (truncated or corrupt: {})"
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise _corrupt(path, "not an .npz archive (a single .npy array)")
        with data:
            arrays = {key: data[key] for key in data.files}  # members are read, and CRC-checked, here
    except (CorruptArtefact, *_NOT_DAMAGE):
        raise
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise _corrupt(
                path, "holds object arrays or pickled data, which would need pickle to load; refused"
            ) from err
        raise _corrupt(path, unreadable.format(_first_line(err))) from err
    except _READ_ERRORS as err:
        raise _corrupt(path, unreadable.format(_first_line(err))) from err
    missing = [key for key in required if key not in arrays]
    if missing:
        raise _corrupt(
            path,
            f"missing array(s) {', '.join(map(repr, missing))} "
            f"(holds {', '.join(map(repr, sorted(arrays))) or 'nothing'})",
        )
    return arrays


def save_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a tidy table as CSV or Parquet, chosen by the file suffix.

    Inside a job the table carries the job's provenance (`perinstance.provenance`): a CSV starts
    with `# key: value` comment lines, a Parquet file holds the record in its key-value metadata.
    Outside a job (no current record) the file is the plain table.
    """
    from . import provenance

    path = Path(path)
    if path.suffix not in (".parquet", ".csv"):
        raise ValueError(f"unsupported table format {path.suffix!r} for {path} (use .csv or .parquet)")
    record = provenance.current()
    if path.suffix == ".parquet":
        if record is None:
            return _write_with(path, lambda tmp: frame.to_parquet(tmp, index=False))
        return _write_with(path, lambda tmp: _write_parquet(frame, tmp, record))

    if record is None:
        return _write_with(path, lambda tmp: frame.to_csv(tmp, index=False))

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="") as fh:  # newline="": as to_csv opens a path
            fh.write("".join(line + "\n" for line in record.header_lines()))
            frame.to_csv(fh, index=False)

    return _write_with(path, write_csv)


def _write_parquet(frame: pd.DataFrame, tmp: Path, record: Provenance) -> None:
    # what DataFrame.to_parquet(index=False) writes (pyarrow, snappy), with the record added to the
    # schema's key-value metadata next to pandas' own
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .provenance import METADATA_KEY

    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), METADATA_KEY.encode(): json.dumps(record.fields()).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), tmp, compression="snappy")


# the most `# key: value` lines a CSV provenance header may take
_HEADER_LINES = 32


def _csv_header(path: Path) -> tuple[Provenance | None, int]:
    """The provenance record at the top of a CSV file and the number of lines it takes."""
    from .provenance import parse_header

    with path.open(encoding="utf-8", newline="") as fh:
        if fh.read(2) != "# ":  # the common case, a table without a header, costs two characters
            return None, 0
        fh.seek(0)
        lines = []
        for line in fh:
            lines.append(line)
            if len(lines) > _HEADER_LINES or not line.startswith("# "):
                break
    return parse_header(lines)


def load_table(path: str | Path) -> pd.DataFrame:
    """A table written by `save_table` (Parquet by suffix, CSV otherwise); a CSV's provenance
    lines are skipped (`read_provenance` returns them)."""
    path = _require_file(path, "table")
    parquet = path.suffix == ".parquet"
    try:
        if parquet:
            return pd.read_parquet(path)
        _, skip = _csv_header(path)
        # skiprows, not comment="#": a '#' inside a field must stay part of it
        return pd.read_csv(path, skiprows=skip)
    except _NOT_DAMAGE:
        raise
    except pd.errors.EmptyDataError as err:
        raise _corrupt(path, "an empty CSV file (no columns)") from err
    except (*_READ_ERRORS, *_arrow_errors()) as err:
        kind = "Parquet" if parquet else "CSV"
        raise _corrupt(
            path, f"not a readable {kind} file (truncated or corrupt: {_first_line(err)})"
        ) from err


def read_provenance(path: str | Path) -> Provenance | None:
    """The `perinstance.provenance.Provenance` record a table (CSV, Parquet) or figure (PNG)
    carries, or None for a file written without one."""
    from .provenance import METADATA_KEY, Provenance

    path = _require_file(path, "file")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            text = (pq.read_schema(path).metadata or {}).get(METADATA_KEY.encode())
            return None if text is None else Provenance.from_fields(json.loads(text))
        if path.suffix == ".png":
            from PIL import Image

            with Image.open(path) as image:
                text = image.text.get(METADATA_KEY)  # type: ignore[attr-defined]
            return None if text is None else Provenance.from_fields(json.loads(text))
        return _csv_header(path)[0]
    except _NOT_DAMAGE:
        raise
    except (*_READ_ERRORS, *_arrow_errors()) as err:
        raise _corrupt(path, f"unreadable provenance ({_first_line(err)})") from err


def save_json(obj: Any, path: str | Path) -> Path:
    """Write `obj` as indented, key-sorted JSON, atomically."""
    return _write_with(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def load_json(path: str | Path) -> Any:
    """The object in a JSON file."""
    path = _require_file(path, "file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except _NOT_DAMAGE:
        raise
    except (*_READ_ERRORS,) as err:
        raise _corrupt(path, f"not a readable JSON file (truncated or corrupt: {_first_line(err)})") from err


# --------------------------------------------------------------------------- run directories


def partial_dir(final_dir: str | Path) -> Path:
    """Work directory of a run whose finished result will be published as `final_dir`.

    It survives an interrupted job (Snakemake deletes declared outputs of failed jobs, not
    this sibling), so a rerun can resume from what it holds.
    """
    final_dir = Path(final_dir)
    return final_dir.parent / f".{final_dir.name}.partial"


def write_run_marker(run_dir: str | Path, kind: str, fingerprint: str | None = None) -> Path:
    """Mark `run_dir` as made by the project, so that it may later be replaced or removed."""
    from . import __version__

    return save_json(
        {"kind": kind, "created_by": f"perinstance {__version__}", "fingerprint": fingerprint},
        Path(run_dir) / RUN_MARKER,
    )


def is_run_dir(path: str | Path) -> bool:
    """Whether `path` is a directory (not a link to one) that carries the project's run marker."""
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and (path / RUN_MARKER).is_file()


def _refusal(path: Path) -> RefusedOverwrite:
    if path.is_symlink():
        what = "a symbolic link"
    elif path.is_dir():
        what = "a directory that perinstance did not create"
    else:
        what = "an existing file"
    return RefusedOverwrite(
        f"{path} is {what} (no {RUN_MARKER} marker); refusing to replace it: move it away or pass --force"
    )


def check_replaceable(path: str | Path, *, force: bool = False) -> None:
    """Raise RefusedOverwrite unless `path` is absent, an empty directory, a marked run, or `force`."""
    path = Path(path)
    if force or not (path.exists() or path.is_symlink()):
        return
    if path.is_dir() and not path.is_symlink() and (is_run_dir(path) or not any(path.iterdir())):
        return
    raise _refusal(path)


def remove_path(path: str | Path, *, force: bool = False) -> None:
    """Remove a run directory the project made.

    With `force`, whatever `path` is (a link, not its target).
    """
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return
    check_replaceable(path, force=force)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def publish_dir(work_dir: str | Path, final_dir: str | Path, *, force: bool = False) -> Path:
    """Atomically move a finished work directory onto `final_dir`.

    What is at `final_dir` is replaced only if it is an empty directory or a marked run
    directory, or if `force`; anything else raises RefusedOverwrite and is left untouched.
    """
    work_dir, final_dir = Path(work_dir), Path(final_dir)
    check_replaceable(final_dir, force=force)
    supervisor.check()  # a job whose Snakemake is gone publishes nothing
    if final_dir.exists() or final_dir.is_symlink():
        # Set the old result aside rather than delete it first, so that `final_dir` is missing only
        # for the instant between two renames.
        trash = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", suffix=".old", dir=final_dir.parent))
        os.replace(final_dir, trash / "old")
        os.replace(work_dir, final_dir)
        shutil.rmtree(trash)
    else:
        os.replace(work_dir, final_dir)
    return final_dir
