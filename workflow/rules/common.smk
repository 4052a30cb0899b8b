import os
import sys
from typing import NamedTuple

import yaml

# The package's config, plan, paths and jobs modules need only the standard library, jsonschema
# and PyYAML: the DAG and the jobs validate with one validator and agree on every group, file and
# job name.
sys.path.insert(0, os.path.join(workflow.basedir, "src"))
from perinstance import jobs, paths, plan  # noqa: E402
from perinstance.config import ConfigError, merge_configs, read_config_file, validate_config  # noqa: E402
from perinstance.config import config_digest as digest_of  # noqa: E402
from perinstance.supervisor import export_supervisor  # noqa: E402

# Every job watches this process and stops without publishing once it is gone (a SIGKILLed
# Snakemake's jobs would otherwise run on as orphans): src/perinstance/supervisor.py. Set anew by
# each snakemake that parses this file, so inside a SLURM job it names the job's own snakemake.
export_supervisor()


def experiment_config():
    """This invocation's config: its --configfile files (else ./config.yaml), then --config, validated.

    Each file is read strictly (duplicate keys refused) and stands on its own: nothing is merged in
    from config.yaml, so omitted keys take the schema's defaults. A bad value stops here, before the
    DAG is built, with one line naming the file and the key.
    """
    files = [str(f) for f in workflow.overwrite_configfiles] or ["config.yaml"]
    try:
        raw = {}
        for path in files:
            raw = merge_configs(raw, read_config_file(path))
        return validate_config(merge_configs(raw, dict(workflow.config_settings.overwrite_config or {})))
    except ConfigError as err:
        message = str(err)
        sys.exit(
            message if message.startswith("config file") else f"config file {', '.join(files)}: {message}"
        )


config.clear()
config.update(experiment_config())

PATHS = paths.ResultPaths(config["experiment"])
SEEDS = config["seeds"]
GROUPS = plan.all_groups(config)
UNLEARNING_JOBS = plan.unlearning_jobs(config)
REPLICATES = range(config["oracles"]["count"])
RUNS = range(config["unlearning"]["seeds"])
HOLDOUT_MODELS = range(config["proxies"]["holdout_models"])
ONE_MODEL_PER_JOB = config["models_per_job"] == "one"
# every model index of each batchable job
MODEL_INDICES = {"oracle": REPLICATES, "unlearn": RUNS, "holdout": HOLDOUT_MODELS}
TORCH_ENV = "../../envs/torch.yaml"
# Rules call the package through its CLI; src/ on PYTHONPATH makes that work in conda envs
# (where the package is not installed) exactly as in an installed virtualenv.
CLI = f"PYTHONPATH={workflow.basedir}/src${{PYTHONPATH:+:$PYTHONPATH}} python -m perinstance"


wildcard_constraints:
    seed=r"\d+",
    run=r"\d+",
    replicate=r"\d+",
    model=r"\d+",
    part=r"\d+",
    method="|".join(plan.UNLEARNING_METHODS),
    score=r"[a-z_0-9]+",
    group=r"[a-z0-9]+",


def config_digest(*sections):
    """Short hash of config sections (all of them when none are named): a params value that reruns
    a rule when they change."""
    return digest_of(config, *sections)


# Every job reads the config of the invocation that started it: a file named by the digest of its
# content, so it never changes once written and another invocation (refused by the lock, a dry run,
# a different config) cannot alter what a running workflow reads. It is written in `onstart`, which
# Snakemake calls only for a real run after taking the lock; dry runs, --lint, --unlock and --report
# write nothing.
RUN_CONFIG = PATHS.run_config(config_digest())


def cli_command(wildcards, input):
    """How a job calls the package. It holds the checkout's absolute path; as a derived param (it
    takes `input`) it is left out of the params rerun trigger, so a moved checkout reruns nothing."""
    return CLI


def run_config(wildcards, input):
    """The config file a job reads. Its path changes with any config change; as a derived param it
    does not rerun the job: the `digest` param does, for the config sections the job reads."""
    return RUN_CONFIG


# ---- shared by every job rule (command, config, log, benchmark, resources) ----------------


def job_params(*sections, **extra):
    """params of a job rule: the config file, the CLI, and the digest of the config sections the
    job reads (all of them when none are named), which reruns it when they change."""
    return {"config_file": run_config, "cli": cli_command, "digest": config_digest(*sections), **extra}


def job_shell(name):
    return jobs.shell_command(name)


def job_threads(name):
    """Compute jobs (they take --threads) get config key `threads`; table and figure jobs one."""
    return config["threads"] if jobs.JOBS[name].compute else 1


