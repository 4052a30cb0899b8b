"""Forget groups of size m chosen from a per-example score (higher score = more private / harder).

Every group is defined on ONE total order of the training set: score descending, ties broken by the
dataset index ascending, so `rank` 0 is the highest score and the same table always gives the same
groups. Group names:

- `low`, `mid`, `high`: the bottom m ranks, the m ranks around the median rank, the top m ranks.
  With 3m <= n they are disjoint by construction.
- `top{start}-{end}`: rank bins counted from the top (see `top_rank_bins`). Only the top few percent
  of a privacy-loss ranking differ from the original model enough to need unlearning, so bins there
  show a gradient where low/mid/high show "0 versus many".
- `random{j}` (score `random`, from `random_groups`): uniformly random groups, the baseline.

With `class_balanced`, every group takes a per-class quota (m // C each, the remainder to the lowest
labels, shortfalls of small classes moved to the others) and applies its rule within each class's
own ranking; `rank` stays the global rank.

The tidy output has one row per (score, group, member): `score`, `group`, `index`, `label`, `rank`.
Groups built from different scores may share members. `forget_groups` builds every group an
experiment asks for (perinstance.plan); `forget_rows` reads one back from groups.csv.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import io
from .plan import PRIVACY_SCORE, RANDOM_SCORE, comparison_groups, privacy_groups

KINDS = ("low", "mid", "high")
COLUMNS = ["score", "group", "index", "label", "rank"]


def top_rank_bins(
    n: int, size: int, linear_bins: int, log_bins: int, end: int | None = None
) -> list[tuple[int, int]]:
    """Disjoint rank ranges [start, end) of width `size`, ordered from the top of the ranking.

    `linear_bins` consecutive bins [0, m), [m, 2m), ... then `log_bins` bins whose starts are spaced
    geometrically from the end of the linear bins out to `end` - m (default `end` = n: the last one is
    the bottom m; `end` = (n - m) // 2 stops just above the `mid` group). With no linear bins the first
    log bin is [0, m). Rounding collisions are pushed apart, never merged.
    """
    m = int(size)
    if m <= 0:
        raise ValueError(f"group size must be positive (config key groups.size), got {size}")
    if linear_bins < 0 or log_bins < 0:
        raise ValueError("bin counts must be >= 0 (config keys groups.linear_bins, groups.log_bins)")
    if (linear_bins + log_bins) * m > n:
        raise ValueError(
            f"{linear_bins} linear + {log_bins} log bins of size {m} do not fit in {n} examples "
            "(config keys groups.linear_bins, groups.log_bins, groups.size)"
        )
    end = n if end is None else int(end)
    if not (linear_bins + log_bins) * m <= end <= n:
        raise ValueError(
            f"{linear_bins} linear + {log_bins} log bins of size {m} do not fit above rank {end} "
            "(config keys groups.linear_bins, groups.log_bins, groups.log_bins_to)"
        )
    starts = [i * m for i in range(linear_bins)]
    if log_bins:
        linear_end = linear_bins * m
        anchor = max(linear_end, m)
        if linear_end > 0:
            # the anchor itself is taken by the linear bins: log bins start strictly further out
            points = np.geomspace(anchor, max(end - m, anchor), log_bins + 1)[1:]
        else:
            points = np.geomspace(anchor, max(end - m, anchor), log_bins)
            points[0] = 0.0
        starts += _separate(np.rint(points).astype(np.int64), m, linear_end, end).tolist()
    return [(s, s + m) for s in starts]


def _separate(starts: np.ndarray, width: int, lo: int, hi: int) -> np.ndarray:
    """Shift sorted starts so that bins [s, s + width) are disjoint and inside [lo, hi)."""
    out = starts.astype(np.int64).copy()
    for i in range(len(out)):
        out[i] = max(out[i], lo if i == 0 else out[i - 1] + width)
    for i in reversed(range(len(out))):
        out[i] = min(out[i], hi - width if i == len(out) - 1 else out[i + 1] - width)
    if len(out) and out[0] < lo:
        raise ValueError(f"{len(out)} bins of width {width} do not fit in [{lo}, {hi})")
    return out


def _ranking(table: pd.DataFrame, score: str) -> pd.DataFrame:
    """The table sorted by score descending, ties by index ascending, with its global `rank`."""
    for column in ("index", "label", score):
        if column not in table.columns:
            raise ValueError(
                f"score table has no column {column!r} (config key groups.proxy_scores names "
                f"the scores besides {PRIVACY_SCORE}; available: {sorted(table.columns)})"
            )
    values = table[score].to_numpy(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"score {score!r} has non-finite values; rank only finite scores")
    if table["index"].duplicated().any():
        raise ValueError("score table has duplicate example indices")
    order = np.lexsort((table["index"].to_numpy(), -values))
    ranked = table.iloc[order][["index", "label"]].reset_index(drop=True)
    ranked["rank"] = np.arange(len(ranked), dtype=np.int64)
    return ranked


def class_quotas(counts: pd.Series, size: int, capacity: pd.Series | None = None) -> pd.Series:
    """Per-class group sizes summing to `size`: size // C each, the remainder to the lowest labels.

    A class with fewer than its share available (`capacity`, default its count) gives its shortfall to
    the other classes, again lowest labels first, so the result is deterministic.
    """
    counts = counts.sort_index()
    capacity = counts if capacity is None else capacity.reindex(counts.index).fillna(0).astype(np.int64)
    if int(capacity.sum()) < size:
        raise ValueError(
            f"class-balanced groups of size {size} need more examples per class than available "
            "(config keys groups.size, groups.class_balanced)"
        )
    quota = pd.Series(0, index=counts.index, dtype=np.int64)
    left = size
    while left > 0:
        open_classes = [c for c in quota.index if quota[c] < capacity[c]]
        share, extra = divmod(left, len(open_classes))
        for i, c in enumerate(open_classes):
            add = min(share + (1 if i < extra else 0), capacity[c] - quota[c])
            quota[c] += add
            left -= add
    return quota


def _rank_slices(
    ranked: pd.DataFrame, size: int, kinds: Sequence[str], bins: list[tuple[int, int]], class_balanced: bool
) -> dict[str, np.ndarray]:
    """Row positions in `ranked` of every rank-defined group."""
    n = len(ranked)
    out: dict[str, np.ndarray] = {}
    if not class_balanced:
        spans = {"high": 0, "mid": (n - size) // 2, "low": n - size}
        for kind in kinds:
            out[kind] = np.arange(spans[kind], spans[kind] + size)
        for start, end in bins:
            out[f"top{start}-{end}"] = np.arange(start, end)
        return out
    members = {c: np.flatnonzero(ranked["label"].to_numpy() == c) for c in np.unique(ranked["label"])}
    counts = pd.Series({c: len(v) for c, v in members.items()})
    # low/mid/high must stay disjoint inside every class, so a class offers at most a third of itself
    quota = class_quotas(counts, size, counts // 3 if kinds else counts)
    names = list(kinds) + [f"top{s}-{e}" for s, e in bins]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for c, rows in members.items():
        q, n_c = int(quota[c]), len(rows)
        if len(bins) * q > n_c:
            raise ValueError(
                f"class {c} has {n_c} examples, too few for {len(bins)} class-balanced bins of {q} "
                "(config keys groups.linear_bins, groups.log_bins, groups.class_balanced)"
            )
        spans = {"high": 0, "mid": (n_c - q) // 2, "low": n_c - q}
        for kind in kinds:
            parts[kind].append(rows[spans[kind] : spans[kind] + q])
        # a global bin maps to the same quantile of each class's own ranking
        starts = (
            _separate(np.array([s * n_c // n for s, _ in bins], dtype=np.int64), q, 0, n_c) if bins else []
        )
        for (s, e), start in zip(bins, starts):
            parts[f"top{s}-{e}"].append(rows[start : start + q])
    return {name: np.sort(np.concatenate(p)) for name, p in parts.items()}


def _tidy(ranked: pd.DataFrame, score: str, slices: dict[str, np.ndarray]) -> pd.DataFrame:
    frames = [ranked.iloc[rows].assign(score=score, group=name) for name, rows in slices.items()]
    if not frames:
        return pd.DataFrame(
            {c: pd.Series(dtype=object if c in ("score", "group") else np.int64) for c in COLUMNS}
        )
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def build_groups(
    table: pd.DataFrame,
    score: str,
    *,
    size: int,
    kinds: Sequence[str] = KINDS,
    linear_bins: int = 0,
    log_bins: int = 0,
    log_bins_to: str = "bottom",
    class_balanced: bool = False,
) -> pd.DataFrame:
    """Forget groups of `size` examples chosen by `score` (see the module docstring for the names),
    each a deterministic function of the ranking."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(
            f"unknown group kinds {sorted(unknown)} (config key groups.privacy_kinds; allowed {list(KINDS)})"
        )
    kinds = [k for k in KINDS if k in kinds]
    if size <= 0:
        raise ValueError(f"group size must be positive (config key groups.size), got {size}")
    ranked = _ranking(table, score)
    n = len(ranked)
    if kinds and 3 * size > n:
        raise ValueError(
            f"low/mid/high groups of size {size} need at least {3 * size} examples, the table has {n} "
            "(config key groups.size)"
        )
    if log_bins_to not in ("bottom", "median"):
        raise ValueError(
            f"unknown log_bins_to {log_bins_to!r} (config key groups.log_bins_to): bottom, median"
        )
    bins = top_rank_bins(
        n, size, linear_bins, log_bins, end=n if log_bins_to == "bottom" else (n - size) // 2
    )
    return _tidy(ranked, score, _rank_slices(ranked, size, kinds, bins, class_balanced))


