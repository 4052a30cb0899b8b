"""F2/F3, F5 and F8 from hand-built tables.

Drawn, byte-reproducible, censoring visible in the source tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perinstance.difficulty import kaplan_meier
from perinstance.steps import theory_fit
from perinstance.unlearning_figures import group_gap_table, plot_difficulty, plot_hard_groups, plot_steps

GROUPS = [
    ("privacy_loss", "low", 0.01),
    ("privacy_loss", "top2", 5.0),
    ("privacy_loss", "top1", 20.0),
    ("privacy_loss", "high", 100.0),
    ("el2n", "high", 30.0),
    ("random", "random0", 0.05),
]


def _tables(k_max=300):
    rng = np.random.default_rng(0)
    runs, examples, curves = [], [], []
    for score, group, p in GROUPS:
        for seed in (0, 1):
            inside = p < 1
            steps = 0 if inside else min(k_max, int(60 * np.log(p) + 100 + 20 * seed))
            runs.append(
                {
                    "method": "finetune",
                    "score": score,
                    "group": group,
                    "seed": seed,
                    "steps": steps,
                    "censored": steps >= k_max,
                    "inside_at_step0": inside,
                    "privacy_loss_4alpha": p,
                }
            )
            for i in range(10):
                needed = not inside and i > 1
                examples.append(
                    {
                        "method": "finetune",
                        "score": score,
                        "group": group,
                        "seed": seed,
                        "index": i,
                        "inside_at_step0": not needed,
                        "gap_step0": 1.0 if needed else 0.01,
                        "steps": min(k_max, int(steps * rng.uniform(0.5, 1.5))),
                        "censored": False,
                        "remaining_gap_300": (np.log(p) / 5 + rng.normal(0, 0.1)) if needed else np.nan,
                        "privacy_loss_4alpha": p * rng.uniform(0.5, 2),
                    }
                )
            for step in range(0, k_max + 1, 50):
                curves.append(
                    {
                        "method": "finetune",
                        "score": score,
                        "group": group,
                        "seed": seed,
                        "step": step,
                        "forget_loss": 2.0 * np.exp(-step / (steps + 1)),
                        "band_center": 0.5,
                        "band_half_width": 0.1,
                    }
                )
    examples = pd.DataFrame(examples)
    examples["censored"] = examples["steps"] >= k_max
    survival = []
    for (score, group), part in examples[~examples["inside_at_step0"]].groupby(["score", "group"]):
        survival.append(
            kaplan_meier(part["steps"].to_numpy(), part["censored"].to_numpy()).assign(
                method="finetune", score=score, group=group, n_examples=len(part)
            )
        )
    return pd.DataFrame(runs), examples, pd.concat(survival, ignore_index=True), pd.DataFrame(curves)


def test_steps_figure_fits_only_groups_that_needed_unlearning(tmp_path):
    runs, examples, _, curves = _tables()
    fit = theory_fit(runs, "finetune")
    assert "low" in fit["groups_excluded"] and "low" not in fit["groups_used"]
    written = plot_steps(
        runs,
        examples,
        curves,
        ["finetune"],
        {"finetune": fit},
        tmp_path / "F3.png",
        k_max=300,
        metric="remaining_gap_300",
    )
    table = pd.read_csv(written[2])
    assert set(table["group"]) == {"low", "top2", "top1", "high"}
    assert table.set_index("group").loc["low", "n_needed"] == 0  # inside at step 0: no gap statistic


def test_hard_groups_figure_is_byte_identical_and_tabulates_every_chosen_group(tmp_path):
    runs, examples, survival, _ = _tables()
    first = plot_hard_groups(
        runs, examples, survival, "finetune", tmp_path / "a" / "F5.png", k_max=300, metric="remaining_gap_300"
    )
    second = plot_hard_groups(
        runs, examples, survival, "finetune", tmp_path / "b" / "F5.png", k_max=300, metric="remaining_gap_300"
    )
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
    table = pd.read_csv(first[2])
    assert set(zip(table["score"], table["group"])) == {
        ("privacy_loss", "high"),
        ("el2n", "high"),
        ("random", "random0"),
    }
    measured = table.dropna(subset=["mean"])  # random0 sat inside its band: nothing to measure
    assert (
        len(measured) == 2
        and (measured["low"] <= measured["mean"]).all()
        and (measured["mean"] <= measured["high"]).all()
    )


def test_group_gap_table_counts_examples_inside_at_step0():
    _, examples, _, _ = _tables()
    table = group_gap_table(examples, "remaining_gap_300").set_index(["score", "group"])
    assert table.loc[("privacy_loss", "high"), "n_needed"] == 16
    assert table.loc[("privacy_loss", "high"), "n_inside_at_step0"] == 4


def test_difficulty_figure_needs_correlations(tmp_path):
    with pytest.raises(ValueError, match="no per-example correlations"):
        plot_difficulty(pd.DataFrame(), tmp_path / "F8.png")


def test_difficulty_figure_draws_every_score(tmp_path):
    rows = []
    for method in ("finetune", "sgld"):
        for j, score in enumerate(["privacy_loss_4alpha", "el2n", "forgetting_events"]):
            row = {
                "method": method,
                "difficulty": "mean_gap_300",
                "score": score,
                "reference": "privacy_loss_4alpha",
                "rho": 0.5 - 0.1 * j,
                "rho_low": 0.4 - 0.1 * j,
                "rho_high": 0.6 - 0.1 * j,
                "n_units": 100,
                "n_seeds": 2,
            }
            if j:
                row.update(
                    rho_minus_reference=0.1 * j,
                    difference_low=0.1 * j - 0.15,
                    difference_high=0.1 * j + 0.05,
                    verdict="not resolved at this scale",
                )
            rows.append(row)
    written = plot_difficulty(pd.DataFrame(rows), tmp_path / "F8.png")
    assert len(pd.read_csv(written[2])) == 6
