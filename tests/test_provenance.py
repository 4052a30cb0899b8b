"""Provenance: every table and figure a job writes says which package version, config and seeds
produced it, deterministically; `perinstance --version`."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from conftest import REPO, snakemake_command, tiny_config  # noqa: E402
from PIL import Image  # noqa: E402

import perinstance  # noqa: E402
from perinstance import cli, io, provenance  # noqa: E402
from perinstance.config import config_digest, load_config, validate_config  # noqa: E402
from perinstance.figures import save_figure  # noqa: E402
from perinstance.provenance import Provenance  # noqa: E402


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "index": np.arange(4),
            "label": ["a", "#b", "c # d", "# e, f"],  # '#' inside fields, first and last, quoted
            "value": [0.1, np.nan, 1e-300, -2.5],
            "flag": [True, False, True, False],
        }
    )


@pytest.fixture
def record() -> Provenance:
    return Provenance.from_config(tiny_config())


def test_record_fields_come_from_the_config():
    config = tiny_config()
    config["groups"]["ranking_seed"] = config["seeds"][-1]
    record = Provenance.from_config(config)
    assert record.package == "perinstance" and record.version == perinstance.__version__
    assert record.experiment == config["experiment"] == "test"
    assert record.seeds == tuple(config["seeds"])
    assert record.unlearning_seeds == config["unlearning"]["seeds"]
    assert record.ranking_seed == config["seeds"][-1]
    assert record.config_digest == config_digest(config) and len(record.config_digest) == 16
    int(record.config_digest, 16)
    # deterministic: the same config, the same record; without a ranking seed, none recorded
    assert Provenance.from_config(validate_config(config)) == record
    assert Provenance.from_config(tiny_config()).ranking_seed is None
    assert "ranking_seed" not in Provenance.from_config(tiny_config()).fields()
    assert Provenance.from_fields(record.fields()) == record


def test_digest_is_the_workflows_run_config_name(tmp_path):
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    (tmp_path / "minimal.yaml").write_text("experiment: minimal\nseeds: [3, 5]\n")
    command, env = snakemake_command("-n", "-p", "--configfile", "minimal.yaml", cwd=tmp_path)
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    record = Provenance.from_config(validate_config({"experiment": "minimal", "seeds": [3, 5]}))
    assert f"results/minimal/configs/{record.config_digest}.yaml" in result.stdout
    # and the config a job reads back from that file (written as the Snakefile's onstart does)
    # gives the same digest
    stored = tmp_path / "stored.yaml"
    stored.write_text(
        yaml.safe_dump(validate_config({"experiment": "minimal", "seeds": [3, 5]}), sort_keys=True)
    )
    assert Provenance.from_config(load_config(stored)) == record


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_returns_the_same_frame_and_the_record(tmp_path, record, suffix):
    frame = _frame()
    plain = io.save_table(frame, tmp_path / f"plain{suffix}")
    with provenance.recording(record):
        stamped = io.save_table(frame, tmp_path / f"stamped{suffix}")
    assert provenance.current() is None  # restored after the block
    pd.testing.assert_frame_equal(io.load_table(stamped), io.load_table(plain), check_exact=True)
    pd.testing.assert_frame_equal(io.load_table(stamped), frame, check_exact=True)
    assert io.read_provenance(stamped) == record
    assert io.read_provenance(plain) is None
    # deterministic: written again, the same bytes
    with provenance.recording(record):
        again = io.save_table(frame, tmp_path / f"again{suffix}")
    assert again.read_bytes() == stamped.read_bytes()


def test_csv_header_is_readable_text_and_the_plain_table_is_unchanged(tmp_path, record):
    frame = _frame()
    plain = io.save_table(frame, tmp_path / "plain.csv")
    assert plain.read_text() == frame.to_csv(index=False)  # outside a job: as before
    with provenance.recording(record):
        stamped = io.save_table(frame, tmp_path / "stamped.csv")
    lines = stamped.read_text().splitlines()
    header = record.header_lines()
    assert lines[: len(header)] == header and lines[len(header) :] == plain.read_text().splitlines()
    assert lines[0] == "# package: perinstance"
    assert f"# config_digest: {record.config_digest}" in lines
    assert f"# seeds: {','.join(map(str, record.seeds))}" in lines
    assert "c # d" in io.load_table(stamped)["label"].tolist()


def test_a_csv_whose_first_column_starts_with_a_hash_is_not_a_header(tmp_path):
    frame = pd.DataFrame({"# count": [1, 2], "x": ["# package: perinstance", "b"]})
    path = io.save_table(frame, tmp_path / "t.csv")
    assert io.read_provenance(path) is None
    pd.testing.assert_frame_equal(io.load_table(path), frame)


def test_a_job_stamps_what_it_writes(tmp_path, record, monkeypatch):
    # jobs.run makes the config's record current for the job, and only for it
    import dataclasses

    from perinstance import jobs

    seen = []
    name = next(iter(jobs.JOBS))
    declared = dataclasses.replace(
        jobs.JOBS[name], function=lambda config, args: seen.append(provenance.current())
    )
    monkeypatch.setitem(jobs.JOBS, name, declared)
    values: dict[str, dict] = {kind: {} for kind in ("wildcards", "input", "output", "params")}
    for kind, arg, arity in declared.arguments():
        values[kind][arg] = [] if arity else "0" if kind == "wildcards" else str(tmp_path / arg)
    jobs.run(name, tiny_config(), **values)
    assert seen == [record] and provenance.current() is None


def test_figures_carry_the_record(tmp_path, record):
    def draw():
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        return fig

    with provenance.recording(record):
        written = save_figure(draw(), _frame(), tmp_path / "a" / "F.png")
        again = save_figure(draw(), _frame(), tmp_path / "b" / "F.png")
    png, pdf, csv = written
    assert io.read_provenance(csv) == record and io.read_provenance(png) == record
    with Image.open(png) as image:
        assert json.loads(image.text[provenance.METADATA_KEY])["config_digest"] == record.config_digest
    assert record.summary().encode() in pdf.read_bytes()
    for a, b in zip(written, again):
        assert a.read_bytes() == b.read_bytes(), a.name
    plain = save_figure(draw(), _frame(), tmp_path / "c" / "F.png")
    assert io.read_provenance(plain[0]) is None and io.read_provenance(plain[2]) is None


def test_summary_line(record):
    line = record.summary()
    assert line.startswith(f"perinstance {perinstance.__version__} | config {record.config_digest} | ")
    assert "experiment test" in line and f"seeds {','.join(map(str, record.seeds))}" in line


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"perinstance {perinstance.__version__}\n"
    result = subprocess.run(
        [sys.executable, "-m", "perinstance", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout == "perinstance 0.1.0\n"