def random_groups(
    table: pd.DataFrame, *, size: int, count: int, seed: int, class_balanced: bool = False
) -> pd.DataFrame:
    """`count` uniformly random groups `random0`, `random1`, ... (score `random`, `rank` missing).

    Each group is its own draw without replacement from one seeded stream per group, so groups may
    overlap one another and raising `count` keeps the earlier groups.
    """
    if size <= 0 or count < 0:
        raise ValueError(
            f"need size > 0 and count >= 0 (config keys groups.size, groups.random_groups), "
            f"got size={size}, count={count}"
        )
    for column in ("index", "label"):
        if column not in table.columns:
            raise ValueError(f"score table has no column {column!r}")
    base = table.sort_values("index", kind="stable")[["index", "label"]].reset_index(drop=True)
    if size > len(base):
        raise ValueError(
            f"random groups of size {size} exceed the {len(base)} examples (config key groups.size)"
        )
    labels = base["label"].to_numpy()
    if class_balanced:
        members = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
        quota = class_quotas(pd.Series({c: len(v) for c, v in members.items()}), size)
    else:
        members, quota = {-1: np.arange(len(base))}, {-1: size}
    frames = []
    for j in range(count):
        rng = np.random.default_rng([seed, j])
        rows = np.sort(
            np.concatenate([rng.choice(v, size=int(quota[c]), replace=False) for c, v in members.items()])
        )
        frames.append(base.iloc[rows].assign(score=RANDOM_SCORE, group=f"random{j}"))
    out = pd.concat(frames, ignore_index=True) if frames else base.iloc[:0].assign(score="", group="")
    out["rank"] = pd.array([pd.NA] * len(out), dtype="Int64")
    return out[COLUMNS]


