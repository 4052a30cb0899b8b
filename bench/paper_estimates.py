"""GPU-hours and disk of the paper configs, estimated from first principles (no GPU was ever lent).

    python bench/paper_estimates.py        # both paper configs -> bench/results/paper-estimates.json
    python bench/paper_estimates.py --configs workflow/configs/test.yaml --no-cpu-anchor --out /tmp/x.json

For each config (read and validated by `perinstance.config`, groups and unlearning runs from
`perinstance.plan`, schedules from `perinstance.training`) and each rule family the script counts
what the package's code does, job by job:

  work   examples through a training step (SGD steps x batch: every presentation), through the
         per-example gradient-norm engine (examples x scored checkpoints), and through forward-only
         evaluation (history rows, EL2N logits, oracle / unlearning evaluations, barrier lambdas)
  FLOPs  per-example FLOPs of the config's model counted with torch.utils.flop_counter.FlopCounterMode
         (convolutions and matmuls only) for a forward, a plain training step, the training step with
         in-batch norms (pergrad.loss_backward_with_norms) and the norms-only engine
         (pergrad.per_example_grad_norms_fast), the last two with the per-layer forms the engine
         picks on CUDA
  hours  FLOPs / sustained throughput, for a range of fractions of A100 / H100 / H200 peaks, per
         family and in total, and a wall-clock lower bound on N GPUs from the DAG's phases
  disk   bytes of every result file category (model state and optimizer state measured with
         torch.save, arrays from their shapes and dtypes)

and, as a measured anchor, times a plain and a norm-recording training step of the config's model at
batch 32 on this CPU (1 thread, interleaved rounds) to give the CPU-hours the same FLOPs would take.
Every assumption is a field of the result JSON (`assumptions`); what is left out is listed there.
"""

from __future__ import annotations

import argparse
import io as _io
import json
import math
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from perinstance import pergrad, plan  # noqa: E402
from perinstance.config import DATASET_SIZES, load_config, train_size  # noqa: E402
from perinstance.models import build_model, count_parameters  # noqa: E402
from perinstance.optim import SGD  # noqa: E402
from perinstance.retrain import lean_config  # noqa: E402
from perinstance.training import (  # noqa: E402
    checkpoint_steps,
    early_epoch,
    optimizer_state_step,
    steps_per_epoch,
)


def _shown(path: str | Path) -> str:
    """A path relative to the checkout where it lies inside it (result files name no home directory)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _bench_module(name: str):
    """A sibling benchmark script as a module (bench/ is no package; `workflow` is a folder too)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_paper_estimates_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def machine() -> dict[str, Any]:
    """cores, CPU model, python, torch, load average: bench/workflow.py's record of the machine."""
    return _bench_module("workflow").machine()


PAPER_CONFIGS = ("workflow/configs/paper-cifar10.yaml", "workflow/configs/paper-svhn.yaml")
FAMILIES = ("train", "holdout", "grad_norms", "oracle", "spawned_oracle", "unlearn", "barrier", "tables")
# Jobs that only read and write tables (no model is run); their cost is counted as zero
TABLE_JOBS = (
    "privacy_loss",
    "scores",
    "robustness",
    "proxies",
    "correlations",
    "groups",
    "steps",
    "difficulty",
    "budget",
    "figure*",
    "claims",
)
# torchvision datasets keep their official split (perinstance.data): train size (checked against
# perinstance.config.DATASET_SIZES), test size, classes, input shape
TORCHVISION = {
    "cifar10": (50_000, 10_000, 10, (3, 32, 32)),
    "svhn": (73_257, 26_032, 10, (3, 32, 32)),
    "mnist": (60_000, 10_000, 10, (1, 28, 28)),
    "fashionmnist": (60_000, 10_000, 10, (1, 28, 28)),
}
# Dense peaks (no structured sparsity), vendor data sheets, SXM parts. H200 = H100 compute with
# 141 GB HBM3e at 4.8 TB/s (more bandwidth helps the memory-bound GroupNorm, not the peaks).
GPUS = {
    "A100-SXM": {"fp32_tflops": 19.5, "tf32_tflops": 156.0},
    "H100-SXM": {"fp32_tflops": 67.0, "tf32_tflops": 494.7},
    "H200-SXM": {"fp32_tflops": 67.0, "tf32_tflops": 494.7},
}
# sustained fractions of a peak: (name, peak key, fraction); the planning range is the first two
THROUGHPUTS = (
    ("fp32_25pct", "fp32_tflops", 0.25),
    ("fp32_50pct", "fp32_tflops", 0.50),
    ("tf32_25pct", "tf32_tflops", 0.25),
    ("tf32_50pct", "tf32_tflops", 0.50),
)
WALL_GPUS = (1, 8, 32, 128)
# raw bytes per row / element of the non-weight files (uncompressed npz: exact; Parquet: raw column bytes)
PRESENTATION_BYTES = (
    4 + 4 + 1 + 4 + 4
)  # dynamics.npz: step int32, example int32, correct bool, loss, norm f32
FORGET_RECORD_BYTES = 8 + 8 + 4 + 4 + 1  # unlearn *_forget.parquet: step, index int64, loss, phi f32, correct
EVAL_FORGET_BYTES = 8 + 4 + 4 + 1  # save_evaluation: forget_index int64, losses, phi f32, correct bool
EVAL_TEST_BYTES = 4 + 1  # save_evaluation: test_losses f32, test_correct bool
BARRIER_ROW_BYTES = 7 * 8  # barrier parquet: index, label, lambda, loss, barrier, steps_run, distance
PRIVACY_LONG_ROW_BYTES = 8 + 8 + 8 + 1 + 8 + 8  # index, label, seed, estimator (dict), order, rdp


