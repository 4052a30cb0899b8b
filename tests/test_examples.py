"""The examples under examples/ run as a user would run them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import image

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "own_training_loop.py"
ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([0-9.eE+-]+)\s*$")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )


def test_own_training_loop_writes_the_hardest_examples(tmp_path):
    out, table_path = tmp_path / "grid" / "hardest.png", tmp_path / "p.csv"
    done = _run("--epochs", "1", "--n-train", "500", "--out", str(out), "--table", str(table_path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "epoch 1/1: train accuracy" in lines[0]
    assert "ten highest privacy losses P(x, 2) of 500 examples (beta 200)" in done.stdout
    rows = [ROW.match(line) for line in lines]
    rows = [m.groups() for m in rows if m]
    assert [int(r[0]) for r in rows] == list(range(1, 11))
    ids = [int(r[1]) for r in rows]
    printed = np.array([float(r[4]) for r in rows])
    assert len(set(ids)) == 10 and all(0 <= i < 500 for i in ids)
    assert np.all(np.diff(printed) <= 0) and np.all(printed > 0)

    # The printout is the top of the full table the tracker produced.
    table = pd.read_csv(table_path)
    assert list(table.columns) == [
        "index",
        "label",
        "privacy_loss",
        "privacy_loss_4alpha",
        "sum_sq_grad_norm",
    ]
    assert len(table) == 500 and table["privacy_loss"].notna().all()
    top = table.sort_values("privacy_loss", ascending=False).head(10)
    assert ids == top.index.tolist()
    assert [int(r[2]) for r in rows] == top["index"].tolist()
    assert [int(r[3]) for r in rows] == top["label"].tolist()
    np.testing.assert_allclose(printed, top["privacy_loss"], rtol=1e-5)
    assert (table["privacy_loss_4alpha"] > table["privacy_loss"]).all()  # RDP grows with the order

    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(out)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 500
    assert pixels[..., :3].std() > 0.1  # not a blank canvas
    assert f"wrote {out}" in done.stdout


def test_own_training_loop_rejects_bad_options(tmp_path):
    done = _run("--epochs", "0", "--out", str(tmp_path / "x.png"))
    assert done.returncode == 2
    assert "--epochs must be >= 1" in done.stderr
    assert not (tmp_path / "x.png").exists()