# --------------------------------------------------------------------------- the experiment's groups


def forget_groups(config: dict[str, Any], scores: pd.DataFrame) -> pd.DataFrame:
    """Every forget group the config asks for (perinstance.plan), tidy: score, group, ranks, index, label,
    rank.

    Rank bins are named top1, top2, ... in the workflow; `ranks` keeps the rank range they cover.
    """
    spec = config["groups"]
    common = dict(size=spec["size"], class_balanced=spec["class_balanced"])
    missing = [
        g.score
        for g in privacy_groups(config) + comparison_groups(config)
        if g.score != RANDOM_SCORE and g.score not in scores
    ]
    if missing:
        raise ValueError(
            f"scores table has no column for groups by {sorted(set(missing))} "
            "(config key groups.proxy_scores; is the proxy enabled?)"
        )
    # rank bins continue below the `high` group instead of repeating it as their first bin
    skip_top = "high" in spec["privacy_kinds"] and spec["linear_bins"] + spec["log_bins"] > 0
    ranked = scores
    if spec["ranking_seed"] is not None:  # one original model's own ranking, for runs that start from it
        ranked = scores.assign(**{PRIVACY_SCORE: scores[f"{PRIVACY_SCORE}_seed{spec['ranking_seed']}"]})
    privacy = build_groups(
        ranked,
        PRIVACY_SCORE,
        kinds=spec["privacy_kinds"],
        linear_bins=spec["linear_bins"] + skip_top,
        log_bins=spec["log_bins"],
        log_bins_to=spec["log_bins_to"],
        **common,
    )
    if skip_top:
        privacy = privacy[privacy["group"] != f"top0-{spec['size']}"]
    bins = [name for name in dict.fromkeys(privacy["group"]) if name.startswith("top")]
    privacy["ranks"] = privacy["group"]
    privacy["group"] = privacy["group"].replace({name: f"top{i + 1}" for i, name in enumerate(bins)})
    frames = [privacy]
    for group in comparison_groups(config):
        if group.score == RANDOM_SCORE:
            continue
        # a holdout C-score is undefined for the few examples no holdout model left out
        high = build_groups(scores.dropna(subset=[group.score]), group.score, kinds=["high"], **common)
        frames.append(high.assign(ranks="high"))
    if spec["random_groups"]:
        frames.append(
            random_groups(
                scores,
                size=spec["size"],
                count=spec["random_groups"],
                seed=spec["seed"],
                class_balanced=spec["class_balanced"],
            ).assign(ranks="random")
        )
    table = pd.concat(frames, ignore_index=True)
    return table[["score", "group", "ranks", "index", "label", "rank"]]


