"""Loss barriers along linear paths in weight space.

For endpoints theta_a, theta_b and theta_lambda = (1 - lambda) theta_a + lambda theta_b, the barrier
of example x is max_lambda [l(theta_lambda; x) - ((1 - lambda) l(theta_a; x) + lambda l(theta_b; x))]
(or, with the `endpoints_mean` variant, max_lambda l(theta_lambda; x) - (l(theta_a; x) + l(theta_b; x)) / 2).
One working model is reused for every lambda; its parameters are overwritten in place.

Unlearned endpoints are the models after the same number of unlearning steps for every group
(barrier.unlearning_steps), so a barrier does not grow with run length. Beside each barrier the
tables record the steps that made the endpoint and ||theta_end - theta_original||_2. Spearman
rho(barrier, P) is reported over a uniformly random sample of D (the random forget groups) with a
bootstrap CI, and separately over the privacy-loss groups, which are selected extremes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import io
from .data import load_dataset
from .groups import forget_rows
from .inference import load_model, predict_logits, resolve_device
from .plan import PRIVACY_SCORE, RANDOM_SCORE
from .proxies import correlations
from .training import steps_per_epoch

VARIANTS = ("linear", "endpoints_mean")


@torch.no_grad()
def interpolation_losses(
    model: torch.nn.Module,
    state_a: dict[str, torch.Tensor],
    state_b: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    lambdas: Sequence[float],
    *,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Per-example cross-entropy at every lambda, float64 [len(lambdas), n]."""
    if state_a.keys() != state_b.keys():
        raise ValueError("the two endpoints have different parameters")
    model.to(device)
    a = {k: v.to(device) for k, v in state_a.items()}
    b = {k: v.to(device) for k, v in state_b.items()}
    current = model.state_dict()
    out = np.empty((len(lambdas), len(x)), dtype=np.float64)
    for i, lam in enumerate(lambdas):
        for key, tensor in current.items():
            if tensor.is_floating_point():
                tensor.copy_(torch.lerp(a[key], b[key], float(lam)))
            else:  # integer buffers (counters) cannot be interpolated: keep the first endpoint's
                tensor.copy_(a[key])
        logits = predict_logits(model, x, batch_size, torch.device(device))
        out[i] = F.cross_entropy(logits.double(), y, reduction="none").numpy()
    return out


def barrier_heights(losses: np.ndarray, lambdas: Sequence[float], variant: str = "linear") -> np.ndarray:
    """Barrier of every example from its losses along the path [L, n]; lambda must include 0 and 1."""
    lambdas = np.asarray(lambdas, dtype=np.float64)
    losses = np.asarray(losses, dtype=np.float64)
    if losses.shape[0] != len(lambdas):
        raise ValueError(f"losses have {losses.shape[0]} rows for {len(lambdas)} lambdas")
    if not (np.isclose(lambdas[0], 0.0) and np.isclose(lambdas[-1], 1.0) and np.all(np.diff(lambdas) > 0)):
        raise ValueError("lambdas must increase from 0 to 1")
    if variant == "linear":
        reference = (1 - lambdas)[:, None] * losses[0] + lambdas[:, None] * losses[-1]
    elif variant == "endpoints_mean":
        reference = np.broadcast_to((losses[0] + losses[-1]) / 2, losses.shape)
    else:
        raise ValueError(
            f"unknown barrier variant {variant!r} (config key barrier.variant); available: {VARIANTS}"
        )
    return (losses - reference).max(axis=0)


def endpoint_distance(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor]) -> float:
    """||theta_b - theta_a||_2 over every floating-point tensor of the state_dicts (the ones the path
    interpolates: the parameters, and floating-point buffers if the model has any), in float64."""
    if state_a.keys() != state_b.keys():
        raise ValueError("the two endpoints have different parameters")
    total = 0.0
    for key, a in state_a.items():
        if a.is_floating_point():
            total += float(((state_b[key].double().cpu() - a.double().cpu()) ** 2).sum())
    return float(np.sqrt(total))