def rule_wildcards(name):
    """The wildcards of job `name`'s rule: the job's own, and a batchable job's model index when
    each model has its job (models_per_job: one)."""
    declared = jobs.JOBS[name]
    extra = (declared.models,) if declared.models and ONE_MODEL_PER_JOB else ()
    return declared.wildcards + extra


def job_log(name):
    return PATHS.log(name, rule_wildcards(name))


def job_benchmark(name):
    return PATHS.benchmark(name, rule_wildcards(name))


# ---- batchable jobs: one job per model, or one per batch of models (models_per_job) ---------


def rule_models(name):
    """The model indices in the file names of batchable job `name`'s rule: its index wildcard
    (e.g. "{replicate}") when each model has its job, else every index."""
    return [f"{{{jobs.JOBS[name].models}}}"] if ONE_MODEL_PER_JOB else list(MODEL_INDICES[name])


def job_models(name, wildcards):
    """The model indices that one job of batchable job `name` trains."""
    index = jobs.JOBS[name].models
    return [int(wildcards[index])] if ONE_MODEL_PER_JOB else list(MODEL_INDICES[name])


def models_param(name):
    """The params entry with the job's model indices. A derived param (it takes `input`): the
    files and their contents do not depend on how the models are batched, so regrouping them
    reruns nothing."""
    return {jobs.JOBS[name].models_param: lambda wildcards, input: job_models(name, wildcards)}


def compute_resources(runtime):
    """Training-sized jobs: memory grows on each retry after an out-of-memory kill."""
    return {"mem_mb": lambda wildcards, attempt: 4000 * attempt, "runtime": runtime}


def table_resources(runtime=10):
    return {"mem_mb": lambda wildcards, attempt: 2000 * attempt, "runtime": runtime}


# ---- inputs computed from the plan --------------------------------------------------------


def training_runs():
    return [PATHS.training_run(seed) for seed in SEEDS]


def all_grad_norms():
    return [PATHS.grad_norms(seed) for seed in SEEDS]


# privacy.norm_jobs > 1: each run's checkpoints are shared by that many grad_norms_part jobs
SPLIT_NORMS = config["privacy"]["norm_jobs"] > 1


def norm_parts(wildcards):
    """The part files a grad_norms job merges; none when one job scores every checkpoint."""
    parts = range(config["privacy"]["norm_jobs"]) if SPLIT_NORMS else []
    return [PATHS.grad_norms_part(wildcards.seed, part) for part in parts]


def holdout_files():
    return [PATHS.holdout(m) for m in HOLDOUT_MODELS]


def published_cscores():
    """The user-provided C-score file as an input, so a missing file fails before any job runs."""
    path = config["proxies"]["published_cscores"]
    return [path] if path else []


def group_oracles(wildcards):
    return [PATHS.oracle_evaluation(wildcards.score, wildcards.group, r) for r in REPLICATES]


def all_oracles():
    return [PATHS.oracle_evaluation(g.score, g.group, r) for g in GROUPS for r in REPLICATES]


def unlearning_files(kind):
    return [PATHS.unlearning(*run)[kind] for run in UNLEARNING_JOBS]


def unlearning_originals(wildcards):
    """The original model of each unlearning run of one unlearn job, in run order."""
    return [PATHS.training_run(plan.original_seed(config, run)) for run in job_models("unlearn", wildcards)]


def model_weights(paths):
    """Model weights (oracles, unlearned models, spawned oracles) as outputs: temporary unless
    config key keep_models, so Snakemake deletes each once the jobs that read it are done."""
    return paths if config["keep_models"] else temp(paths)


def unlearning_outputs():
    """Every file of the unlearning runs of one unlearn job, by kind (curve, examples, ...)."""
    runs = [PATHS.unlearning("{method}", "{score}", "{group}", r) for r in rule_models("unlearn")]
    files = {kind: [run[kind] for run in runs] for kind in runs[0]}
    return {kind: model_weights(f) if kind in ("model", "barrier_model") else f for kind, f in files.items()}


def barrier_methods(wildcards):
    return plan.barrier_methods(config, plan.Group(wildcards.score, wildcards.group))


def barrier_endpoints(wildcards):
    """The unlearned endpoints of one barrier group: run 0's model after barrier.unlearning_steps
    steps (the same for every group), for each of barrier_methods."""
    return [
        PATHS.unlearning(m, wildcards.score, wildcards.group, 0)["barrier_model"]
        for m in barrier_methods(wildcards)
    ]


def all_barrier_paths():
    """Barrier path tables of every barrier group: the privacy-loss groups and the random groups."""
    return [PATHS.barrier_paths(g.score, g.group) for g in plan.barrier_groups(config)]
