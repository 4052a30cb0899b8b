"""Loss barriers along linear paths in weight space.

For endpoints theta_a, theta_b and theta_lambda = (1 - lambda) theta_a + lambda theta_b, the barrier
of example x is max_lambda [l(theta_lambda; x) - ((1 - lambda) l(theta_a; x) + lambda l(theta_b; x))]
(or, with the `endpoints_mean` variant, max_lambda l(theta_lambda; x) - (l(theta_a; x) + l(theta_b; x)) / 2).
One working model is reused for every lambda; its parameters are overwritten in place.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .training import predict_logits

VARIANTS = ("linear", "endpoints_mean")


@torch.no_grad()
def interpolation_losses(model: torch.nn.Module, state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                         x: torch.Tensor, y: torch.Tensor, lambdas: Sequence[float], *, batch_size: int = 1024,
                         device: torch.device | str = "cpu") -> np.ndarray:
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
        raise ValueError(f"unknown barrier variant {variant!r} (config key barrier.variant); available: {VARIANTS}")
    return (losses - reference).max(axis=0)


def run_barrier_job(config: dict, score: str, group: str, groups_csv, original_weights,
                    endpoints: dict[str, str], out_path) -> None:
    """Loss along original -> endpoint paths for the members of one forget group.

    endpoints: pair name -> weights of the far endpoint. Writes a tidy table with one row per
    (pair, example, lambda): loss, and per (pair, example) the barrier height in column `barrier`
    (repeated on that example's rows).
    """
    import pandas as pd

    from . import io
    from .data import load_dataset
    from .retrain import load_model
    from .groups import forget_rows
    from .training import resolve_device

    spec = config["barrier"]
    lambdas = np.linspace(0.0, 1.0, spec["lambdas"])
    dataset = load_dataset(**config["dataset"])
    rows = forget_rows(dataset, groups_csv, score, group)
    device = resolve_device(config["device"])
    model = load_model(config, dataset, original_weights, device)
    start = io.load_state_dict(original_weights)
    x, y = dataset.train.x[rows], dataset.train.y[rows]
    frames = []
    for pair, weights in endpoints.items():
        losses = interpolation_losses(model, start, io.load_state_dict(weights), x, y, lambdas,
                                      batch_size=config["training"]["eval_batch_size"], device=device)
        heights = barrier_heights(losses, lambdas, spec["variant"])
        frames.append(pd.DataFrame({
            "score": score, "group": group, "pair": pair,
            "index": np.tile(dataset.train.index.numpy()[rows], len(lambdas)),
            "label": np.tile(y.numpy(), len(lambdas)),
            "lambda": np.repeat(lambdas, len(rows)), "loss": losses.reshape(-1),
            "barrier": np.tile(heights, len(lambdas)),
        }))
    io.save_table(pd.concat(frames, ignore_index=True), out_path)


def barrier_tables(paths, scores) -> dict:
    """Per-example barriers joined with privacy losses, the mean lambda curves, and Spearman rho per pair."""
    import pandas as pd
    from scipy.stats import spearmanr

    from . import io

    paths_table = pd.concat([io.load_table(p) for p in paths], ignore_index=True)
    ends = paths_table.groupby(["pair", "group", "index"])["loss"].agg(["first", "last"])
    curve = paths_table.join(ends, on=["pair", "group", "index"])
    curve["excess"] = curve["loss"] - ((1 - curve["lambda"]) * curve["first"] + curve["lambda"] * curve["last"])
    curves = (curve.groupby(["pair", "group", "lambda"])
              .agg(loss=("loss", "mean"), excess=("excess", "mean")).reset_index())
    examples = (paths_table.drop_duplicates(["pair", "group", "index"])[["score", "group", "pair", "index", "label", "barrier"]]
                .merge(scores[["index", "privacy_loss"]], on="index", how="left"))
    correlation = []
    for pair, part in examples.groupby("pair"):
        rho = spearmanr(part["barrier"], part["privacy_loss"])[0] if part["barrier"].nunique() > 1 else float("nan")
        correlation.append({"pair": pair, "spearman_barrier_privacy": float(rho), "n": len(part)})
    summary = (examples.groupby(["pair", "group"])
               .agg(barrier_mean=("barrier", "mean"), barrier_median=("barrier", "median"),
                    privacy_loss_mean=("privacy_loss", "mean"), n=("index", "size")).reset_index()
               .merge(pd.DataFrame(correlation), on="pair", suffixes=("", "_pair")))
    return {"examples": examples, "curves": curves, "summary": summary}