# --------------------------------------------------------------------------- inputs


def dataset_sizes(config: dict[str, Any]) -> dict[str, Any]:
    """n_train, n_test, classes and input shape of the config's dataset, without downloading anything."""
    spec = config["dataset"]
    n_train = train_size(spec)
    name = spec["name"]
    if name in TORCHVISION:
        full_train, full_test, classes, shape = TORCHVISION[name]
        if DATASET_SIZES[name] != ("train", full_train):
            raise ValueError(f"{name}: perinstance.config.DATASET_SIZES says {DATASET_SIZES[name]}")
        n_test = full_test if spec["n_test"] is None else min(full_test, spec["n_test"])
        return {"n_train": n_train, "n_test": n_test, "num_classes": classes, "input_shape": shape}
    from perinstance.data import load_dataset  # embedded / synthetic sets load offline in seconds

    data = load_dataset(**spec)
    if len(data.train) != n_train:
        raise ValueError(f"{name}: perinstance.config.train_size says {n_train}, the data {len(data.train)}")
    return {
        "n_train": n_train,
        "n_test": len(data.test),
        "num_classes": data.num_classes,
        "input_shape": tuple(data.input_shape),
    }


def build(config: dict[str, Any], sizes: dict[str, Any]) -> torch.nn.Module:
    spec = config["model"]
    torch.manual_seed(0)
    return build_model(
        spec["name"],
        width=spec["width"],
        norm_groups=spec["norm_groups"],
        num_classes=sizes["num_classes"],
        input_shape=sizes["input_shape"],
    )


def _saved_bytes(obj: Any) -> int:
    buffer = _io.BytesIO()
    torch.save(obj, buffer)  # what perinstance.io.save_torch writes (torch.save through a file object)
    return buffer.tell()


def model_bytes(config: dict[str, Any], sizes: dict[str, Any]) -> dict[str, int]:
    """Parameter count, raw float32 bytes, and the bytes torch.save writes for the state_dict and for the
    optimizer state (SGD momentum buffers after one step, as training.py saves it)."""
    model = build(config, sizes)
    params = count_parameters(model)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    training = config["training"]
    opt = SGD(
        model.parameters(),
        lr=training["lr"],
        momentum=training["momentum"],
        weight_decay=training["weight_decay"],
    )
    x = torch.randn(2, *sizes["input_shape"])
    y = torch.zeros(2, dtype=torch.long)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    return {
        "parameters": params,
        "raw_state_bytes": state,
        "model_file_bytes": _saved_bytes(model.state_dict()),
        "optimizer_file_bytes": _saved_bytes(opt.state_dict()),
    }


def _cuda_forms():
    """Context: the engine's per-layer choice as on CUDA (unfold + bmm wherever it materialises
    per-example kernel gradients; ghost where its cost rule says so, the same rule on every device)."""

    class _Forms:
        def __enter__(self):
            self.saved = pergrad._conv_materialize_backend
            pergrad._conv_materialize_backend = lambda x, rows: "unfold"

        def __exit__(self, *exc):
            pergrad._conv_materialize_backend = self.saved

    return _Forms()


