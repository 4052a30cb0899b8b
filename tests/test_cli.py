from __future__ import annotations

import pytest

from perinstance.cli import COMMANDS, build_parser, main


def test_every_command_parses_its_help():
    parser = build_parser()
    for name in [*COMMANDS, "scores"]:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([name, "--help"])
        assert exit_.value.code == 0


def test_missing_config_file_is_a_clear_error(tmp_path, capsys):
    code = main(["groups", "--config", str(tmp_path / "nope.yaml"), "--scores", "s.parquet", "--out", "g.csv"])
    assert code == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err


def test_bad_config_key_is_reported_with_its_name(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("experiment: x\ntraining: {epocks: 3}\n")
    assert main(["groups", "--config", str(config), "--scores", "s.parquet", "--out", "g.csv"]) == 2
    assert "training.epocks" in capsys.readouterr().err


def test_run_directories_must_be_named_by_seed(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("experiment: x\n")
    code = main(["figure-training", "--config", str(config), "--runs", str(tmp_path / "run0"), "--out", "f.png"])
    assert code == 2
    err = capsys.readouterr().err
    assert "run0 must be named seed<N>" in err and len(err.strip().splitlines()) == 1