def spawned_oracle_steps(config: dict, n_retain: int) -> int:
    """Training steps of a spawned oracle.

    The epochs after barrier.spawn_epoch, on the n_retain examples of D minus G.
    """
    training = config["training"]
    epochs = training["epochs"] - config["barrier"]["spawn_epoch"]
    return int(epochs * steps_per_epoch(n_retain, training["batch_size"], training["sampling"]))


def endpoint_steps(config: dict, pair: str, n_retain: int) -> int:
    """Steps that made the far endpoint of `pair`: barrier.unlearning_steps for `unlearned_<method>`
    (every group's unlearned endpoint is taken after that many steps), the spawned oracle's training steps."""
    if pair.startswith("unlearned_"):
        return int(config["barrier"]["unlearning_steps"])
    if pair == "spawned_oracle":
        return spawned_oracle_steps(config, n_retain)
    raise ValueError(f"unknown barrier endpoint {pair!r}: expected unlearned_<method> or spawned_oracle")


def run_barrier_job(
    config: dict, score: str, group: str, groups_csv, original_weights, endpoints: dict[str, str], out_path
) -> None:
    """Loss along original -> endpoint paths for the members of one forget group.

    endpoints: pair name (`unlearned_<method>`: the model after barrier.unlearning_steps unlearning
    steps; `spawned_oracle`) -> weights of the far endpoint. Writes a tidy table with one row per
    (pair, example, lambda): loss, and per (pair, example) the barrier height in column `barrier`
    (repeated on that example's rows); per (pair, group) `steps_run` (steps that made the far
    endpoint) and `distance` (||theta_end - theta_original||_2, see endpoint_distance).
    """
    spec = config["barrier"]
    lambdas = np.linspace(0.0, 1.0, spec["lambdas"])
    dataset = load_dataset(**config["dataset"])
    rows = forget_rows(dataset, groups_csv, score, group)
    device = resolve_device(config["device"])
    model = load_model(config, dataset, original_weights, device)
    start = io.load_state_dict(original_weights)
    x, y = dataset.train.x[rows], dataset.train.y[rows]
    n_retain = len(dataset.train) - len(np.unique(rows))
    frames = []
    for pair, weights in endpoints.items():
        steps = endpoint_steps(config, pair, n_retain)
        end = io.load_state_dict(weights)
        losses = interpolation_losses(
            model, start, end, x, y, lambdas, batch_size=config["training"]["eval_batch_size"], device=device
        )
        heights = barrier_heights(losses, lambdas, spec["variant"])
        frames.append(
            pd.DataFrame(
                {
                    "score": score,
                    "group": group,
                    "pair": pair,
                    "index": np.tile(dataset.train.index.numpy()[rows], len(lambdas)),
                    "label": np.tile(y.numpy(), len(lambdas)),
                    "lambda": np.repeat(lambdas, len(rows)),
                    "loss": losses.reshape(-1),
                    "barrier": np.tile(heights, len(lambdas)),
                    "steps_run": np.int64(steps),
                    "distance": endpoint_distance(start, end),
                }
            )
        )
    io.save_table(pd.concat(frames, ignore_index=True), out_path)


RANDOM_SAMPLE = "random sample of D"
SELECTED_GROUPS = "selected groups (extremes), not the data"


def _sample_of(score: str) -> str:
    return {RANDOM_SCORE: RANDOM_SAMPLE, PRIVACY_SCORE: SELECTED_GROUPS}.get(
        score, f"groups chosen by {score}"
    )