def flops_per_example(config: dict[str, Any], sizes: dict[str, Any], batch: int = 4) -> dict[str, Any]:
    """FlopCounterMode FLOPs per example (convolutions and matmuls; elementwise ops are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(config, sizes).train()
    torch.manual_seed(1)
    x = torch.randn(batch, *sizes["input_shape"])
    y = torch.randint(0, sizes["num_classes"], (batch,))

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / batch

    def plain():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    def fused():
        model.zero_grad(set_to_none=True)
        pergrad.loss_backward_with_norms(model, x, y)

    with torch.no_grad():
        forward = count(lambda: model.eval()(x))
    model.train()
    step = count(plain)
    with _cuda_forms():
        fused_step = count(fused)
        norms = count(lambda: pergrad.per_example_grad_norms_fast(model, x, y, chunk_size=batch))
    model.zero_grad(set_to_none=True)
    return {
        "forward": forward,
        "plain_step": step,
        "fused_step": fused_step,
        "norms_only": norms,
        "plain_step_over_forward": step / forward,
        "fused_step_over_plain_step": fused_step / step,
        "norms_only_over_plain_step": norms / step,
        "counted_at_batch": batch,
    }


# --------------------------------------------------------------------------- work per family


def _examples_in_steps(n: int, batch: int, steps: int) -> int:
    """Examples in the first `steps` shuffled batches over n examples (short last batch per epoch)."""
    spe = math.ceil(n / batch)
    epochs, rest = divmod(steps, spe)
    return epochs * n + min(rest * batch, n)


def _lean_run(config: dict[str, Any], n: int, n_test: int, epochs: int) -> dict[str, int]:
    """A retrain.py run (lean_config): plain steps, history at epoch 0 and at the end, EL2N logits."""
    lean = lean_config(config, epochs)
    training = lean["training"]
    spe = steps_per_epoch(n, training["batch_size"], training["sampling"])
    sgd = epochs * n if training["sampling"] == "shuffle" else epochs * spe * training["batch_size"]
    history_rows = 1 + 1  # train_run: epoch 0, then eval_every_epochs = epochs -> the final epoch
    el2n = early_epoch(training)
    forward = history_rows * (n + n_test) + (n if el2n <= epochs else 0)
    return {"steps": epochs * spe, "sgd_examples": sgd, "forward_examples": forward}


def unlearning_steps_range(config: dict[str, Any]) -> tuple[int, int, int]:
    """(fewest, most) steps of one unlearning run proper, and the barrier endpoint's step.

    The criterion counts evaluations from step 0, so it can hold first at (consecutive - 1) * eval_every;
    the run then stops at max(that + stop_margin, max(gap_budgets)) (evaluate_until), never after
    k_max, and trains on to barrier.unlearning_steps without evaluating if that is later.
    """
    spec, bands = config["unlearning"], config["oracles"]
    k_max = spec["k_max"]
    snapshot = config["barrier"]["unlearning_steps"]
    if spec["stop_when_unlearned"]:
        earliest = (bands["consecutive"] - 1) * spec["eval_every"] + spec["stop_margin"]
        low = min(k_max, max(earliest, max(spec["gap_budgets"])))
    else:
        low = k_max
    return low, k_max, snapshot


def _evaluations(steps_run: int, every: int) -> int:
    """unlearn(): step 0, every `every` steps, and the final step when it is off the grid."""
    return 1 + steps_run // every + (1 if steps_run % every else 0)


def count_work(config: dict[str, Any], sizes: dict[str, Any]) -> dict[str, Any]:
    """Jobs, and examples through training steps, the norm engine and forward passes, per family.

    Every count is a [low, high] pair; only the unlearning runs (and the tables that hold their
    records) differ between the two, by where the stopping criterion ends each run.
    """
    n, n_test = sizes["n_train"], sizes["n_test"]
    training = config["training"]
    seeds = len(config["seeds"])
    one = config["models_per_job"] == "one"
    spe = steps_per_epoch(n, training["batch_size"], training["sampling"])
    total_steps = training["epochs"] * spe
    ckpts = checkpoint_steps(training["checkpoints"], spe, training["epochs"])
    scored = [s for s in ckpts if s < total_steps]  # grad_norms: the final weights stand for no step
    m = config["groups"]["size"]
    groups = plan.all_groups(config)
    barrier_groups = plan.barrier_groups(config)
    runs = plan.unlearning_jobs(config)
    replicates = config["oracles"]["count"]
    holdouts = config["proxies"]["holdout_models"]
    n_retain = n - m  # groups have m distinct members

    def pair(value) -> list[int]:
        return [int(value), int(value)] if not isinstance(value, list) else [int(v) for v in value]

    fam: dict[str, dict[str, Any]] = {}
    # train: fused steps (in-batch norms) when dynamics.batch_grad_norms, history rows every
    # eval_every_epochs epochs (+ epoch 0, + the final epoch), EL2N logits on D once
    every = training["eval_every_epochs"]
    history_rows = 1 + sum(
        1 for e in range(1, training["epochs"] + 1) if e % every == 0 or e == training["epochs"]
    )
    per = {
        "sgd_examples": training["epochs"] * n
        if training["sampling"] == "shuffle"
        else total_steps * training["batch_size"],
        "forward_examples": history_rows * (n + n_test) + n,
    }
    fam["train"] = {
        "jobs": seeds,
        "models": seeds,
        "steps_per_job": total_steps,
        "steps_per_epoch": spe,
        "step_kind": "fused" if training["dynamics"]["batch_grad_norms"] else "plain",
        "history_rows": history_rows,
        "checkpoints_per_run": len(ckpts),
        "sgd_examples_per_model": pair(per["sgd_examples"]),
        "forward_examples_per_model": pair(per["forward_examples"]),
    }
    # holdout: lean run on round(fraction * n) examples, then logits on all of D
    n_h = int(round(config["proxies"]["holdout_fraction"] * n))
    epochs_h = config["proxies"]["holdout_epochs"] or training["epochs"]
    lean = _lean_run(config, n_h, n_test, epochs_h)
    fam["holdout"] = {
        "jobs": holdouts if one else 1,
        "models": holdouts,
        "examples_trained_on": n_h,
        "steps_per_model": lean["steps"],
        "step_kind": "plain",
        "sgd_examples_per_model": pair(lean["sgd_examples"]),
        "forward_examples_per_model": pair(lean["forward_examples"] + n),
    }
    # grad_norms: norms-only engine on all of D at every checkpoint before the final step
    fam["grad_norms"] = {
        "jobs": seeds,
        "models": seeds,
        "checkpoints_scored": len(scored),
        "norm_batch_size": config["privacy"]["norm_batch_size"],
        "norm_examples_per_model": pair(n * len(scored)),
    }
    # oracle: lean run on D minus G, then save_evaluation (forget group + test split)
    lean = _lean_run(config, n_retain, n_test, training["epochs"])
    fam["oracle"] = {
        "jobs": len(groups) * (replicates if one else 1),
        "models": len(groups) * replicates,
        "groups": len(groups),
        "steps_per_model": lean["steps"],
        "step_kind": "plain",
        "sgd_examples_per_model": pair(lean["sgd_examples"]),
        "forward_examples_per_model": pair(lean["forward_examples"] + m + n_test),
    }
    # spawned_oracle: lean run of the epochs after barrier.spawn_epoch on D minus G
    spawn_epochs = training["epochs"] - config["barrier"]["spawn_epoch"]
    lean = _lean_run(config, n_retain, n_test, spawn_epochs)
    fam["spawned_oracle"] = {
        "jobs": len(barrier_groups),
        "models": len(barrier_groups),
        "steps_per_model": lean["steps"],
        "step_kind": "plain",
        "sgd_examples_per_model": pair(lean["sgd_examples"]),
        "forward_examples_per_model": pair(lean["forward_examples"]),
    }
    # unlearn: plain steps at the unlearning batch size on D minus G, evaluations every eval_every steps
    spec = config["unlearning"]
    batch = spec["batch_size"] or training["batch_size"]
    low, high, snapshot = unlearning_steps_range(config)
    eval_size = (
        m
        + min(spec["eval_retain_size"] or n_retain, n_retain)
        + min(spec["eval_test_size"] or n_test, n_test)
    )
    trained = [max(s, snapshot) for s in (low, high)]
    evals = [_evaluations(s, spec["eval_every"]) for s in (low, high)]
    pairs_per_run = {(r.method, r.score, r.group) for r in runs}
    fam["unlearn"] = {
        "jobs": len(runs) if one else len(pairs_per_run),
        "models": len(runs),
        "batch_size": batch,
        "steps_run_per_model": [low, high],
        "steps_trained_per_model": trained,
        "evaluations_per_model": evals,
        "examples_per_evaluation": eval_size,
        "step_kind": "plain",
        "sgd_examples_per_model": [_examples_in_steps(n_retain, batch, s) for s in trained],
        "forward_examples_per_model": [e * eval_size + m + n_test for e in evals],
    }
    # barrier: lambdas forward passes of the forget group per endpoint (unlearned methods + spawned oracle)
    endpoints = [len(plan.barrier_methods(config, g)) + 1 for g in barrier_groups]
    lambdas = config["barrier"]["lambdas"]
    fam["barrier"] = {
        "jobs": len(barrier_groups),
        "models": len(barrier_groups),
        "endpoints": sum(endpoints),
        "lambdas": lambdas,
        "forward_examples_total": pair(sum(e * lambdas * m for e in endpoints)),
    }
    fam["tables"] = {"jobs_named": list(TABLE_JOBS), "note": "no model runs; cost counted as zero"}
    for name, f in fam.items():
        if name == "tables":
            continue
        models = f["models"]
        for kind in ("sgd_examples", "norm_examples", "forward_examples"):
            per_model = f.get(f"{kind}_per_model")
            if per_model is not None:
                f[kind] = [models * v for v in per_model]
            elif f"{kind}_total" in f:
                f[kind] = f.pop(f"{kind}_total")
            else:
                f[kind] = [0, 0]
    return fam


def add_flops(families: dict[str, Any], flops: dict[str, float]) -> None:
    for name, f in families.items():
        if name == "tables":
            f["flops"] = [0.0, 0.0]
            continue
        step = flops["fused_step"] if f.get("step_kind") == "fused" else flops["plain_step"]
        f["flops"] = [
            f["sgd_examples"][i] * step
            + f["norm_examples"][i] * flops["norms_only"]
            + f["forward_examples"][i] * flops["forward"]
            for i in (0, 1)
        ]


# --------------------------------------------------------------------------- hours


def gpu_hours(families: dict[str, Any]) -> dict[str, Any]:
    """GPU-hours per family and in total for every GPU and sustained fraction: [low, high] work."""
    out: dict[str, Any] = {}
    for gpu, peaks in GPUS.items():
        out[gpu] = {}
        for name, key, fraction in THROUGHPUTS:
            rate = peaks[key] * 1e12 * fraction
            per = {fam: [v / rate / 3600 for v in f["flops"]] for fam, f in families.items()}
            per["total"] = [sum(per[fam][i] for fam in families) for i in (0, 1)]
            out[gpu][name] = {"sustained_tflops": peaks[key] * fraction, "hours": per}
    return out


def wall_clock(families: dict[str, Any], rate_flops: float, gpus: int) -> list[float]:
    """Lower bound of the wall-clock hours on `gpus` GPUs (one job per GPU, perfect packing, no start-up).

    Phase 1 (train, holdout, grad_norms; grad_norms after its train job): max(work / gpus, the longest
    chain). Tables in between cost nothing. Phase 2 (oracle, spawned_oracle, unlearn after its group's
    oracles, barrier after its unlearned and spawned endpoints): the same rule.
    """

    def job_hours(fam: str, i: int) -> float:
        f = families[fam]
        return f["flops"][i] / max(f["jobs"], 1) / rate_flops / 3600

    def total(fams, i) -> float:
        return sum(families[f]["flops"][i] for f in fams) / rate_flops / 3600

    out = []
    for i in (0, 1):
        phase1 = max(
            total(("train", "holdout", "grad_norms"), i) / gpus,
            job_hours("train", i) + job_hours("grad_norms", i),
            job_hours("holdout", i),
        )
        phase2 = max(
            total(("oracle", "spawned_oracle", "unlearn", "barrier"), i) / gpus,
            max(job_hours("oracle", i) + job_hours("unlearn", i), job_hours("spawned_oracle", i))
            + job_hours("barrier", i),
        )
        out.append(phase1 + phase2)
    return out


# --------------------------------------------------------------------------- disk


def disk(
    config: dict[str, Any], sizes: dict[str, Any], families: dict[str, Any], weights: dict[str, int]
) -> dict[str, Any]:
    """Bytes per file category ([low, high]), and totals with and without the removable weight categories."""
    n, n_test, classes = sizes["n_train"], sizes["n_test"], sizes["num_classes"]
    seeds = len(config["seeds"])
    m = config["groups"]["size"]
    model = weights["model_file_bytes"]
    spe = families["train"]["steps_per_epoch"]
    total_steps = families["train"]["steps_per_job"]
    has_opt = optimizer_state_step(config, spe) is not None
    train_f, unl = families["train"], families["unlearn"]
    presentations = train_f["sgd_examples"][0] // seeds
    dynamics = presentations * PRESENTATION_BYTES + total_steps * 8 + n * (8 + 8) + n * classes * 4
    orders = sorted(
        set(config["privacy"]["orders"]) | {config["privacy"]["alpha"], 4 * config["privacy"]["alpha"]}
    )
    forget_records = [unl["models"] * e * m * FORGET_RECORD_BYTES for e in unl["evaluations_per_model"]]
    cats: dict[str, list[int]] = {
        "training_checkpoints": seeds * train_f["checkpoints_per_run"] * model,
        "optimizer_states": seeds * (weights["optimizer_file_bytes"] if has_opt else 0),
        "final_models": seeds * model,
        "training_dynamics": seeds * dynamics,
        "grad_norm_arrays": seeds * n * (families["grad_norms"]["checkpoints_scored"] * 4 + 8 + 8),
        "holdout_predictions": families["holdout"]["models"] * n * (1 + 4 + 8),
        "oracle_weights": families["oracle"]["models"] * model,
        "oracle_evaluations": families["oracle"]["models"]
        * (m * EVAL_FORGET_BYTES + n_test * EVAL_TEST_BYTES),
        "spawned_oracles": families["spawned_oracle"]["models"] * model,
        "unlearned_final_weights": unl["models"] * model,
        "barrier_endpoints": unl["models"] * model,  # every run saves one; the barrier jobs read run 0's
        "unlearning_forget_records": forget_records,
        "unlearning_final_evaluations": unl["models"] * (m * EVAL_FORGET_BYTES + n_test * EVAL_TEST_BYTES),
        "barrier_tables": families["barrier"]["endpoints"]
        * config["barrier"]["lambdas"]
        * m
        * BARRIER_ROW_BYTES,
        # privacy_long (every example x seed x estimator x order), the per-example privacy, proxy and
        # scores tables (~8 bytes x (6 + 2 seeds + ~10 proxy columns) each), the concatenated forget
        # records (unlearning_examples.parquet, as large as the per-run records again)
        "tables": [
            n * seeds * 2 * len(orders) * PRIVACY_LONG_ROW_BYTES + 3 * n * (16 + 2 * seeds) * 8 + r
            for r in forget_records
        ],
    }
    cats = {k: v if isinstance(v, list) else [v, v] for k, v in cats.items()}
    removable = ("oracle_weights", "unlearned_final_weights", "barrier_endpoints", "spawned_oracles")
    total = [sum(v[i] for v in cats.values()) for i in (0, 1)]
    without = {k: [total[i] - cats[k][i] for i in (0, 1)] for k in (*removable, "training_checkpoints")}
    without["all_keep_models_false"] = [total[i] - sum(cats[k][i] for k in removable) for i in (0, 1)]
    without["all_keep_models_false_and_checkpoints"] = [
        without["all_keep_models_false"][i] - cats["training_checkpoints"][i] for i in (0, 1)
    ]
    # a training job's resume.pt (model + optimizer + the recorder so far) lives in its .partial directory
    # until the run publishes; retrained models' .run directories are discarded once distilled
    transient = model + weights["optimizer_file_bytes"] + presentations * PRESENTATION_BYTES
    return {
        "categories": cats,
        "keep_models_removes": list(removable),
        "config_keep_models": config["keep_models"],
        "total_all_kept": total,
        "total_without": without,
        "transient_resume_state_per_training_job": transient,
    }


# --------------------------------------------------------------------------- one config


def estimate(path: str | Path, *, flop_batch: int = 4) -> dict[str, Any]:
    """Every number of one config except the CPU anchor (no timing)."""
    config = load_config(path)
    sizes = dataset_sizes(config)
    weights = model_bytes(config, sizes)
    flops = flops_per_example(config, sizes, batch=flop_batch)
    families = count_work(config, sizes)
    add_flops(families, flops)
    hours = gpu_hours(families)
    walls = {}
    for gpu, peaks in GPUS.items():
        for name, key, fraction in THROUGHPUTS[:2]:
            rate = peaks[key] * 1e12 * fraction
            walls[f"{gpu}/{name}"] = {str(g): wall_clock(families, rate, g) for g in WALL_GPUS}
    return {
        "config": _shown(path),
        "experiment": config["experiment"],
        "dataset": {"name": config["dataset"]["name"], **sizes, "input_shape": list(sizes["input_shape"])},
        "model": {**config["model"], **weights},
        "seeds": len(config["seeds"]),
        "groups": len(plan.all_groups(config)),
        "barrier_groups": len(plan.barrier_groups(config)),
        "unlearning_runs": len(plan.unlearning_jobs(config)),
        "oracles_per_group": config["oracles"]["count"],
        "holdout_models": config["proxies"]["holdout_models"],
        "models_per_job": config["models_per_job"],
        "flops_per_example": flops,
        "families": families,
        "total_flops": [sum(f["flops"][i] for f in families.values()) for i in (0, 1)],
        "gpu_hours": hours,
        "wall_clock_hours_lower_bound": walls,
        "disk_bytes": disk(config, sizes, families, weights),
    }


# --------------------------------------------------------------------------- CPU anchor


def cpu_anchor(
    config_path: str | Path, flops: dict[str, float], *, batch: int = 32, rounds: int = 5, warmup: int = 1
) -> dict[str, Any]:
    """Median seconds of a plain and of a norm-recording training step at `batch` on this CPU
    (1 thread, rounds interleaved), and the sustained FLOP/s they imply."""
    from perinstance.allocator import retain_freed_memory

    retain_freed_memory()  # as every job does
    torch.set_num_threads(1)
    config = load_config(config_path)
    sizes = dataset_sizes(config)
    training = config["training"]
    models = {k: build(config, sizes).train() for k in ("plain", "fused")}
    opts = {
        k: SGD(m.parameters(), lr=1e-3, momentum=training["momentum"], weight_decay=training["weight_decay"])
        for k, m in models.items()
    }
    torch.manual_seed(0)
    x = torch.randn(batch, *sizes["input_shape"])
    y = torch.randint(0, sizes["num_classes"], (batch,))

    def step(kind: str) -> tuple[float, float]:
        model, opt = models[kind], opts[kind]
        wall, cpu = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        if kind == "plain":
            F.cross_entropy(model(x), y).backward()
        else:
            pergrad.loss_backward_with_norms(model, x, y)
        opt.step()
        return time.perf_counter() - wall, time.process_time() - cpu

    wall_s: dict[str, list[float]] = {"plain": [], "fused": []}
    cpu_s: dict[str, list[float]] = {"plain": [], "fused": []}
    for r in range(warmup + rounds):
        for kind in ("plain", "fused") if r % 2 == 0 else ("fused", "plain"):
            wall, cpu = step(kind)
            if r >= warmup:
                wall_s[kind].append(wall)
                cpu_s[kind].append(cpu)
    med = {
        f"{kind}_step_{what}_s": statistics.median(values[kind])
        for what, values in (("wall", wall_s), ("cpu", cpu_s))
        for kind in values
    }
    return {
        "config": _shown(config_path),
        "batch": batch,
        "threads": 1,
        "rounds": rounds,
        "warmup": warmup,
        **med,
        "fused_over_plain_cpu": med["fused_step_cpu_s"] / med["plain_step_cpu_s"],
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "sustained_flops": flops["plain_step"] * batch / med["plain_step_cpu_s"],
        "what": "FlopCounterMode FLOPs of one plain training step / its median process CPU time (the "
        "machine is shared: wall time includes waiting for a core): the rate that converts every "
        "family's FLOPs into CPU-hours (forward-only passes at the eval batch size and the norm "
        "engine may run at another rate on a CPU)",
    }


# --------------------------------------------------------------------------- report


ASSUMPTIONS = {
    "precision": "the package trains in float32: no autocast, no TF32 setting of its own; PyTorch's defaults "
    "then let cuDNN convolutions use TF32 on Ampere/Hopper (torch.backends.cudnn.allow_tf32 = True) while "
    "matmuls stay full FP32 (torch.backends.cuda.matmul.allow_tf32 = False), among them the norm engine's "
    "batched matmuls (aten.bmm below)",
    "flops": "torch.utils.flop_counter.FlopCounterMode on the config's model built by perinstance.models: "
    "convolutions, convolution backward and matmuls only; GroupNorm, ReLU, the SGD update, the L1 term "
    "and SGLD noise, the engine's squares and sums are elementwise and not counted (memory-bound: they "
    "are what keeps sustained throughput far below peak)",
    "norm_engine_forms": "FLOPs of loss_backward_with_norms and per_example_grad_norms_fast counted with the "
    "per-layer forms the engine picks on CUDA (pergrad._conv_materialize_backend -> unfold + bmm; ghost "
    "where pergrad's cost rule says so, the same rule on every device); the CPU's grouped weight-gradient "
    "convolution computes the same products",
    "training_step": "plain step = forward + mean-loss backward as FlopCounterMode counts it (the "
    "stem's input gradient is skipped, so slightly under 3x forward); train jobs with "
    "training.dynamics.batch_grad_norms take the fused step (loss_backward_with_norms) instead",
    "sgd_examples": "every presentation: shuffle sampling shows each example once per epoch (epochs x n; "
    "the short last batch counted as it is); unlearning steps draw batches of unlearning.batch_size "
    "(null = training.batch_size) from shuffled epochs over D minus G",
    "forward_examples": "train: history rows (epoch 0, every eval_every_epochs, the final epoch) on "
    "the train and test splits + EL2N logits on D; lean retrains (holdout, oracle, spawned oracle; "
    "retrain.lean_config): history at epoch 0 and at the end + EL2N logits; holdout: logits on all "
    "of D; oracle and unlearn: "
    "save_evaluation on G and the test split; unlearn: every evaluation on G + eval_retain_size + "
    "eval_test_size; barrier: lambdas x |G| per endpoint",
    "unlearning_steps": "[low, high]: low = every run stops as early as its criterion allows, "
    "max((oracles.consecutive - 1) * eval_every + stop_margin, max(gap_budgets)), high = every run goes "
    "to k_max; every run trains at least barrier.unlearning_steps (the barrier endpoint)",
    "group_size": "every forget group has groups.size distinct members, so D minus G has n - size examples",
    "throughput": "sustained = a fraction of the dense peak (no sparsity), SXM parts: A100 19.5 TFLOP/s FP32 "
    "/ 156 TF32, H100 and H200 67 FP32 / 494.7 TF32 (H200 = H100 compute, more memory bandwidth); the "
    "planning range is 25-50 % of the FP32 peak (an FP32 model whose GroupNorms are memory-bound); "
    "25-50 % of the TF32 peak is an optimistic bound reached only if the convolutions dominate and run "
    "on tensor cores",
    "wall_clock": "lower bound on N GPUs: one job per GPU, perfect packing, no queueing or process start-up, "
    "two phases (train/holdout/grad_norms, then oracle/spawned_oracle/unlearn/barrier), each max(work / N, "
    "its longest chain of jobs)",
    "disk": "model and optimizer files: torch.save bytes of the state_dict (float32) and of the SGD state "
    "(momentum buffers); npz files uncompressed (perinstance.io.save_npz): exact array bytes; Parquet: raw "
    "column bytes, an upper bound (labels are dictionary/run-length encoded, values compressed); "
    "the barrier endpoints: every unlearning run saves one, the barrier jobs read run 0's",
    "left_out": "data loading and augmentation (crop_flip on the device), host-device copies, the checks "
    "of groups and oracles, table jobs and figures (no model runs), process start-up (~2-5 s a job), "
    "resume states (written every epoch, deleted at the end: transient), the retrained models' .run "
    "directories (discarded once distilled: transient), CSV logs and benchmarks",
    "table_jobs": "counted as zero: " + ", ".join(TABLE_JOBS),
}


def _gib(b: float) -> str:
    return f"{b / 2**30:,.1f}"


def _range(v: list[float], fmt: str = "{:,.1f}") -> str:
    low, high = fmt.format(v[0]), fmt.format(v[1])
    return low if low == high else f"{low}-{high}"


def _millions(fam: dict[str, Any], key: str) -> str:
    return _range([v / 1e6 for v in fam[key]]) if key in fam else "-"


def _hours_range(est: dict[str, Any], gpu: str, name: str) -> str:
    """Planning range: 50 % of the FP32 peak with the fewest unlearning steps .. 25 % and k_max."""
    hours = est["gpu_hours"][gpu]
    return _range([hours["fp32_50pct"]["hours"][name][0], hours["fp32_25pct"]["hours"][name][1]])


def print_report(result: dict[str, Any]) -> None:
    anchor = result.get("cpu_anchor")
    for est in result["configs"]:
        data, model, f = est["dataset"], est["model"], est["flops_per_example"]
        print(
            f"\n== {est['experiment']} ({est['config']}): {data['name']} {data['n_train']:,} train / "
            f"{data['n_test']:,} test, {model['name']} width {model['width']}, "
            f"{model['parameters']:,} parameters"
        )
        print(
            f"FLOPs per example: forward {f['forward'] / 1e9:.3f} G, plain step "
            f"{f['plain_step'] / 1e9:.3f} G ({f['plain_step_over_forward']:.2f}x forward), fused step "
            f"{f['fused_step_over_plain_step']:.3f}x plain, "
            f"norms only {f['norms_only_over_plain_step']:.3f}x plain"
        )
        header = ["family", "jobs", "SGD ex (M)", "norm ex (M)", "fwd ex (M)", "PFLOP", "A100 h", "H100 h"]
        header += ["H100 TF32 25%"] + (["CPU h"] if anchor else [])
        widths = [15, 5, 12, 11, 12, 14, 12, 12, 13, 16]
        print(" ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths))))
        opt = est["gpu_hours"]["H100-SXM"]["tf32_25pct"]["hours"]
        names = [*est["families"], "total"]
        for name in names:
            fam = est["families"].get(name, {})
            flops = fam["flops"] if name != "total" else est["total_flops"]
            cells = [name, str(fam.get("jobs", "")), _millions(fam, "sgd_examples")]
            cells += [_millions(fam, "norm_examples"), _millions(fam, "forward_examples")]
            cells += [_range([v / 1e15 for v in flops]), _hours_range(est, "A100-SXM", name)]
            cells += [_hours_range(est, "H100-SXM", name), _range(opt[name])]
            if anchor:
                cells.append(_range([v / anchor["sustained_flops"] / 3600 for v in flops], "{:,.0f}"))
            print(" ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))))
        print("(GPU-hours: 50 % of the FP32 peak, fewest unlearning steps .. 25 % and every run to k_max)")
        walls = est["wall_clock_hours_lower_bound"]

        def wall(gpu: str, n: str, walls=walls) -> str:
            return _range([walls[f"{gpu}/fp32_50pct"][n][0], walls[f"{gpu}/fp32_25pct"][n][1]])

        print(
            "wall-clock lower bound, hours, A100 / H100: "
            + ", ".join(
                f"{n} GPUs {wall('A100-SXM', n)} / {wall('H100-SXM', n)}" for n in map(str, WALL_GPUS)
            )
        )
        d = est["disk_bytes"]
        print(
            f"disk, GiB (model file {model['model_file_bytes'] / 2**20:.1f} MiB, "
            f"optimizer state {model['optimizer_file_bytes'] / 2**20:.1f} MiB):"
        )
        for cat, v in d["categories"].items():
            mark = " (keep_models: false removes)" if cat in d["keep_models_removes"] else ""
            print(f"  {cat:40s} {_range([b / 2**30 for b in v], '{:,.2f}'):>12s}{mark}")
        print(f"  {'TOTAL, all kept':40s} {_range([b / 2**30 for b in d['total_all_kept']], '{:,.2f}'):>12s}")
        for k, v in d["total_without"].items():
            print(f"  {'total without ' + k:40s} {_range([b / 2**30 for b in v], '{:,.2f}'):>12s}")
        print(f"  (the config sets keep_models: {str(d['config_keep_models']).lower()})")
    if anchor:
        print(
            f"\nCPU anchor ({result['machine']['cpu']}, 1 thread, batch {anchor['batch']}): plain step "
            f"{anchor['plain_step_cpu_s']:.2f} CPU-s, fused step {anchor['fused_step_cpu_s']:.2f} CPU-s "
            f"({anchor['fused_over_plain_cpu']:.2f}x), {anchor['sustained_flops'] / 1e9:.1f} GFLOP/s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", nargs="+", default=[str(REPO / p) for p in PAPER_CONFIGS])
    parser.add_argument("--no-cpu-anchor", action="store_true", help="skip the timed CPU steps")
    parser.add_argument("--anchor-rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "paper-estimates.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    estimates = [estimate(p) for p in args.configs]
    result: dict[str, Any] = {
        "benchmark": "GPU-hours and disk of the paper configs, first principles (bench/paper_estimates.py)",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "gpus": GPUS,
        "throughputs": [{"name": n, "peak": k, "fraction": f} for n, k, f in THROUGHPUTS],
        "assumptions": ASSUMPTIONS,
        "ranges": "every count, FLOP, hour and byte figure is [low, high]: low with every unlearning run "
        "stopping as early as its criterion allows, high with every run going to unlearning.k_max",
        "configs": estimates,
    }
    if not args.no_cpu_anchor:
        anchor = cpu_anchor(args.configs[0], estimates[0]["flops_per_example"], rounds=args.anchor_rounds)
        anchor["cpu_hours"] = {
            est["experiment"]: {
                **{
                    n: [v / anchor["sustained_flops"] / 3600 for v in f["flops"]]
                    for n, f in est["families"].items()
                },
                "total": [v / anchor["sustained_flops"] / 3600 for v in est["total_flops"]],
            }
            for est in estimates
        }
        result["cpu_anchor"] = anchor
        result["machine"]["load_average_after"] = machine()["load_average"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print_report(result)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
