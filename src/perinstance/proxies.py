"""Difficulty proxies the privacy loss is compared with, and their rank correlations.

Every score named `*_hardness`, and every proxy column of the scores table, is aligned so that
higher = harder; raw quantities (cumulative accuracy, C-scores) point the other way and are
flipped only by the `*_hardness` helpers, so each sign flip happens in exactly one place:

    el2n                mean over seeds of ||softmax(f(x)) - onehot(y)||_2 at the early epoch
    forgetting_events   mean over seeds of correct->incorrect transitions between consecutive
                        presentations; never-learned examples get that seed's max + 1
    learning_speed      1 - mean over seeds of the fraction of x's presentations classified correctly
    cscore_holdout      1 - mean softmax probability of y over holdout models that did not train on x
    cscore_published    1 - published CIFAR-10 C-score (Jiang et al. 2021)

Inputs come from `dynamics.npz` of a training run (see training.py): per-presentation records
(`presentation_step`, `presentation_example`, `presentation_correct`) and `early_logits`.
Everything here is numpy/pandas; per-example loops are avoided because a CIFAR run holds
~10M presentation records.
"""

from __future__ import annotations

import itertools
import math
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

PUBLISHED_CSCORES_FILE = "cifar10-cscores-orig-order.npz"

# Mixed into the holdout seed so holdout subsets never coincide with a stream another module
# draws from the same user seed.
_HOLDOUT_STREAM = 0x686F6C64

# Upper bound on the elements of one [resamples, n] block in the Spearman bootstrap; keeps
# peak memory near 100 MB at n = 50,000.
_BOOT_BLOCK_ELEMENTS = 2_000_000


# --------------------------------------------------------------------------- EL2N