def barrier_correlations(examples, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0):
    """Spearman rho(barrier, P) per (pair, sample), with a bootstrap CI over examples.

    `sample` is `random sample of D` for the random groups (score `random`: uniformly random draws
    of the training set, so rho estimates the population value) and `selected groups (extremes),
    not the data` for the privacy-loss groups. One row per (group, example) is one observation
    (random groups may overlap; each membership has its own endpoints). Columns: pair, sample,
    spearman, ci_low, ci_high, n, groups, note.
    """
    rows = []
    for (pair, sample), part in examples.groupby(["pair", "sample"], sort=True):
        table = correlations(
            part[["barrier", "privacy_loss"]].reset_index(drop=True),
            ["barrier", "privacy_loss"],
            n_boot=n_boot,
            seed=seed,
            ci=ci,
        )
        spearman = table[table["method"] == "spearman"].iloc[0]
        rows.append(
            {
                "pair": pair,
                "sample": sample,
                "spearman": float(spearman["value"]),
                "ci_low": float(spearman["ci_low"]),
                "ci_high": float(spearman["ci_high"]),
                "n": int(spearman["n"]),
                "groups": " ".join(sorted(part["group"].unique())),
                "note": spearman["note"],
            }
        )
    return pd.DataFrame(
        rows, columns=["pair", "sample", "spearman", "ci_low", "ci_high", "n", "groups", "note"]
    )


def barrier_tables(paths, scores, *, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> dict:
    """Per-example barriers joined with privacy losses, the mean lambda curves, Spearman rho per
    (pair, sample) and a per-(pair, group) summary.

    examples: one row per (pair, score, group, example) with `sample` (see barrier_correlations),
    barrier, steps_run, distance and privacy_loss. curves: mean loss and mean `excess` (loss minus
    the straight line between the endpoint losses) per (pair, score, group, lambda). correlations:
    barrier_correlations. summary: per (pair, score, group) barrier mean / median, privacy-loss
    mean, n, steps_run, distance, and the pair's rho over the random sample (spearman_random,
    its CI and n_random) and over the selected privacy-loss groups (spearman_selected, n_selected).
    """
    keys = ["pair", "score", "group", "index"]
    paths_table = pd.concat([io.load_table(p) for p in paths], ignore_index=True)
    ends = paths_table.groupby(keys)["loss"].agg(["first", "last"])
    curve = paths_table.join(ends, on=keys)
    curve["excess"] = curve["loss"] - (
        (1 - curve["lambda"]) * curve["first"] + curve["lambda"] * curve["last"]
    )
    curves = (
        curve.groupby(["pair", "score", "group", "lambda"])
        .agg(loss=("loss", "mean"), excess=("excess", "mean"))
        .reset_index()
    )
    examples = paths_table.drop_duplicates(keys)[
        ["score", "group", "pair", "index", "label", "barrier", "steps_run", "distance"]
    ].merge(scores[["index", "privacy_loss"]], on="index", how="left")
    examples.insert(2, "sample", examples["score"].map(_sample_of))
    correlation = barrier_correlations(examples, n_boot=n_boot, ci=ci, seed=seed)
    summary = (
        examples.groupby(["pair", "score", "group", "sample"])
        .agg(
            barrier_mean=("barrier", "mean"),
            barrier_median=("barrier", "median"),
            privacy_loss_mean=("privacy_loss", "mean"),
            n=("index", "size"),
            steps_run=("steps_run", "first"),
            distance=("distance", "first"),
        )
        .reset_index()
    )
    for sample, suffix in ((RANDOM_SAMPLE, "random"), (SELECTED_GROUPS, "selected")):
        part = correlation[correlation["sample"] == sample].set_index("pair")
        summary[f"spearman_{suffix}"] = summary["pair"].map(part["spearman"])
        summary[f"spearman_{suffix}_ci_low"] = summary["pair"].map(part["ci_low"])
        summary[f"spearman_{suffix}_ci_high"] = summary["pair"].map(part["ci_high"])
        summary[f"n_{suffix}"] = summary["pair"].map(part["n"]).fillna(0).astype(int)
    return {"examples": examples, "curves": curves, "correlations": correlation, "summary": summary}
