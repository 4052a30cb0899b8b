"""Rank stability of the per-instance privacy-loss ranking (F7).

Every variant is recomputed from the stored gradient norms and training dynamics, never by
retraining: other accounting beta, other Renyi orders, sparser checkpoint schedules, step 0
included, single seeds, and the online estimator. Each variant is compared with the reference
(the configured estimator, mean over seeds) by Spearman rho and by the overlap of the top-m sets
that forget groups are built from.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .grad_norms import load_run_norms
from .privacy import checkpoint_step_groups, online_rdp, per_instance_rdp, privacy_settings, sampling_of_run
from .settings import Settings, as_settings
from .training import load_run_dynamics


def top_overlap(a: np.ndarray, b: np.ndarray, m: int) -> float:
    """Fraction of the m highest-scoring examples of `a` that are also among those of `b`."""
    top_a = set(np.argsort(-np.asarray(a), kind="stable")[:m].tolist())
    top_b = set(np.argsort(-np.asarray(b), kind="stable")[:m].tolist())
    return len(top_a & top_b) / m


class _Seed:
    """Stored norms and dynamics of one seed, with P recomputable under any setting."""

    def __init__(self, config: Mapping[str, Any] | Settings, run_dir: str | Path, norms_path: str | Path):
        cfg = as_settings(config)
        self.settings = privacy_settings(cfg)
        self.max_levels = cfg.privacy.max_lr_levels
        self.dynamics = load_run_dynamics(run_dir)
        norms = load_run_norms(run_dir, norms_path)
        self.norms = norms["norms"].astype(np.float64)
        self.steps = norms["checkpoint_step"]
        self.batch_size, self.sample_rate = sampling_of_run(self.dynamics)

    def _compose(self, norms: np.ndarray, groups, beta: float, order: float) -> np.ndarray:
        return per_instance_rdp(
            norms,
            groups,
            sample_rate=self.sample_rate,
            batch_size=self.batch_size,
            beta=beta,
            orders=np.array([order]),
            clip=self.settings["clip"],
            method=self.settings["method"],
        )[:, 0]

    def checkpoint(
        self,
        *,
        beta: float | None = None,
        order: float | None = None,
        keep: np.ndarray | None = None,
        include_step0: bool | None = None,
    ) -> np.ndarray:
        """P from the checkpoint estimator; `keep` selects which stored checkpoints are used."""
        keep = np.ones(len(self.steps), dtype=bool) if keep is None else keep
        step0 = self.settings["include_step0"] if include_step0 is None else include_step0
        used, groups = checkpoint_step_groups(
            self.steps[keep], self.dynamics["lr"], include_step0=step0, max_lr_levels=self.max_levels
        )
        return self._compose(
            self.norms[:, keep][:, used],
            groups,
            beta or self.settings["beta"],
            order or self.settings["alpha"],
        )

    def online(self) -> np.ndarray:
        s = self.settings
        return online_rdp(
            self.dynamics,
            beta=s["beta"],
            orders=np.array([s["alpha"]]),
            clip=s["clip"],
            method=s["method"],
            max_lr_levels=self.max_levels,
        )[:, 0]

    def checkpoint_subsets(self) -> dict[str, np.ndarray]:
        """Sparser schedules: epoch checkpoints only, every 2nd and 4th epoch checkpoint."""
        spe = int(self.dynamics["steps_per_epoch"])
        epoch_ckpt = (self.steps % spe == 0) & (self.steps > 0)
        epoch_positions = np.flatnonzero(epoch_ckpt)
        subsets = {"epoch checkpoints only": epoch_ckpt | (self.steps == 0)}
        for every in (2, 4):
            keep = self.steps == 0
            keep[epoch_positions[every - 1 :: every]] = True
            if keep[epoch_ckpt].sum() >= 1:
                subsets[f"every {every} epochs"] = keep
        return subsets


def robustness_table(
    config: Mapping[str, Any] | Settings,
    runs: Sequence[tuple[int, str | Path, str | Path]],
    *,
    betas: Sequence[float] = (),
    orders: Sequence[float] = (),
) -> pd.DataFrame:
    """Spearman rho and top-m overlap of each variant's ranking against the reference ranking."""
    cfg = as_settings(config)  # validated once, shared by every seed
    seeds = {seed: _Seed(cfg, run, norms) for seed, run, norms in runs}
    settings = next(iter(seeds.values())).settings
    m = cfg.groups.size

    def mean_over_seeds(fn) -> np.ndarray:
        return np.mean([fn(s) for s in seeds.values()], axis=0)

    reference = mean_over_seeds(lambda s: s.checkpoint())
    rows: list[dict[str, Any]] = []

    def add(
        factor: str,
        variant: str,
        values: np.ndarray,
        against: np.ndarray = reference,
        baseline: str = "reference",
    ):
        rho = spearmanr(values, against)[0]
        rows.append(
            {
                "factor": factor,
                "variant": variant,
                "compared_with": baseline,
                "spearman": float(rho),
                "top_m_overlap": top_overlap(values, against, m),
                "m": m,
            }
        )

    for beta in betas:
        if beta != settings["beta"]:
            add(
                "accounting beta",
                f"beta={beta:g}",
                mean_over_seeds(lambda s, beta=beta: s.checkpoint(beta=beta)),
            )
    for order in orders:
        if order != settings["alpha"]:
            add(
                "Renyi order",
                f"alpha={order:g}",
                mean_over_seeds(lambda s, order=order: s.checkpoint(order=order)),
            )
    first = next(iter(seeds.values()))
    for name in first.checkpoint_subsets():
        add(
            "checkpoints",
            name,
            mean_over_seeds(lambda s, name=name: s.checkpoint(keep=s.checkpoint_subsets()[name])),
        )
    if not settings["include_step0"] and 0 in first.steps:
        add("checkpoints", "step 0 included", mean_over_seeds(lambda s: s.checkpoint(include_step0=True)))
    per_seed = {seed: s.checkpoint() for seed, s in seeds.items()}
    for a, b in itertools.combinations(sorted(per_seed), 2):
        add("seeds", f"seed {a} vs seed {b}", per_seed[a], per_seed[b], f"seed {b}")
    if not np.isnan(first.dynamics["presentation_grad_norm"]).all():
        add("estimator", "online", mean_over_seeds(lambda s: s.online()))
    return pd.DataFrame(rows)
