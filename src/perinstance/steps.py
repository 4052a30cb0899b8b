"""Steps-to-unlearn and unlearning-quality tables from the unlearning runs and their oracles.

Every input file says what it is: an unlearning run's tables carry method, score, group, seed (the
run index u) and original_seed columns, an oracle evaluation its `score`, `group` and `replicate`
arrays (retrain.run_oracle), so no path is parsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import io
from .community_metrics import challenge_epsilons, challenge_forget_score, challenge_score, tug_of_war
from .difficulty import difficulty_correlations, first_passage, gap_statistics, kaplan_meier, oracle_reference
from .evaluation import (
    forget_accuracy_gap,
    mia_auc_gap,
    oracle_band,
    steps_to_unlearn,
    summarise_steps,
)
from .theory import fit_log_trend_censored

# the challenge's per-example epsilon needs enough models per side for its threshold tests to mean
# anything (the challenge used 512; with 8 the rates move in steps of 1/8)
MIN_MODELS_FOR_CHALLENGE = 8
CHALLENGE_COLUMNS = ("challenge_epsilon_mean", "challenge_forget_score", "challenge_score")


ORACLE_FIELDS = ("score", "group", "replicate")
# what an evaluation (oracle or unlearned model) needs for the accuracy gaps and ToW
ACCURACY_FIELDS = ("forget_correct", "retain_accuracy", "test_correct")


def accuracies(evaluation: dict[str, np.ndarray]) -> dict[str, float]:
    """Forget, retain and test accuracy of one evaluation file (inference.save_evaluation)."""
    return {
        "forget": float(evaluation["forget_correct"].mean()),
        "retain": float(evaluation["retain_accuracy"]),
        "test": float(evaluation["test_correct"].mean()),
    }


def mean_accuracies(evaluations: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """`accuracies` averaged over several models (the oracles of a group, a method's runs)."""
    each = [accuracies(e) for e in evaluations]
    return {split: float(np.mean([a[split] for a in each])) for split in each[0]}


def load_oracle_evaluations(
    paths: Sequence[str | Path], required: Sequence[str] = ()
) -> dict[tuple[str, str], list[dict[str, np.ndarray]]]:
    """Oracle evaluations by the (score, group) each file names itself, in the order given.

    A file without its `score`, `group` and `replicate` (or any of `required`) raises
    io.CorruptArtefact naming it; one replicate of a group given twice raises ValueError.
    """
    oracles: dict[tuple[str, str], list[dict[str, np.ndarray]]] = {}
    seen: dict[tuple[str, str, int], str | Path] = {}
    for path in paths:
        evaluation = io.load_npz(path, required=(*ORACLE_FIELDS, *required))
        key = (str(evaluation["score"]), str(evaluation["group"]))
        replicate = (*key, int(evaluation["replicate"]))
        if replicate in seen:
            raise ValueError(
                f"oracle replicate {replicate[2]} of group {key[0]}/{key[1]} is given twice: "
                f"{seen[replicate]} and {path}"
            )
        seen[replicate] = path
        oracles.setdefault(key, []).append(evaluation)
    return oracles


def steps_table(
    config: dict[str, Any],
    runs: Sequence[tuple[str | Path, str | Path]],
    oracle_evals: Sequence[str | Path],
    scores: pd.DataFrame,
    groups: pd.DataFrame,
) -> dict[str, pd.DataFrame]:
    """One row per unlearning run (`steps`), one per (score, group, method) (`summary`).

    runs: (curve file, final-evaluation npz) of every unlearning run.
    """
    bands = config["oracles"]
    k_max = config["unlearning"]["k_max"]
    oracles = load_oracle_evaluations(oracle_evals, required=ACCURACY_FIELDS)
    group_privacy = (
        groups.merge(scores[["index", "privacy_loss", "privacy_loss_4alpha"]], on="index")
        .groupby(["score", "group"])
        .agg(
            privacy_loss=("privacy_loss", "mean"),
            privacy_loss_4alpha=("privacy_loss_4alpha", "mean"),
            ranks=("ranks", "first"),
        )
        .reset_index()
    )
    rows, finals, curves, retrained_by_group = [], {}, [], {}
    for curve_path, final_path in runs:
        curve = io.load_table(curve_path)
        method, score, group, seed = (curve[c].iloc[0] for c in ("method", "score", "group", "seed"))
        evals = oracles.get((score, group))
        if not evals:
            raise ValueError(f"no oracle evaluations for group {score}/{group}")
        band = oracle_band(
            np.array([e["forget_losses"].mean() for e in evals]), tol_abs=bands["tol_abs"], z=bands["z"]
        )
        result = steps_to_unlearn(
            curve["step"].to_numpy(), curve["forget_loss"].to_numpy(), band, consecutive=bands["consecutive"]
        )
        if result["censored"]:
            result["steps"] = (
                k_max  # a run stopped before k_max without meeting the criterion is censored at k_max
            )
        curves.append(curve.assign(band_center=band[0], band_half_width=band[1]))
        final = io.load_npz(final_path, required=ACCURACY_FIELDS)
        finals.setdefault((score, group, method), []).append(final)
        unlearned = accuracies(final)
        if (score, group) not in retrained_by_group:
            retrained_by_group[score, group] = mean_accuracies(evals)
        retrained = retrained_by_group[score, group]
        mia = mia_auc_gap(
            final["forget_losses"],
            final["test_losses"],
            [e["forget_losses"] for e in evals],
            [e["test_losses"] for e in evals],
        )
        rows.append(
            {
                "score": score,
                "group": group,
                "method": method,
                "seed": int(seed),
                **result,
                "oracle_sd": band[2],
                "n_oracles": len(evals),
                "k_max": k_max,
                "steps_run": int(final["steps_run"]),
                # stopped above the band (unlearning.stop_when_overshot); hand-built curves may lack it
                "overshot": bool(curve["overshot"].iloc[0]) if "overshot" in curve.columns else False,
                "forget_accuracy_gap": forget_accuracy_gap(
                    unlearned["forget"], [accuracies(e)["forget"] for e in evals]
                ),
                **{f"{split}_accuracy": value for split, value in unlearned.items()},
                **{f"{split}_accuracy_oracles": value for split, value in retrained.items()},
                "tow": tug_of_war(unlearned, retrained),
                "mia_auc": mia["auc_unlearned"],
                "mia_auc_oracles": mia["auc_oracle"],
                "mia_auc_gap": mia["gap"],
            }
        )
    if not rows:
        raise ValueError("no unlearning runs to summarise")
    steps = pd.DataFrame(rows).merge(group_privacy, on=["score", "group"], how="left")
    summary = summarise_steps(steps).merge(group_privacy, on=["score", "group"], how="left")
    tow = (
        steps.groupby(["score", "group", "method"])["tow"]
        .agg(tow_mean="mean", tow_sd=lambda v: v.std(ddof=1) if len(v) > 1 else np.nan)
        .reset_index()
    )
    summary = summary.merge(tow, on=["score", "group", "method"], how="left")
    challenge = pd.DataFrame(
        [
            challenge_columns(finals[(r.score, r.group, r.method)], oracles[(r.score, r.group)])
            for r in summary.itertuples()
        ],
        columns=list(CHALLENGE_COLUMNS),
        index=summary.index,
    )
    summary = pd.concat([summary, challenge], axis=1)
    return {"steps": steps, "summary": summary, "curves": pd.concat(curves, ignore_index=True)}


def challenge_columns(
    finals: list[dict[str, np.ndarray]], oracles: list[dict[str, np.ndarray]]
) -> dict[str, float]:
    """The NeurIPS 2023 challenge's numbers for one (group, method): the mean per-example epsilon,
    the forget score and the final score (community_metrics), from the forget-example phi of the
    unlearned models against the oracles and their retain and test accuracies; NaN with fewer than
    MIN_MODELS_FOR_CHALLENGE models on either side."""
    if len(oracles) < MIN_MODELS_FOR_CHALLENGE or len(finals) < MIN_MODELS_FOR_CHALLENGE:
        return dict.fromkeys(CHALLENGE_COLUMNS, float("nan"))
    # phi arrays are stacked column by column: every model must list the same examples in the same order
    reference = finals[0]["forget_index"]
    if not all(np.array_equal(m["forget_index"], reference) for m in [*finals, *oracles]):
        raise ValueError("unlearned and oracle models were evaluated on different forget examples or orders")
    epsilons = challenge_epsilons(
        np.stack([f["forget_phi"] for f in finals]), np.stack([o["forget_phi"] for o in oracles])
    )
    forget_score = challenge_forget_score(epsilons, n_unlearned=len(finals))
    unlearned, retrained = mean_accuracies(finals), mean_accuracies(oracles)
    return {
        "challenge_epsilon_mean": float(np.mean(epsilons)),
        "challenge_forget_score": forget_score,
        "challenge_score": challenge_score(
            forget_score,
            retain_unlearned=unlearned["retain"],
            retain_retrained=retrained["retain"],
            test_unlearned=unlearned["test"],
            test_retrained=retrained["test"],
        ),
    }


def theory_fit(
    steps: pd.DataFrame,
    method: str,
    score: str = "privacy_loss",
    *,
    n_boot: int = 200,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Fitted "steps ~ scale * log P(x, 4 alpha) + offset" over the unlearning runs of one method.

    A FITTED trend (one scale and offset), not the bound itself, whose constants are unknowable for deep
    networks. Only groups that needed unlearning enter (a group whose every run sat inside the oracle
    band at step 0 has k = 0 whatever its P, and is listed in `groups_excluded`); censored runs enter as
    lower bounds (Tobit likelihood, `theory.fit_log_trend_censored`). `scale_low`, `scale_high`: a
    percentile bootstrap over the runs used. None when fewer than two uncensored runs with different P
    remain.
    """
    runs = steps[(steps["method"] == method) & (steps["score"] == score)]
    inside = runs.groupby("group")["inside_at_step0"].all()
    used = sorted(inside.index[~inside])
    needed = runs[runs["group"].isin(used)]
    try:
        fit = fit_log_trend_censored(
            needed["privacy_loss_4alpha"].to_numpy(),
            needed["steps"].to_numpy(),
            needed["censored"].to_numpy(),
        )
    except ValueError:
        return None
    rng = np.random.default_rng(seed)
    scales = []
    for _ in range(n_boot):
        draw = needed.iloc[rng.integers(0, len(needed), len(needed))]
        try:
            scales.append(
                fit_log_trend_censored(
                    draw["privacy_loss_4alpha"].to_numpy(),
                    draw["steps"].to_numpy(),
                    draw["censored"].to_numpy(),
                )["scale"]
            )
        except ValueError:  # a replicate without two measured runs says nothing about the scale
            continue
    tail = (1 - ci) / 2 * 100
    low, high = np.percentile(scales, [tail, 100 - tail]) if len(scales) >= 10 else (np.nan, np.nan)
    return {
        **fit,
        "scale_low": float(low),
        "scale_high": float(high),
        "n_boot": len(scales),
        "groups_used": used,
        "groups_excluded": sorted(inside.index[inside]),
    }


def fits_table(fits: dict[str, dict[str, Any] | None]) -> pd.DataFrame:
    """The fitted trends as a table: which points entered each fit and its parameters."""
    rows = []
    for method, fit in fits.items():
        if fit is None:
            rows.append({"method": method, "fitted": False})
            continue
        rows.append(
            {
                "method": method,
                "fitted": True,
                "scale": fit["scale"],
                "scale_low": fit["scale_low"],
                "scale_high": fit["scale_high"],
                "offset": fit["offset"],
                "sigma": fit["sigma"],
                "n_runs": fit["n"],
                "n_censored": fit["n_censored"],
                "converged": fit["converged"],
                "groups_used": " ".join(fit["groups_used"]),
                "groups_excluded": " ".join(fit["groups_excluded"]),
            }
        )
    return pd.DataFrame(rows)


def write_steps_tables(
    config: dict[str, Any],
    runs,
    oracle_evals,
    scores_path,
    groups_path,
    steps_out,
    summary_out,
    curves_out,
    fits_out,
) -> list[Path]:
    tables = steps_table(config, runs, oracle_evals, io.load_table(scores_path), io.load_table(groups_path))
    methods = sorted(set(tables["steps"]["method"]))
    fits = fits_table({m: theory_fit(tables["steps"], m) for m in methods})
    return [
        io.save_table(tables["steps"], steps_out),
        io.save_table(tables["summary"], summary_out),
        io.save_table(tables["curves"], curves_out),
        io.save_table(fits, fits_out),
    ]


# Proxies compared with P(x, 4 alpha) in the per-example correlations, when present in scores.parquet.
DIFFICULTY_PROXIES = (
    "el2n",
    "forgetting_events",
    "learning_speed",
    "cscore_holdout",
    "cscore_published",
    "privacy_loss_online",
)
REFERENCE_SCORE = "privacy_loss_4alpha"
OWN_SEED_SCORE = "privacy_loss_4alpha_own_seed"


def unlearning_examples(
    config: dict[str, Any],
    example_paths: Sequence[str | Path],
    oracle_evals: Sequence[str | Path],
    scores: pd.DataFrame,
    groups: pd.DataFrame,
) -> pd.DataFrame:
    """One row per (unlearning run, forget example).

    Oracle reference, per-example steps, gap statistics, scores.
    example_paths: the per-evaluation forget records (`..._forget.parquet`) of every unlearning run.
    Columns: method, score, group, seed, original_seed, index, label, oracle_center, oracle_sd,
    half_width, loss_step0, gap_step0 (loss minus centre at step 0), inside_at_step0, steps (first
    passage, or the last evaluated step when `censored`), censored, steps_run, remaining_gap_<K> for
    each budget K of `unlearning.gap_budgets`, mean_gap_<max K>, privacy_loss_4alpha (mean over
    seeds), privacy_loss_4alpha_own_seed (P of the run's own original model) and every proxy column.
    """
    bands = config["oracles"]
    budgets = config["unlearning"]["gap_budgets"]
    oracles = load_oracle_evaluations(oracle_evals, required=("forget_index", "forget_losses"))
    score_columns = [c for c in (REFERENCE_SCORE, *DIFFICULTY_PROXIES) if c in scores]
    frames = []
    for path in example_paths:
        records = io.load_table(path)
        method, score, group, seed, original = (
            records[c].iloc[0] for c in ("method", "score", "group", "seed", "original_seed")
        )
        evals = oracles.get((score, group))
        if not evals:
            raise ValueError(f"no oracle evaluations for group {score}/{group} (needed by {path})")
        wide = records.pivot(index="step", columns="index", values="loss").sort_index()
        members = wide.columns.to_numpy()
        oracle_losses = []
        for e in evals:
            order = pd.Series(np.arange(len(e["forget_index"])), index=e["forget_index"])
            if set(order.index) != set(members):
                raise ValueError(f"{path}: the oracles of {score}/{group} were evaluated on other examples")
            oracle_losses.append(e["forget_losses"][order.loc[members].to_numpy()])
        ref = oracle_reference(np.stack(oracle_losses), tol_abs=bands["tol_abs"], z=bands["z"])
        steps = wide.index.to_numpy()
        losses = wide.to_numpy(np.float64)
        passage = first_passage(
            steps, losses, ref["center"], ref["half_width"], consecutive=bands["consecutive"]
        )
        gaps = gap_statistics(steps, losses, ref["center"], budgets)
        frame = pd.DataFrame(
            {
                "method": method,
                "score": score,
                "group": group,
                "seed": int(seed),
                "original_seed": int(original),
                "index": members,
                "oracle_center": ref["center"],
                "oracle_sd": ref["sd"],
                "half_width": ref["half_width"],
                "loss_step0": losses[0],
                "gap_step0": losses[0] - ref["center"],
                "inside_at_step0": passage["inside_at_step0"],
                "steps": passage["steps"],
                "censored": passage["censored"],
                "steps_run": int(steps[-1]),
                **gaps,
            }
        )
        for column in gaps:  # an example with no gap to close has no gap statistic
            frame.loc[frame["inside_at_step0"], column] = np.nan
        own = f"privacy_loss_4alpha_seed{int(original)}"
        if own not in scores:
            raise ValueError(f"scores table has no column {own} for the original model of {path}")
        frames.append(
            frame.merge(
                scores[["index", "label", *score_columns, own]].rename(columns={own: OWN_SEED_SCORE}),
                on="index",
                how="left",
            )
        )
    if not frames:
        raise ValueError("no unlearning runs to analyse")
    table = pd.concat(frames, ignore_index=True)
    ranks = groups[["score", "group", "ranks"]].drop_duplicates() if "ranks" in groups else None
    return table.merge(ranks, on=["score", "group"], how="left") if ranks is not None else table


def difficulty_tables(config: dict[str, Any], examples: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Claims 3 and 4 per example: correlations with bootstrap CIs and paired differences, and survival.

    Per method, `needs_unlearning` (1 when the example was outside its band at step 0) is correlated
    over every forget example; the gap statistics over the examples that needed unlearning, the others
    counted (`n_inside_at_step0`) and left out, since they carry no information on how hard
    unlearning is. The difficulty statistics are uncensored (every run reaches the budgets).
    Survival: Kaplan-Meier fraction of examples not yet unlearned by step k, per (method, score,
    group), over the examples that needed unlearning, censoring kept.
    """
    budgets = config["unlearning"]["gap_budgets"]
    analysis = config["proxies"]
    metrics = [f"mean_gap_{max(budgets)}", f"remaining_gap_{max(budgets)}"]
    scores = [c for c in (REFERENCE_SCORE, OWN_SEED_SCORE, *DIFFICULTY_PROXIES) if c in examples]
    correlations = []
    for method, part in examples.groupby("method", sort=True):
        # every forget example: does the score tell which ones need unlearning at all? (Spearman with a
        # 0/1 variable is a rescaled AUC; uncensored and defined for every example)
        def correlate(examples: pd.DataFrame, metric: str, method=method, part=part) -> None:
            table = difficulty_correlations(
                examples,
                metric,
                scores,
                reference=REFERENCE_SCORE,
                n_boot=analysis["bootstrap"],
                ci=analysis["ci"],
                seed=config["groups"]["seed"],
            )
            correlations.append(
                table.assign(
                    method=method, n_inside_at_step0=int(part["inside_at_step0"].sum()), n_examples=len(part)
                )
            )

        everyone = part.assign(needs_unlearning=(~part["inside_at_step0"]).astype(np.float64))
        if everyone["needs_unlearning"].nunique() > 1:
            correlate(everyone, "needs_unlearning")
        pool = part[~part["inside_at_step0"]]
        for metric in metrics:
            if pool[metric].notna().sum() >= 3:
                correlate(pool, metric)
    survival = []
    for (method, score, group), part in examples.groupby(["method", "score", "group"], sort=True):
        needed = part[~part["inside_at_step0"]]
        if needed.empty:
            continue
        curve = kaplan_meier(needed["steps"].to_numpy(), needed["censored"].to_numpy())
        survival.append(
            curve.assign(
                method=method,
                score=score,
                group=group,
                n_examples=len(needed),
                n_inside_at_step0=int(part["inside_at_step0"].sum()),
            )
        )
    return {
        "correlations": pd.concat(correlations, ignore_index=True) if correlations else pd.DataFrame(),
        "survival": pd.concat(survival, ignore_index=True) if survival else pd.DataFrame(),
    }


def write_difficulty_tables(
    config: dict[str, Any],
    example_paths,
    oracle_evals,
    scores_path,
    groups_path,
    examples_out,
    correlations_out,
    survival_out,
) -> list[Path]:
    examples = unlearning_examples(
        config, example_paths, oracle_evals, io.load_table(scores_path), io.load_table(groups_path)
    )
    tables = difficulty_tables(config, examples)
    return [
        io.save_table(examples, examples_out),
        io.save_table(tables["correlations"], correlations_out),
        io.save_table(tables["survival"], survival_out),
    ]
