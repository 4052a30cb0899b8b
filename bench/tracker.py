"""PrivacyTracker's training step against a plain training step (see bench/README.md).

On the default model (SmallCNN width 16, GroupNorm groups 4, mnist5k shapes 1x28x28, batch 64,
one torch thread), each round runs every variant for a few steps on the same batches, each on
its own copy of the model and its own momentum SGD (the default recipe: lr 0.05, momentum 0.9,
weight decay 2e-3); rounds are interleaved and their order rotates, so drifts of the machine
load hit every variant alike:

  plain              zero_grad, forward, mean-loss backward, SGD step
  tracker            zero_grad, PrivacyTracker.backward (forward + backward + in-batch norms,
                     recorded), SGD step
  fused_step         the same with pergrad.loss_backward_with_norms and no recording (the
                     tracker's bookkeeping is the difference)
  plain_inplace, tracker_inplace
                     the same model with ReLU(inplace=True)
  fallback_inplace   what a training step with norms cost on that model while the fast engine
                     refused in-place activations: plain backward + torch.func reference norms

It writes the median per-step wall and CPU seconds, the ratios of the medians, the medians of the
per-round ratios, every repeat, the machine load before and after, and each variant's largest
relative norm difference from the torch.func reference.

    nice -n 19 python bench/tracker.py --out bench/results/tracker-cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from pergrad import device_name  # noqa: E402  (bench/pergrad.py: the CPU or GPU model)

from perinstance import pergrad  # noqa: E402
from perinstance.data import load_dataset  # noqa: E402
from perinstance.models import build_model, count_parameters  # noqa: E402
from perinstance.optim import SGD  # noqa: E402
from perinstance.tracker import PrivacyTracker  # noqa: E402

VARIANTS = ("plain", "tracker", "fused_step", "plain_inplace", "tracker_inplace", "fallback_inplace")
BASELINE = {
    "plain": "plain",
    "tracker": "plain",
    "fused_step": "plain",
    "plain_inplace": "plain_inplace",
    "tracker_inplace": "plain_inplace",
    "fallback_inplace": "plain_inplace",
}


def git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def with_inplace_relu(model: nn.Module) -> nn.Module:
    """A copy of `model` whose nn.ReLU modules run in place (same weights, same function)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if type(module) is nn.ReLU:
            module.inplace = True
    return model


def make_variants(model: nn.Module, n: int, batch: int):
    """One step function per variant, each on its own copy of the model and optimizer."""
    inplace = with_inplace_relu(model)

    def optimizer(m):
        return SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-3)

    def plain(base):
        m = copy.deepcopy(base).train()
        opt = optimizer(m)

        def step(x, y, ids):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            opt.step()

        return step, m

    def tracked(base):
        m = copy.deepcopy(base).train()
        opt = optimizer(m)
        tracker = PrivacyTracker(m, n, batch, optimizer=opt)
        if tracker.fast_engine_problems:
            raise RuntimeError(f"the fast engine refuses the model: {tracker.fast_engine_problems}")

        def step(x, y, ids):
            opt.zero_grad(set_to_none=True)
            tracker.backward(x, y, ids)
            opt.step()

        step.tracker = tracker
        return step, m

    def fused(base):
        m = copy.deepcopy(base).train()
        opt = optimizer(m)

        def step(x, y, ids):
            opt.zero_grad(set_to_none=True)
            pergrad.loss_backward_with_norms(m, x, y)
            opt.step()

        return step, m

    def fallback(base):
        m = copy.deepcopy(base).train()
        opt = optimizer(m)

        def step(x, y, ids):
            opt.zero_grad(set_to_none=True)
            pergrad._plain_backward_then_reference(m, x, y)
            opt.step()

        return step, m

    return {
        "plain": plain(model),
        "tracker": tracked(model),
        "fused_step": fused(model),
        "plain_inplace": plain(inplace),
        "tracker_inplace": tracked(inplace),
        "fallback_inplace": fallback(inplace),
    }


