"""Which forget groups, oracles and unlearning runs an experiment config asks for.

Standard library only: the Snakefile imports this module to build the DAG, so the workflow and
the package agree on every group name without the workflow importing torch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# the unlearning methods (unlearning.METHODS implements them; a test keeps the two and the schema equal)
UNLEARNING_METHODS = ("finetune", "sgld", "l1sparse", "neggrad_plus", "scrub", "random_label", "salun")
PRIVACY_SCORE = "privacy_loss"
RANDOM_SCORE = "random"
# seeds of retrained models, offset so they never coincide with the original models' seeds
HOLDOUT_SEED_OFFSET = 100_000
ORACLE_SEED_OFFSET = 200_000


class Group(NamedTuple):
    score: str
    group: str


class UnlearningJob(NamedTuple):
    method: str
    score: str
    group: str
    run: int  # unlearning run u of (method, group); it starts from original_seed(config, u)


def privacy_groups(config: dict[str, Any]) -> list[Group]:
    """low/mid/high by privacy loss, then the rank bins `top1`, `top2`, ... counted from the top."""
    spec = config["groups"]
    bins = spec["linear_bins"] + spec["log_bins"]
    kinds = [k for k in ("low", "mid", "high") if k in spec["privacy_kinds"]]
    return [Group(PRIVACY_SCORE, k) for k in kinds] + [
        Group(PRIVACY_SCORE, f"top{i + 1}") for i in range(bins)
    ]


def comparison_groups(config: dict[str, Any]) -> list[Group]:
    """The `high` group of every configured proxy, and the random baselines."""
    spec = config["groups"]
    return [Group(score, "high") for score in spec["proxy_scores"]] + [
        Group(RANDOM_SCORE, f"random{j}") for j in range(spec["random_groups"])
    ]


def all_groups(config: dict[str, Any]) -> list[Group]:
    return privacy_groups(config) + comparison_groups(config)


def unlearning_jobs(config: dict[str, Any]) -> list[UnlearningJob]:
    spec = config["unlearning"]
    runs = range(spec["seeds"])
    jobs = [
        UnlearningJob(m, g.score, g.group, u)
        for m in spec["methods"]
        for g in privacy_groups(config)
        for u in runs
    ]
    jobs += [
        UnlearningJob(m, g.score, g.group, u)
        for m in spec["proxy_methods"]
        for g in comparison_groups(config)
        for u in runs
    ]
    return list(dict.fromkeys(jobs))


def original_seed(config: dict[str, Any], run: int) -> int:
    """Unlearning run u starts from the original model of seeds[u mod len(seeds)], or of
    groups.ranking_seed when the groups come from that model's own ranking."""
    if config["groups"]["ranking_seed"] is not None:
        return config["groups"]["ranking_seed"]
    seeds = config["seeds"]
    return seeds[run % len(seeds)]


def oracle_seed(replicate: int) -> int:
    return ORACLE_SEED_OFFSET + replicate


def holdout_seed(model_id: int) -> int:
    return HOLDOUT_SEED_OFFSET + model_id


def barrier_groups(config: dict[str, Any]) -> list[Group]:
    """Groups with loss barriers: the privacy-loss groups (selected extremes) and the random groups
    (uniformly random samples of D, for the population value of rho(barrier, P))."""
    return privacy_groups(config) + [g for g in comparison_groups(config) if g.score == RANDOM_SCORE]


def barrier_methods(config: dict[str, Any], group: Group) -> list[str]:
    """Unlearning methods whose endpoint (seed 0) enters the barrier job of `group`: barrier.methods,
    restricted on the random groups to those run on them (unlearning.proxy_methods)."""
    methods = config["barrier"]["methods"]
    if group.score == RANDOM_SCORE:
        return [m for m in methods if m in config["unlearning"]["proxy_methods"]]
    return list(methods)
