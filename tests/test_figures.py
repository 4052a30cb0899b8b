"""Figures are reproducible files: the same results give byte-identical PNG, PDF and CSV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perinstance.figures import plot_hard_groups, save_figure


def _steps_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [dict(method="finetune", score=score, group=group, seed=seed, steps=steps, censored=steps >= 300)
            for score, group, base in [("privacy_loss", "high", 250), ("el2n", "high", 200),
                                       ("random", "random0", 0), ("random", "random1", 50)]
            for seed, steps in enumerate([base, base + 50])]
    steps = pd.DataFrame(rows)
    summary = (steps.groupby(["score", "group", "method"], as_index=False)["steps"].mean()
               .rename(columns={"steps": "steps_mean"}))
    return steps, summary


def test_hard_groups_figure_is_byte_identical_across_runs_and_keeps_numpy_state(tmp_path):
    steps, summary = _steps_tables()
    np.random.seed(123)
    expected_draw = np.random.uniform()
    np.random.seed(123)
    first = plot_hard_groups(steps, summary, "finetune", tmp_path / "a" / "F5.png", k_max=300)
    assert np.random.uniform() == expected_draw  # the jitter seed did not leak into the caller's generator
    np.random.seed(7)  # a different global state must not change the picture
    second = plot_hard_groups(steps, summary, "finetune", tmp_path / "b" / "F5.png", k_max=300)
    assert [p.suffix for p in first] == [".png", ".pdf", ".csv"]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert len(pd.read_csv(first[2])) == 4  # two high groups and two random groups


def test_save_figure_rejects_a_non_png_path(tmp_path):
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="must end in .png"):
        save_figure(fig, pd.DataFrame(), tmp_path / "figure.pdf")
    plt.close(fig)
