"""Figures are reproducible files: the same results give byte-identical PNG, PDF and CSV; every axis
names its quantity and unit."""

from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest

from perinstance import figures as F
from perinstance import io
from perinstance import proxies as P
from perinstance.figures import save_figure


@pytest.fixture
def drawn(monkeypatch):
    """Records, for every figure saved, its suptitle and (xlabel, ylabel, title) of every axis."""
    seen = []
    original = F.save_figure

    def recording(fig, table, png_path):
        seen.append(
            {
                "suptitle": fig._suptitle.get_text() if fig._suptitle else "",
                "axes": [(ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) for ax in fig.axes],
                "lines": [line.get_xdata() for ax in fig.axes[:1] for line in ax.lines],
            }
        )
        return original(fig, table, png_path)

    monkeypatch.setattr(F, "save_figure", recording)
    return seen


def _same_bytes(first, second):
    assert [p.suffix for p in first] == [".png", ".pdf", ".csv"]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name


def _scores(n: int = 80, n_seeds: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    common = rng.normal(size=n)
    per_seed = [np.exp(common + 0.5 * rng.normal(size=n)) for _ in range(n_seeds)]
    table = pd.DataFrame({"index": np.arange(100, 100 + n), "label": np.arange(n) % 3})
    for s, values in enumerate(per_seed):
        table[f"privacy_loss_seed{s}"] = values
    table["privacy_loss"] = np.mean(per_seed, axis=0)
    table["el2n"] = np.clip(0.4 * (common + 2) + 0.2 * rng.normal(size=n), 0, 1.4)
    table["forgetting_events"] = np.clip(np.round(common + rng.normal(size=n)), 0, None)
    return table


def _dataset(scores: pd.DataFrame):
    import torch

    n = len(scores)
    x = torch.linspace(-1, 1, n * 36).reshape(n, 1, 6, 6)
    return types.SimpleNamespace(
        class_names=("zero", "one", "two"),
        mean=(0.5,),
        std=(0.25,),
        train=types.SimpleNamespace(index=torch.tensor(scores["index"].to_numpy()), x=x),
    )


def _worst_case(tmp_path) -> pd.DataFrame:
    """worst_case.csv as the privacy_loss rule writes it, read back as the figure rule reads it."""
    rows = [
        dict(
            seed=seed,
            order=order,
            rdp=rdp * order,
            epsilon=9.0,
            delta=1e-5,
            best_order=8.0,
            sensitivity="max observed",
        )
        for seed, rdp in ((0, 20.0), (1, 30.0))
        for order in (2.0, 8.0)
    ]
    return io.load_table(io.save_table(pd.DataFrame(rows), tmp_path / "worst_case.csv"))


def test_privacy_figure_draws_the_worst_case_from_its_table(tmp_path, drawn):
    scores = _scores()
    worst = _worst_case(tmp_path)
    first = F.plot_privacy_loss(
        scores, _dataset(scores), tmp_path / "a" / "F1.png", alpha=2.0, worst_case=worst, grid=2, title="t"
    )
    second = F.plot_privacy_loss(
        scores, _dataset(scores), tmp_path / "b" / "F1.png", alpha=2.0, worst_case=worst, grid=2, title="t"
    )
    _same_bytes(first, second)
    xlabel, ylabel, title = drawn[0]["axes"][0]
    assert xlabel == "P(x, α=2) (nats, Rényi DP, log scale)" and ylabel == "class"
    assert "worst-case" in title and "2 seeds" in title
    assert "not DP guarantees" in drawn[0]["suptitle"]
    # the vertical line sits at the seed mean of the worst case at order alpha (40 and 60 nats)
    assert any(np.allclose(x, 50.0) for x in drawn[0]["lines"])
    table = io.load_table(first[2])
    bound = table[table["row_type"] == "worst_case"]
    assert bound["seed"].tolist() == [0, 1] and bound["privacy_loss"].tolist() == [40.0, 60.0]
    assert (bound["shown_as"] == "worst case (max observed norm)").all()
    examples = table[table["row_type"] == "example"]
    assert len(examples) == len(scores) and examples["rank"].tolist() == list(range(1, len(scores) + 1))


def test_privacy_figure_refuses_a_worst_case_table_without_alpha(tmp_path):
    scores = _scores()
    worst = _worst_case(tmp_path)
    with pytest.raises(ValueError, match="no row for order α = 4"):
        F.plot_privacy_loss(
            scores, _dataset(scores), tmp_path / "F1.png", alpha=4.0, worst_case=worst, grid=2
        )
    with pytest.raises(ValueError, match="lacks columns"):
        F.plot_privacy_loss(
            scores,
            _dataset(scores),
            tmp_path / "F1.png",
            alpha=2.0,
            worst_case=worst.drop(columns="rdp"),
            grid=2,
        )


def test_proxy_figure_shows_seed_and_example_intervals(tmp_path, drawn):
    scores = _scores()
    columns = ["privacy_loss", "el2n", "forgetting_events"]
    correlations = P.correlations(
        scores, columns, n_boot=40, seed_columns=P.per_seed_columns(scores, columns)
    )
    kwargs = dict(
        class_names=("zero", "one", "two"),
        proxies=["el2n", "forgetting_events", "cscore_holdout"],
        alpha=2.0,
        title="t",
    )
    first = F.plot_proxy_correlation(scores, correlations, tmp_path / "a" / "F4.png", **kwargs)
    second = F.plot_proxy_correlation(scores, correlations, tmp_path / "b" / "F4.png", **kwargs)
    _same_bytes(first, second)
    heatmap, el2n, events = drawn[0]["axes"]  # cscore_holdout is not in the table: no panel
    assert "Spearman ρ" in heatmap[2] and "unitless" in heatmap[2]
    assert el2n[1] == "P(x, α=2) (nats, Rényi DP, log scale)"
    assert "unitless" in el2n[0] and "count" in events[0]
    for _, _, title in (el2n, events):
        assert "(seeds + examples)" in title and "(examples only)" in title and "95% CI" in title
    assert "40 resamples of 2 training seeds of P and 80 examples" in drawn[0]["suptitle"]
    table = io.load_table(first[2])
    assert {"n_seeds", "n_boot", "ci_low_examples", "ci_high_examples"} <= set(table.columns)
    assert len(table) == len(correlations)


def test_robustness_and_training_figures_name_their_axes(tmp_path, drawn):
    robustness = pd.DataFrame(
        {
            "factor": ["accounting beta", "seeds", "estimator"],
            "variant": ["beta=50", "seed 0 vs seed 1", "online"],
            "compared_with": ["reference", "seed 1", "reference"],
            "spearman": [0.99, -0.1, np.nan],
            "top_m_overlap": [0.6, 0.2, 0.4],
            "m": 50,
        }
    )
    first = F.plot_robustness(robustness, tmp_path / "a" / "F7.png", title="t")
    second = F.plot_robustness(robustness, tmp_path / "b" / "F7.png", title="t")
    _same_bytes(first, second)
    (rho_x, rho_y, _), (overlap_x, _, _) = drawn[0]["axes"]
    assert "Spearman ρ" in rho_x and "unitless" in rho_x and "P(x, α)" in rho_y
    assert "m = 50" in overlap_x and "fraction" in overlap_x
    history = pd.DataFrame(
        [
            dict(
                seed=s,
                epoch=e,
                step=10 * e,
                split=split,
                metric=metric,
                value=(2.3 / (e + 1) if metric == "loss" else e / 5),
            )
            for s in (0, 1)
            for e in range(5)
            for split in ("train", "test")
            for metric in ("loss", "accuracy")
        ]
    )
    first = F.plot_training_curves(history, tmp_path / "a" / "F0.png", title="t")
    second = F.plot_training_curves(history, tmp_path / "b" / "F0.png", title="t")
    _same_bytes(first, second)
    (loss_x, loss_y, _), (_, acc_y, _) = drawn[2]["axes"]
    assert "epoch" in loss_x and "nats" in loss_y and "log scale" in loss_y and "fraction" in acc_y
    assert "2 seeds" in drawn[2]["suptitle"]


def test_seeded_global_numpy_restores_the_callers_state():
    np.random.seed(123)
    expected = np.random.uniform()
    np.random.seed(123)
    with F._seeded_global_numpy(0):
        inside = np.random.uniform()
    assert np.random.uniform() == expected
    with F._seeded_global_numpy(0):
        assert np.random.uniform() == inside


def test_save_figure_rejects_a_non_png_path(tmp_path):
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="must end in .png"):
        save_figure(fig, pd.DataFrame(), tmp_path / "figure.pdf")
    plt.close(fig)
