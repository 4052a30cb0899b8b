from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from perinstance.groups import build_groups, class_quotas, random_groups, top_rank_bins


def table(n: int = 30, classes: int = 3) -> pd.DataFrame:
    """Score = index, so the ranking is known by hand; labels cycle through the classes."""
    index = np.arange(100, 100 + n)
    return pd.DataFrame(
        {"index": index, "label": np.arange(n) % classes, "p": index.astype(float), "flat": np.zeros(n)}
    )


def members(groups: pd.DataFrame, name: str) -> list[int]:
    return sorted(groups.loc[groups["group"] == name, "index"].tolist())


def test_low_mid_high_by_construction():
    g = build_groups(table(30), "p", size=4)
    assert set(g.columns) >= {"score", "group", "index", "rank"}
    assert (g["score"] == "p").all()
    assert members(g, "high") == [126, 127, 128, 129]
    assert members(g, "low") == [100, 101, 102, 103]
    # (30 - 4) // 2 = 13 -> ranks 13..16 = indices 129-13 ... 129-16
    assert members(g, "mid") == [113, 114, 115, 116]
    assert g.groupby("group").size().eq(4).all()
    assert sorted(g.loc[g["group"] == "high", "rank"]) == [0, 1, 2, 3]
    sets = [set(members(g, k)) for k in ("low", "mid", "high")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_low_mid_high_disjoint_at_the_limit_and_size_error():
    g = build_groups(table(12), "p", size=4)
    assert g["index"].nunique() == 12
    with pytest.raises(ValueError, match="groups.size"):
        build_groups(table(11), "p", size=4)
    with pytest.raises(ValueError, match="groups.proxy_scores"):
        build_groups(table(12), "missing", size=2)
    with pytest.raises(ValueError, match="groups.privacy_kinds"):
        build_groups(table(12), "p", size=2, kinds=["hi"])


def test_ties_broken_by_index():
    g = build_groups(table(12), "flat", size=3)
    assert members(g, "high") == [100, 101, 102]
    assert members(g, "low") == [109, 110, 111]
    shuffled = table(12).sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(build_groups(shuffled, "flat", size=3), g)


def test_class_balanced_counts():
    g = build_groups(table(60, classes=3), "p", size=10, class_balanced=True)
    for kind in ("low", "mid", "high"):
        counts = g[g["group"] == kind]["label"].value_counts().sort_index()
        assert counts.tolist() == [4, 3, 3]  # 10 = 3 * 3 + 1, remainder to the lowest label
    high = g[g["group"] == "high"]
    # within each class the highest scores: class 2 holds indices 102, 105, ..., 159
    assert sorted(high.loc[high["label"] == 2, "index"]) == [153, 156, 159]
    sets = {k: set(members(g, k)) for k in ("low", "mid", "high")}
    assert not (sets["low"] & sets["mid"] or sets["low"] & sets["high"] or sets["mid"] & sets["high"])


def test_class_quota_moves_shortfall():
    counts = pd.Series({0: 1, 1: 10, 2: 10})
    assert class_quotas(counts, 9).tolist() == [1, 4, 4]
    with pytest.raises(ValueError, match="groups.size"):
        class_quotas(counts, 22)


def test_top_rank_bins_disjoint_ordered():
    bins = top_rank_bins(1000, 50, 3, 4)
    assert bins[:3] == [(0, 50), (50, 100), (100, 150)]
    assert all(e - s == 50 for s, e in bins)
    assert all(bins[i][1] <= bins[i + 1][0] for i in range(len(bins) - 1))
    assert bins[3][0] > 150 and bins[-1] == (950, 1000)
    gaps = np.diff([s for s, _ in bins[3:]])
    assert np.all(np.diff(gaps) > 0)  # geometric: gaps grow
    assert top_rank_bins(1000, 50, 0, 3) == [(0, 50), (218, 268), (950, 1000)]
    # crowded log bins are pushed apart, not merged
    crowded = top_rank_bins(100, 10, 1, 8)
    assert len(crowded) == 9 and all(crowded[i][1] <= crowded[i + 1][0] for i in range(8))
    assert crowded[-1][1] <= 100
    with pytest.raises(ValueError, match="groups.log_bins"):
        top_rank_bins(100, 10, 5, 6)


def test_top_bins_in_groups():
    g = build_groups(table(30), "p", size=3, kinds=(), linear_bins=2, log_bins=1)
    assert list(dict.fromkeys(g["group"])) == ["top0-3", "top3-6", "top27-30"]
    assert members(g, "top3-6") == [124, 125, 126]
    assert g.groupby("group")["rank"].min().to_dict() == {"top0-3": 0, "top3-6": 3, "top27-30": 27}
    balanced = build_groups(table(60, classes=3), "p", size=6, kinds=(), linear_bins=2, class_balanced=True)
    assert balanced.groupby(["group", "label"]).size().eq(2).all()
    assert balanced["index"].nunique() == 12


def test_random_groups_seeded():
    a = random_groups(table(50), size=5, count=3, seed=7)
    assert list(dict.fromkeys(a["group"])) == ["random0", "random1", "random2"]
    assert (a["score"] == "random").all() and a.groupby("group").size().eq(5).all()
    assert a["rank"].isna().all()
    pd.testing.assert_frame_equal(a, random_groups(table(50), size=5, count=3, seed=7))
    assert members(a, "random0") != members(random_groups(table(50), size=5, count=1, seed=8), "random0")
    # more groups keep the earlier ones
    more = random_groups(table(50), size=5, count=4, seed=7)
    assert members(more, "random2") == members(a, "random2")
    balanced = random_groups(table(60, classes=3), size=9, count=2, seed=0, class_balanced=True)
    assert balanced.groupby(["group", "label"]).size().eq(3).all()


def test_scores_may_overlap():
    t = table(30)
    t["q"] = t["p"]
    both = pd.concat([build_groups(t, "p", size=4), build_groups(t, "q", size=4)])
    assert members(both[both["score"] == "p"], "high") == members(both[both["score"] == "q"], "high")