def el2n(early_logits: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """Mean over seeds of ||softmax(logits) - onehot(y)||_2, float64 [n].

    `early_logits` holds one [n, C] array per seed (a single 2-D array counts as one seed).
    """
    labels = np.asarray(labels)
    if isinstance(early_logits, np.ndarray) and early_logits.ndim == 2:
        early_logits = [early_logits]
    if len(early_logits) == 0:
        raise ValueError("el2n needs the early logits of at least one seed")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    total = np.zeros(len(labels), dtype=np.float64)
    rows = np.arange(len(labels))
    for seed_no, logits in enumerate(early_logits):
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[0] != len(labels):
            raise ValueError(
                f"early logits of seed {seed_no} have shape {z.shape}; expected ({len(labels)}, C)"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= z.shape[1]):
            raise ValueError(f"labels outside 0..{z.shape[1] - 1} for {z.shape[1]} classes")
        if not np.isfinite(z).all():
            raise ValueError(f"early logits of seed {seed_no} contain non-finite values (diverged run?)")
        # Subtracting the row max keeps exp() from overflowing without changing the softmax.
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[rows, labels] -= 1.0
        total += np.sqrt(np.einsum("ij,ij->i", p, p))
    return total / len(early_logits)


# --------------------------------------------------------------------------- training dynamics


def _presentations(step, example, correct, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    step, example, correct = np.asarray(step), np.asarray(example), np.asarray(correct)
    if not (step.ndim == example.ndim == correct.ndim == 1) or not (
        len(step) == len(example) == len(correct)
    ):
        raise ValueError(
            f"presentation arrays must be 1-D of equal length, got shapes "
            f"{step.shape}, {example.shape}, {correct.shape}"
        )
    if not np.issubdtype(example.dtype, np.integer):
        raise ValueError(f"presentation examples must be integers, got {example.dtype}")
    if example.size and (example.min() < 0 or example.max() >= n):
        raise ValueError(
            f"presentation examples must lie in 0..{n - 1}, found {example.min()}..{example.max()}"
        )
    if correct.dtype != bool:
        if not np.isin(correct, (0, 1)).all():
            raise ValueError("presentation correctness must be boolean (or 0/1)")
        correct = correct.astype(bool)
    return step, example, correct


def forgetting_events(step, example, correct, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(events int64 [n], never_learned bool [n]) from per-presentation correctness.

    events counts correct->incorrect transitions between consecutive presentations of the same
    example, ordered by step (Toneva et al. 2019). never_learned marks examples with no correct
    presentation, which includes examples never presented (possible under Poisson sampling).
    """
    step, example, correct = _presentations(step, example, correct, n)
    if step.size and np.all(step[1:] >= step[:-1]):
        # Records arrive in step order, so a stable sort on the example alone keeps each
        # example's presentations chronological and is much cheaper than a two-key sort.
        order = np.argsort(example, kind="stable")
    else:
        order = np.lexsort((step, example))
    e, c = example[order], correct[order]
    forgot = (e[1:] == e[:-1]) & c[:-1] & ~c[1:]
    events = np.bincount(e[1:][forgot], minlength=n).astype(np.int64)
    never_learned = np.bincount(example[correct], minlength=n) == 0
    return events, never_learned


def forgetting_hardness(
    events_per_seed: Sequence[np.ndarray], never_learned_per_seed: Sequence[np.ndarray]
) -> np.ndarray:
    """Forgetting events as a hardness, float64 [n]: mean over seeds.

    A never-learned example has zero events, which would rank it with the easiest; per seed it
    gets (max events over that seed's examples) + 1 instead, so it ranks hardest in every seed.
    """
    if len(events_per_seed) == 0 or len(events_per_seed) != len(never_learned_per_seed):
        raise ValueError(
            f"need one never-learned mask per events array and at least one seed, got "
            f"{len(events_per_seed)} events and {len(never_learned_per_seed)} masks"
        )
    encoded = []
    for seed_no, (events, never) in enumerate(zip(events_per_seed, never_learned_per_seed)):
        events = np.asarray(events, dtype=np.float64)
        never = np.asarray(never, dtype=bool)
        if events.ndim != 1 or events.shape != never.shape:
            raise ValueError(
                f"seed {seed_no}: events {events.shape} and never_learned {never.shape} "
                "must be 1-D of equal length"
            )
        if encoded and events.shape != encoded[0].shape:
            raise ValueError(f"seed {seed_no} has {len(events)} examples, seed 0 has {len(encoded[0])}")
        top = events.max() if events.size else 0.0
        encoded.append(np.where(never, top + 1.0, events))
    return np.mean(encoded, axis=0)


def learning_speed(step, example, correct, n: int) -> np.ndarray:
    """Cumulative training accuracy, float64 [n]: fraction of x's presentations that were correct.

    The cheap C-score proxy of Jiang et al. (2021). NaN for examples never presented.
    """
    _, example, correct = _presentations(step, example, correct, n)
    seen = np.bincount(example, minlength=n)
    hits = np.bincount(example[correct], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen > 0, hits / np.maximum(seen, 1), np.nan)


def learning_speed_hardness(per_seed: Sequence[np.ndarray]) -> np.ndarray:
    """1 - mean over seeds of the cumulative accuracy; seeds that never presented x are skipped."""
    stacked = _stack_seeds(per_seed, "learning speed")
    present = ~np.isnan(stacked)
    count = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.where(present, stacked, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
    return 1.0 - mean


def _stack_seeds(per_seed: Sequence[np.ndarray], what: str) -> np.ndarray:
    if len(per_seed) == 0:
        raise ValueError(f"{what} needs at least one seed")
    arrays = [np.asarray(a, dtype=np.float64) for a in per_seed]
    if any(a.ndim != 1 or a.shape != arrays[0].shape for a in arrays):
        raise ValueError(
            f"{what}: every seed must give a 1-D array of the same length, got {[a.shape for a in arrays]}"
        )
    return np.stack(arrays)


# --------------------------------------------------------------------------- C-scores


def holdout_mask(n: int, fraction: float, model_id: int, seed: int = 0) -> np.ndarray:
    """bool [n]: the round(fraction * n) examples holdout model `model_id` trains on.

    Deterministic in (seed, model_id) and independent across model ids, so any one model's
    subset can be rebuilt without the others.
    """
    if n < 0 or model_id < 0 or seed < 0:
        raise ValueError(f"n, model_id and seed must be non-negative, got {n}, {model_id}, {seed}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"holdout fraction must lie in [0, 1], got {fraction}")
    rng = np.random.default_rng([_HOLDOUT_STREAM, int(seed), int(model_id)])
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=int(round(fraction * n)), replace=False)] = True
    return mask


def cscore_holdout(prob_true: np.ndarray, trained_on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C float64 [n], count int64 [n]) from M holdout models.

    C(x) = mean over the models that did NOT train on x of their softmax probability of x's label;
    NaN where no model held x out. count = how many models held x out, so callers can see how
    noisy each estimate is.
    """
    prob = np.asarray(prob_true, dtype=np.float64)
    trained_on = np.asarray(trained_on)
    if prob.ndim != 2 or prob.shape != trained_on.shape:
        raise ValueError(f"prob_true {prob.shape} and trained_on {trained_on.shape} must both be [M, n]")
    if trained_on.dtype != bool:
        if not np.isin(trained_on, (0, 1)).all():
            raise ValueError("trained_on must be boolean (or 0/1)")
        trained_on = trained_on.astype(bool)
    held = ~trained_on
    used = prob[held]
    if not (np.isfinite(used).all() and (used >= 0).all() and (used <= 1).all()):
        raise ValueError("held-out probabilities must be finite and in [0, 1]")
    count = held.sum(axis=0).astype(np.int64)
    total = np.where(held, prob, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return c, count


def load_published_cscores(
    path: str | Path, labels: np.ndarray, index: np.ndarray | None = None
) -> np.ndarray:
    """Published CIFAR-10 C-scores (Jiang et al. 2021), float64, validated against the dataset.

    `labels` are the labels of the full CIFAR-10 train set in torchvision order (the file's
    order); `index` (optional) selects the dataset indices of the training rows actually used.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"published C-scores not found at {path}: download {PUBLISHED_CSCORES_FILE} (Jiang et al. 2021, "
            f"https://pluskid.github.io/structural-regularity/) and put it under resources/"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except ValueError as err:  # numpy refuses anything that is neither .npy nor .npz without pickle
        raise ValueError(
            f"{path} is not a plain .npz: numpy would have to unpickle it, which is refused for "
            f"safety; expected numeric arrays 'labels' and 'scores' ({err})"
        ) from err
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path} is not a readable .npz archive ({err})") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single array, not an .npz archive with keys 'labels' and 'scores'")
    with archive:
        arrays = {}
        for key in ("labels", "scores"):
            if key not in archive.files:
                raise ValueError(f"{path} has no key {key!r} (keys: {sorted(archive.files)})")
            try:
                arrays[key] = archive[key]
            except ValueError as err:
                raise ValueError(
                    f"{path}: array {key!r} is an object array, which needs pickle and is "
                    f"refused; expected numeric data ({err})"
                ) from err
    file_labels, scores = arrays["labels"], arrays["scores"]
    for key, arr in arrays.items():
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"{path}: {key!r} must be numeric, got dtype {arr.dtype}")
        if arr.ndim != 1:
            raise ValueError(f"{path}: {key!r} must be 1-D, got shape {arr.shape}")
    if file_labels.shape != scores.shape:
        raise ValueError(f"{path}: 'labels' {file_labels.shape} and 'scores' {scores.shape} differ in shape")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(scores):
        raise ValueError(
            f"{path} holds {len(scores)} scores but the dataset's train set has {labels.shape} "
            "labels; pass the labels of the full CIFAR-10 train set in torchvision order"
        )
    differ = int(np.count_nonzero(file_labels != labels))
    if differ:
        raise ValueError(
            f"{path}: {differ} of {len(labels)} labels differ from the dataset's; the file must be "
            "in torchvision train order for this dataset"
        )
    scores = scores.astype(np.float64)
    bad = ~np.isfinite(scores) | (scores < 0) | (scores > 1)
    if bad.any():
        raise ValueError(
            f"{path}: {int(bad.sum())} scores are non-finite or outside [0, 1] "
            f"(range {np.nanmin(scores):.4g}..{np.nanmax(scores):.4g})"
        )
    if index is None:
        return scores
    index = np.asarray(index)
    if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(
            f"index must be a 1-D integer array of dataset indices, got shape {index.shape} "
            f"dtype {index.dtype}"
        )
    if index.size and (index.min() < 0 or index.max() >= len(scores)):
        raise ValueError(f"index must lie in 0..{len(scores) - 1}, found {index.min()}..{index.max()}")
    return scores[index]


def cscore_hardness(c: np.ndarray) -> np.ndarray:
    """1 - C: a low consistency score means an atypical, hard example."""
    return 1.0 - np.asarray(c, dtype=np.float64)


# --------------------------------------------------------------------------- correlations


def _tie_structure(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sort order, start of each tie group in sorted order, tie group of each original row)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new = np.empty(len(xs), dtype=bool)
    new[:1] = True
    new[1:] = xs[1:] != xs[:-1]
    group = np.empty(len(xs), dtype=np.intp)
    group[order] = np.cumsum(new) - 1
    return order, np.flatnonzero(new), group


def _weighted_midranks(w: np.ndarray, ties: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Average ranks, in the original row order, of a sample holding w[b, i] copies of row i.

    This equals ranking the resampled values themselves but costs O(n) per resample instead of a
    sort, because the order of the original values fixes the order of every resample.
    """
    order, starts, group = ties
    counts = np.add.reduceat(np.take(w, order, axis=1), starts, axis=1).astype(np.float64)
    mid = np.cumsum(counts, axis=1) - (counts - 1.0) / 2.0
    return np.take(mid, group, axis=1)


def _example_weight_blocks(n: int, n_boot: int, rng: np.random.Generator):
    """Yield (first resample, w) blocks.

    w[b, i] = copies of row i in that resample (rows drawn with replacement).
    The one source of example resamples: the example-only and the seed-and-example bootstraps
    draw the same rows from the same generator, so their replicates differ only by the seeds.
    """
    block = max(1, _BOOT_BLOCK_ELEMENTS // n)
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield start, np.bincount(draws.ravel(), minlength=b * n).reshape(b, n)


def _weighted_spearman(w: np.ndarray, tx, ty) -> np.ndarray:
    """Spearman rho of each resample w[b] (copies per row), NaN where a resample is constant."""
    centre = (w.shape[1] + 1) / 2.0  # mean midrank of any n-row sample
    dx = _weighted_midranks(w, tx) - centre
    dy = _weighted_midranks(w, ty) - centre
    cov = np.einsum("bi,bi,bi->b", w, dx, dy)
    var = np.einsum("bi,bi,bi->b", w, dx, dx) * np.einsum("bi,bi,bi->b", w, dy, dy)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.sqrt(var), np.nan)


def _spearman_bootstrap(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Spearman rho of n_boot resamples (rows drawn with replacement), NaN where a resample is constant."""
    tx, ty = _tie_structure(x), _tie_structure(y)
    out = np.empty(n_boot, dtype=np.float64)
    for start, w in _example_weight_blocks(len(x), n_boot, rng):
        out[start : start + len(w)] = _weighted_spearman(w, tx, ty)
    return out


def _seed_mean(per_seed: np.ndarray, draw: np.ndarray) -> np.ndarray:
    """Mean over the drawn seeds (rows of per_seed [S, n]); a one-seed draw returns that row exactly."""
    return per_seed[draw].sum(axis=0) / len(draw)


def _seed_draws(n_seeds: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """int [n_boot, n_seeds]: seeds drawn with replacement per resample.

    Sorted so a multiset has one spelling.
    """
    return np.sort(rng.integers(0, n_seeds, size=(n_boot, n_seeds)), axis=1)


def _spearman_bootstrap_seeds(
    xs: np.ndarray, ys: np.ndarray, draws: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Two-level bootstrap of Spearman rho: resample seeds, then examples.

    xs [Sx, n] and ys [Sy, n] hold one row per seed of each side (a side without seeds is its
    column alone, Sx = 1). Resample b averages the rows draws[b] of each side with more than one
    row (sides with seeds share the draw: they come from the same training runs), then draws the
    n examples exactly as `_spearman_bootstrap` does with the same generator. Resamples that drew
    the same seed multiset share one tie structure, so the cost stays near the example bootstrap's.
    """
    n_boot = len(draws)
    out = np.empty(n_boot, dtype=np.float64)
    fixed = {side: _tie_structure(values[0]) for side, values in (("x", xs), ("y", ys)) if len(values) == 1}
    for start, w in _example_weight_blocks(xs.shape[1], n_boot, rng):
        block = draws[start : start + len(w)]
        keys, inverse = np.unique(block, axis=0, return_inverse=True)
        for k, key in enumerate(keys):
            rows = np.flatnonzero(inverse.reshape(-1) == k)
            tx = fixed.get("x") or _tie_structure(_seed_mean(xs, key))
            ty = fixed.get("y") or _tie_structure(_seed_mean(ys, key))
            out[start + rows] = _weighted_spearman(w[rows], tx, ty)
    return out


def _kendall(x: np.ndarray, y: np.ndarray) -> float:
    from scipy import stats  # ~1 s to import: the training jobs import this module without needing it

    return float(stats.kendalltau(x, y).statistic)


def _constant(a: np.ndarray) -> bool:
    return a.size == 0 or bool(np.all(a == a[0]))


CORRELATION_COLUMNS = [
    "x",
    "y",
    "method",
    "value",
    "ci_low",
    "ci_high",
    "ci_low_examples",
    "ci_high_examples",
    "resampled",
    "n",
    "n_seeds",
    "n_boot",
    "ci_level",
    "note",
]


def correlations(
    table: pd.DataFrame,
    columns: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    kendall_rows: int = 5000,
    seed_columns: Mapping[str, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """Spearman and Kendall (tau-b) correlation of every unordered pair of `columns`, with bootstrap CIs.

    One row per pair and method (columns `CORRELATION_COLUMNS`): x, y, method, value, ci_low,
    ci_high, ci_low_examples, ci_high_examples, resampled, n, n_seeds, n_boot, ci_level, note. Rows with a
    NaN in either column (or in one of their per-seed columns) are dropped per pair (n = rows used).
    CIs are bootstrap percentile intervals over `n_boot` resamples.

    `seed_columns` maps a column that is a mean over training seeds to its per-seed columns
    (privacy_loss -> privacy_loss_seed0, privacy_loss_seed1, ...). For a pair with such a column,
    ci_low / ci_high come from a two-level bootstrap: every resample draws the seeds with
    replacement, recomputes the seed mean from the drawn per-seed columns (both sides share the
    draw when both have seeds: same training runs), then draws the examples with replacement. The
    example-only interval (seed mean held fixed) is kept in ci_low_examples / ci_high_examples; for
    a pair without per-seed columns the two intervals are the same. n_seeds = seeds resampled (0:
    none); `resampled` says in words what each interval resampled. With one seed, or identical
    seeds, the two-level interval equals the example-only one: the example draws are the same.

    Kendall costs O(n log n) per resample, so above `kendall_rows` rows each resample draws only
    `kendall_rows` rows and the spread around the estimate is shrunk by sqrt(m / n) (m-out-of-n
    bootstrap), which keeps the interval sized for the full n; the shift a seed resample adds to
    the same rows is kept unscaled. `note` says so.
    Each pair's resamples come from `seed` alone, so adding a column leaves other pairs' CIs unchanged.
    """
    columns = list(columns)
    if len(set(columns)) != len(columns):
        raise ValueError(f"columns repeat: {columns}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise KeyError(f"columns not in the table: {missing}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie in (0, 1), got {ci}")
    if n_boot < 0 or kendall_rows < 2:
        raise ValueError(f"n_boot must be >= 0 and kendall_rows >= 2, got {n_boot}, {kendall_rows}")
    seed_columns = _check_seed_columns(table, columns, seed_columns or {})
    values = {c: table[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in columns}
    per_seed = {
        c: np.stack([table[s].to_numpy(dtype=np.float64, na_value=np.nan) for s in seed_columns[c]])
        for c in seed_columns
    }
    quantiles = [(1.0 - ci) / 2.0, (1.0 + ci) / 2.0]
    rows = []
    for a, b in itertools.combinations(columns, 2):
        seeded = [c for c in (a, b) if c in per_seed]
        counts = {len(seed_columns[c]) for c in seeded}
        if len(counts) > 1:
            raise ValueError(
                f"{a} and {b} have per-seed columns for different numbers of seeds "
                f"({sorted(counts)}); a shared seed resample needs the same training runs"
            )
        n_seeds = counts.pop() if counts else 0
        keep = ~(np.isnan(values[a]) | np.isnan(values[b]))
        for c in seeded:
            keep &= ~np.isnan(per_seed[c]).any(axis=0)
        x, y = values[a][keep], values[b][keep]
        xs = per_seed[a][:, keep] if a in per_seed else x[None]
        ys = per_seed[b][:, keep] if b in per_seed else y[None]
        for c, mean_of, seeds in ((a, x, xs), (b, y, ys)):
            if c in per_seed and not np.allclose(
                _seed_mean(seeds, np.arange(len(seeds))), mean_of, rtol=1e-6, atol=1e-12
            ):
                raise ValueError(
                    f"column {c} is not the mean of its per-seed columns {list(seed_columns[c])}"
                )
        n = len(x)
        resampled = f"seeds of {' and '.join(seeded)} + examples" if n_seeds else "examples"
        base = dict(x=a, y=b, n=n, n_seeds=n_seeds, n_boot=n_boot, ci_level=ci, resampled=resampled)
        if n < 3 or _constant(x) or _constant(y):
            why = "undefined: fewer than 3 rows" if n < 3 else "undefined: a column is constant"
            for method in ("spearman", "kendall"):
                rows.append(
                    dict(
                        base,
                        method=method,
                        value=np.nan,
                        ci_low=np.nan,
                        ci_high=np.nan,
                        ci_low_examples=np.nan,
                        ci_high_examples=np.nan,
                        note=why,
                    )
                )
            continue
        draws = _seed_draws(n_seeds, n_boot, np.random.default_rng([seed, 2])) if n_seeds else None

        from scipy import stats  # see _kendall

        rho = float(stats.spearmanr(x, y).statistic)
        examples = _spearman_bootstrap(x, y, n_boot, np.random.default_rng([seed, 0]))
        ex_ci = _percentile_ci(rho, examples, quantiles, 1.0)
        if n_seeds:
            boot = _spearman_bootstrap_seeds(xs, ys, draws, np.random.default_rng([seed, 0]))
            two_ci = _percentile_ci(rho, boot, quantiles, 1.0)
        else:
            two_ci = ex_ci
        rows.append(_correlation_row(base, "spearman", rho, two_ci, ex_ci, []))

        tau = _kendall(x, y)
        m = min(n, kendall_rows)
        shrink = math.sqrt(m / n)
        rng = np.random.default_rng([seed, 1])
        picks = [rng.integers(0, n, size=m) for _ in range(n_boot)]
        examples = np.array([_kendall(x[i], y[i]) for i in picks])
        ex_ci = _percentile_ci(tau, examples, quantiles, shrink)
        if n_seeds:
            with_seeds = np.array(
                [_kendall(_side(xs[:, i], d), _side(ys[:, i], d)) for i, d in zip(picks, draws)]
            )
            # the example part of the spread is rescaled to n rows, the shift the seeds add is not
            two_ci = _percentile_ci(tau, examples + (with_seeds - examples) / shrink, quantiles, shrink)
        else:
            two_ci = ex_ci
        extra = []
        if m < n:
            extra.append(
                f"CI from m-out-of-n bootstrap: {m} of {n} rows per resample, spread rescaled by "
                f"sqrt(m/n)" + (" (the seed part is not)" if n_seeds else "")
            )
        rows.append(_correlation_row(base, "kendall", tau, two_ci, ex_ci, extra))
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def per_seed_columns(table: pd.DataFrame, columns: Sequence[str]) -> dict[str, list[str]]:
    """column -> its per-seed columns `<column>_seed<N>` in the table, in seed order.

    Columns without any are left out.
    In scores.parquet only the privacy losses have them (privacy_loss_seed<N>): the proxies are
    stored as seed means.
    """
    found = {}
    for column in columns:
        pattern = re.compile(re.escape(column) + r"_seed(\d+)")
        seeds = sorted(
            (int(hit.group(1)), name)
            for name in table.columns
            if isinstance(name, str) and (hit := pattern.fullmatch(name))
        )
        if seeds:
            found[column] = [name for _, name in seeds]
    return found


def _check_seed_columns(
    table: pd.DataFrame, columns: list[str], seed_columns: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    checked = {}
    for column, seeds in seed_columns.items():
        seeds = [seeds] if isinstance(seeds, str) else list(seeds)
        if column not in columns:
            raise ValueError(
                f"seed_columns names {column!r}, which is not among the correlated columns {columns}"
            )
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(
                f"per-seed columns of {column} must be a non-empty list without repeats, got {seeds}"
            )
        missing = [s for s in seeds if s not in table.columns]
        if missing:
            raise KeyError(f"per-seed columns of {column} not in the table: {missing}")
        checked[column] = seeds
    return checked


def _side(per_seed: np.ndarray, draw: np.ndarray) -> np.ndarray:
    """One side of a seed resample: its column when it has no seeds, else the mean of the drawn seeds."""
    return per_seed[0] if len(per_seed) == 1 else _seed_mean(per_seed, draw)


def _correlation_row(
    base: dict, method: str, value: float, two_level: tuple, examples: tuple, extra: list[str]
) -> dict:
    (low, high, note), (ex_low, ex_high, ex_note) = two_level, examples
    notes = extra + [note] + ([f"example-only CI: {ex_note}"] if ex_note and ex_note != note else [])
    return dict(
        base,
        method=method,
        value=value,
        ci_low=low,
        ci_high=high,
        ci_low_examples=ex_low,
        ci_high_examples=ex_high,
        note="; ".join(filter(None, notes)),
    )


def _percentile_ci(
    estimate: float, boot: np.ndarray, quantiles: list[float], shrink: float
) -> tuple[float, float, str]:
    """Percentile interval of `boot`, its spread around `estimate` scaled by `shrink`."""
    ok = boot[~np.isnan(boot)]
    if ok.size == 0:
        return np.nan, np.nan, "no usable bootstrap resample" if boot.size else ""
    low, high = estimate + shrink * (np.quantile(ok, quantiles) - estimate)
    dropped = boot.size - ok.size
    note = f"{dropped} of {boot.size} resamples undefined (constant), ignored" if dropped else ""
    return float(low), float(high), note