# --------------------------------------------------------------------------- reading groups.csv


def forget_rows(dataset, groups_csv: str | Path, score: str, group: str) -> np.ndarray:
    """Sorted rows of the dataset's training split that form one forget group of groups.csv."""
    table = io.load_table(groups_csv)
    missing = [c for c in ("score", "group", "index") if c not in table]
    if missing:
        raise ValueError(f"{groups_csv}: not a groups table (no columns {missing})")
    try:
        members = group_members(table, score, group)
        return np.sort(rows_of(dataset.train.index.numpy(), members))
    except ValueError as err:
        raise ValueError(f"{groups_csv}: {err}") from None


def group_members(groups_table: pd.DataFrame, score: str, group: str) -> np.ndarray:
    """Dataset indices of one forget group."""
    members = groups_table[(groups_table["score"] == score) & (groups_table["group"] == group)]["index"]
    if members.empty:
        raise ValueError(f"no forget group {score}/{group} in the groups table")
    return members.to_numpy(np.int64)


def rows_of(dataset_index: np.ndarray, members: np.ndarray) -> np.ndarray:
    """Rows of the training split holding the given dataset indices."""
    position = {int(i): row for row, i in enumerate(np.asarray(dataset_index).tolist())}
    missing = [int(i) for i in members if int(i) not in position]
    if missing:
        raise ValueError(f"forget group members {missing[:5]} are not in the training split")
    return np.array([position[int(i)] for i in members], dtype=np.int64)