def norm_errors(model: nn.Module, x, y) -> dict[str, float]:
    """Largest relative difference of the tracker's norms from the torch.func reference."""
    out = {}
    for name, m in (("tracker", model), ("tracker_inplace", with_inplace_relu(model))):
        m = copy.deepcopy(m).train()
        reference = pergrad.per_example_grad_norms_reference(m, x, y)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a fallback would warn
            got = PrivacyTracker(m, len(x), len(x)).backward(x, y, torch.arange(len(x)), lr=0.05).norms
        out[name] = float(((got - reference).abs() / reference.abs().clamp_min(1e-12)).max())
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--norm-groups", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps-per-round", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/tracker-cpu.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dataset = load_dataset("mnist5k")
    train = dataset.train
    n = len(train)
    model = build_model(
        "smallcnn", num_classes=10, input_shape=(1, 28, 28), width=args.width, norm_groups=args.norm_groups
    )
    variants = make_variants(model, n, args.batch)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=generator)
    batches = [order[s : s + args.batch] for s in range(0, n - args.batch + 1, args.batch)]

    wall: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    load_before = os.getloadavg()
    started = time.perf_counter()
    cursor = 0
    for round_ in range(args.warmup + args.repeats):
        chosen = [batches[(cursor + i) % len(batches)] for i in range(args.steps_per_round)]
        cursor += args.steps_per_round
        data = [(train.x[b], train.y[b], b) for b in chosen]
        rotation = round_ % len(VARIANTS)
        for name in VARIANTS[rotation:] + VARIANTS[:rotation]:
            step = variants[name][0]
            t0, c0 = time.perf_counter(), time.process_time()
            for x, y, ids in data:
                step(x, y, ids)
            t1, c1 = time.perf_counter(), time.process_time()
            if round_ >= args.warmup:
                wall[name].append((t1 - t0) / args.steps_per_round)
                cpu[name].append((c1 - c0) / args.steps_per_round)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()

    x, y = train.x[batches[0]], train.y[batches[0]]
    errors = norm_errors(model, x, y)
    results = {}
    for name in VARIANTS:
        base = BASELINE[name]
        median = statistics.median(wall[name])
        paired = [a / b for a, b in zip(wall[name], wall[base])]
        results[name] = {
            "baseline": base,
            "median_seconds_per_step": median,
            "median_cpu_seconds_per_step": statistics.median(cpu[name]),
            "ratio_of_medians": median / statistics.median(wall[base]),
            "cpu_ratio_of_medians": statistics.median(cpu[name]) / statistics.median(cpu[base]),
            "median_of_round_ratios": statistics.median(paired),
            "round_ratio_quartiles": [float(q) for q in np.quantile(paired, [0.25, 0.75])],
            "wall_seconds_per_step_all_rounds": wall[name],
        }
    tracker = variants["tracker"][0].tracker
    report = {
        "benchmark": "PrivacyTracker step vs plain training step (bench/tracker.py)",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "device": "cpu",
        "device_name": device_name(torch.device("cpu")),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads,
        "niceness": os.nice(0),
        "model": "smallcnn",
        "width": args.width,
        "norm_groups": args.norm_groups,
        "parameters": count_parameters(model),
        "input_shape": [1, 28, 28],
        "dataset": "mnist5k train split",
        "batch": args.batch,
        "optimizer": "perinstance.optim.SGD lr 0.05, momentum 0.9, weight decay 2e-3",
        "steps_per_round": args.steps_per_round,
        "warmup_rounds": args.warmup,
        "repeats": args.repeats,
        "timing": "per-step seconds of each variant per round (steps_per_round steps on the same "
        "batches), rounds interleaved with rotating order; medians over rounds after warm-up",
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "bench_wall_seconds": elapsed,
        "note": args.note,
        "goal": "tracker ratio_of_medians <= 1.2",
        "tracker_steps_recorded": tracker.steps,
        "max_rel_err_vs_reference": errors,
        "variants": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    for name in VARIANTS:
        r = results[name]
        print(
            f"{name:18s} {1e3 * r['median_seconds_per_step']:7.2f} ms/step  "
            f"x{r['ratio_of_medians']:.3f} of {r['baseline']} "
            f"(paired median x{r['median_of_round_ratios']:.3f})"
        )
    print(f"load average before {load_before}, after {load_after}; norms vs reference {errors}")
    return report


if __name__ == "__main__":
    main()
