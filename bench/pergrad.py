"""Side-by-side benchmark of per-example gradient-norm engines (see bench/README.md).

One run times, on one model, device and batch size, in interleaved rounds (so that every method
sees the same machine load):

  plain            training step: forward, mean-loss backward, SGD step (the limit)
  fast             perinstance fast engine, norms only (eval mode, no weight gradients)
  fast_step        training step with in-batch norms (loss_backward_with_norms + SGD step)
  reference        torch.func functional_call + vmap(grad)
  opacus_hooks     opacus.GradSampleModule, norms from grad_sample (fwd + bwd with hooks)
  opacus_ghost     opacus GradSampleModuleFastGradientClipping(use_ghost_clipping=True),
                   norms from get_norm_sample() after one backward
  naive            one backward per example; timed on a few examples and extrapolated to a batch

and checks each method's norms against the reference. Then an end-to-end comparison: scoring a
4,000-example training set at one checkpoint with each engine against one training epoch.

    python bench/pergrad.py --device cpu --model cnn --batch 128 --out bench/results/cpu-smallcnn.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from perinstance import pergrad  # noqa: E402
from perinstance.data import load_dataset  # noqa: E402
from perinstance.models import build_model, count_parameters  # noqa: E402

MODELS = {"cnn": "smallcnn", "smallcnn": "smallcnn", "resnet18": "resnet18", "resnet": "resnet18"}
ORDER = [
    "plain",
    "fast",
    "fast_step",
    "fast_step_exact",
    "reference",
    "opacus_hooks",
    "opacus_ghost",
    "naive",
]
WHAT = {
    "plain": "training step: forward + mean-loss backward + SGD step, no norms",
    "fast": "fast engine, norms only: forward + backward to layer outputs (eval mode)",
    "fast_step": "training step with in-batch norms: loss_backward_with_norms + SGD step "
    "(batch gradients of kernels, biases and norm affines summed from the "
    "per-example gradients; autograd skips those weight-gradient kernels)",
    "fast_step_exact": "as fast_step with reuse_per_example=False: every .grad from autograd, "
    "bit-identical to the plain step",
    "reference": "torch.func functional_call + vmap(grad), norms only (eval mode)",
    "opacus_hooks": "opacus.GradSampleModule: forward + summed-loss backward with per-sample "
    "gradient hooks, norms from grad_sample",
    "opacus_ghost": "opacus GradSampleModuleFastGradientClipping(use_ghost_clipping=True): "
    "forward + summed-loss backward, norms from get_norm_sample()",
    "naive": "one forward + backward per example (torch.autograd.grad)",
}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())


def opacus_version() -> str | None:
    try:
        import opacus
    except ImportError:
        return None
    return opacus.__version__


# --------------------------------------------------------------------------- methods
# Each factory returns a callable that runs one batch and returns its norms (or None).


def make_methods(model, x, y, device, autocast, naive_examples: int):
    def sgd(m):
        return torch.optim.SGD(m.parameters(), lr=0.0, momentum=0.9, weight_decay=2e-3)

    methods = {}

    plain_model = copy.deepcopy(model).train()
    plain_opt = sgd(plain_model)

    def plain():
        plain_opt.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(plain_model(x), y)
        loss.backward()
        plain_opt.step()
        return None

    methods["plain"] = plain

    def fast():
        with autocast():
            return pergrad.per_example_grad_norms_fast(model, x, y, chunk_size=len(x))

    methods["fast"] = fast

    def fused_step(reuse_per_example: bool):
        """A training step that records in-batch norms, on its own copy of the model."""
        step_model = copy.deepcopy(model).train()
        step_opt = sgd(step_model)

        def step():
            step_opt.zero_grad(set_to_none=True)
            with autocast():
                _, _, norms = pergrad.loss_backward_with_norms(
                    step_model, x, y, reuse_per_example=reuse_per_example
                )
            step_opt.step()
            return norms

        return step

    methods["fast_step"] = fused_step(True)
    methods["fast_step_exact"] = fused_step(False)

    def reference():
        with autocast():
            return pergrad.per_example_grad_norms_reference(model, x, y, chunk_size=len(x))

    methods["reference"] = reference

    if opacus_version() is not None:
        from opacus import GradSampleModule
        from opacus.grad_sample import GradSampleModuleFastGradientClipping

        # Opacus captures activations only in training mode (identical outputs: no dropout or BatchNorm).
        hooked = GradSampleModule(copy.deepcopy(model).train(), loss_reduction="sum")
        hooked_params = [p for p in hooked.parameters() if p.requires_grad]

        def opacus_hooks():
            with autocast():
                loss = F.cross_entropy(hooked(x), y, reduction="sum")
            loss.backward()
            sq = sum(p.grad_sample.reshape(len(x), -1).float().pow(2).sum(1) for p in hooked_params)
            for p in hooked_params:
                p.grad_sample = None
                p.grad = None
            return sq.sqrt()

        methods["opacus_hooks"] = opacus_hooks

        ghost = GradSampleModuleFastGradientClipping(
            copy.deepcopy(model).train(), loss_reduction="sum", max_grad_norm=1.0, use_ghost_clipping=True
        )
        ghost_params = [p for p in ghost.parameters() if p.requires_grad]

        def opacus_ghost():
            with autocast():
                loss = F.cross_entropy(ghost(x), y, reduction="sum")
            loss.backward()
            norms = ghost.get_norm_sample()
            for p in ghost_params:
                p.grad = None
                if hasattr(p, "grad_sample"):
                    p.grad_sample = None
            return norms

        methods["opacus_ghost"] = opacus_ghost

    k = min(naive_examples, len(x))

    def naive():
        with autocast():
            return pergrad.naive_per_example_grad_norms(model, x[:k], y[:k])

    methods["naive"] = naive
    return methods, k


def time_methods(methods, device, repeats: int, warmup: int):
    """Interleaved rounds: method A, B, C, ... then again, so load drifts hit all alike."""
    wall = {k: [] for k in methods}
    cpu = {k: [] for k in methods}
    faults = {k: [] for k in methods}
    outputs = {}
    for r in range(warmup + repeats):
        for name, fn in methods.items():
            sync(device)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0, t0 = time.process_time(), time.perf_counter()
            out = fn()
            sync(device)
            t1, c1 = time.perf_counter(), time.process_time()
            f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            if r >= warmup:
                wall[name].append(t1 - t0)
                cpu[name].append(c1 - c0)
                faults[name].append(f1 - f0)
            outputs[name] = out
    return wall, cpu, faults, outputs


def peak_memory(methods, device) -> dict[str, float]:
    if device.type != "cuda":
        return {}
    peaks = {}
    for name, fn in methods.items():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        peaks[name] = torch.cuda.max_memory_allocated(device) / 2**20
    return peaks


# --------------------------------------------------------------------------- end to end


def end_to_end(model, model_name, device, autocast, train_batch: int, norm_batch: int, repeats: int) -> dict:
    """Scoring a 4,000-example training set at one checkpoint vs one training epoch."""
    if model_name == "smallcnn":
        dataset = load_dataset("mnist5k")
        data_label = "mnist5k (4,000 train examples, the default experiment)"
    else:
        dataset = load_dataset("synthetic", synthetic={"n": 5000, "num_classes": 10, "shape": [3, 32, 32]})
        data_label = "synthetic 3x32x32, 10 classes (4,000 train examples, CIFAR-shaped stand-in)"
    x, y = dataset.train.x.to(device), dataset.train.y.to(device)
    n = len(x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(device)

    def timed(fn):
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        sync(device)
        return time.perf_counter() - t0, time.process_time() - c0, out

    def epoch(with_norms: bool) -> None:
        m = copy.deepcopy(model).train()
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-3)
        for s in range(0, n, train_batch):
            idx = order[s : s + train_batch]
            opt.zero_grad(set_to_none=True)
            with autocast():
                if with_norms:
                    pergrad.loss_backward_with_norms(m, x[idx], y[idx])
                else:
                    F.cross_entropy(m(x[idx]), y[idx]).backward()
            opt.step()

    def score(engine: str) -> np.ndarray:
        with autocast():
            return pergrad.dataset_grad_norms(model, x, y, batch_size=norm_batch, engine=engine)

    epoch(False)  # warm-up: allocator, kernels, page cache
    runs = {"epoch": [], "epoch_norms": [], "fast": [], "reference": []}
    for _ in range(repeats):  # interleaved, like the per-batch timings
        runs["epoch"].append(timed(lambda: epoch(False)))
        runs["epoch_norms"].append(timed(lambda: epoch(True)))
        runs["fast"].append(timed(lambda: score("fast")))
        runs["reference"].append(timed(lambda: score("reference")))
    fast_norms, ref_norms = runs["fast"][-1][2], runs["reference"][-1][2]
    med = {
        k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in runs.items()
    }
    (plain_wall, plain_cpu), (fused_wall, fused_cpu) = med["epoch"], med["epoch_norms"]
    (fast_wall, fast_cpu), (ref_wall, ref_cpu) = med["fast"], med["reference"]
    # Float32 rounding alone can move a norm by more than the engines differ where the model is
    # ill-conditioned (GroupNorm over near-constant groups): both are checked against float64.
    sub = min(256, n)
    truth = (
        pergrad.per_example_grad_norms_reference(copy.deepcopy(model).double(), x[:sub].double(), y[:sub])
        .double()
        .cpu()
        .numpy()
    )

    def err64(norms: np.ndarray) -> float:
        return float(np.max(np.abs(norms[:sub] - truth) / np.maximum(truth, 1e-12)))

    checkpoints, epochs = default_schedule()
    result = {
        "data": data_label,
        "n_examples": n,
        "train_batch": train_batch,
        "norm_batch": norm_batch,
        "timing": f"median of {repeats} interleaved passes after one warm-up epoch; wall seconds "
        "(process cpu seconds beside)",
        "epoch_plain_s": plain_wall,
        "epoch_with_in_batch_norms_s": fused_wall,
        "score_one_checkpoint_fast_s": fast_wall,
        "score_one_checkpoint_reference_s": ref_wall,
        "epoch_plain_cpu_s": plain_cpu,
        "epoch_with_in_batch_norms_cpu_s": fused_cpu,
        "score_one_checkpoint_fast_cpu_s": fast_cpu,
        "score_one_checkpoint_reference_cpu_s": ref_cpu,
        "score_fast_over_epoch": fast_wall / plain_wall,
        "score_reference_over_epoch": ref_wall / plain_wall,
        "epoch_with_norms_over_epoch": fused_wall / plain_wall,
        "score_fast_over_epoch_cpu": fast_cpu / plain_cpu,
        "score_reference_over_epoch_cpu": ref_cpu / plain_cpu,
        "max_rel_err_fast_vs_reference": float(
            np.max(np.abs(fast_norms - ref_norms) / np.maximum(np.abs(ref_norms), 1e-12))
        ),
        f"max_rel_err_vs_float64_first_{sub}": {"fast": err64(fast_norms), "reference": err64(ref_norms)},
    }
    if checkpoints is not None:
        result.update(
            {
                "default_config_scored_checkpoints": checkpoints,
                "default_config_epochs": epochs,
                "all_checkpoints_fast_over_training": checkpoints * fast_wall / (epochs * plain_wall),
                "all_checkpoints_reference_over_training": checkpoints * ref_wall / (epochs * plain_wall),
            }
        )
    return result


def default_schedule() -> tuple[int | None, int | None]:
    """Checkpoints scored (every one before the final step) and epochs of config.yaml."""
    try:
        from perinstance.config import load_config
        from perinstance.training import checkpoint_steps, steps_per_epoch

        config = load_config(REPO / "config.yaml")
    except Exception as err:  # the bench must still run where the config does not validate
        warnings.warn(f"cannot read config.yaml ({err}); skipping the all-checkpoints estimate")
        return None, None
    training = config["training"]
    spe = steps_per_epoch(4000, training["batch_size"], training["sampling"])
    steps = checkpoint_steps(training["checkpoints"], spe, training["epochs"])
    return sum(s < spe * training["epochs"] for s in steps), training["epochs"]


# --------------------------------------------------------------------------- main


def conv_plan(model, x, y) -> list[dict]:
    """Which form the fast engine picks for each Conv2d at this input size (strategy "auto")."""
    plan = []
    hooks = []

    def hook(module, inputs, output):
        rows = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        length = output.shape[2] * output.shape[3]
        ghost = pergrad._prefer_ghost(rows, module.out_channels // module.groups, length)
        form = "ghost" if ghost else pergrad._conv_materialize_backend(inputs[0], rows)
        plan.append(
            {
                "layer": names[module],
                "rows": rows,
                "out": module.out_channels,
                "positions": length,
                "form": form,
            }
        )

    names = {m: n for n, m in model.named_modules()}
    for m in model.modules():
        if type(m) is torch.nn.Conv2d:
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    return plan


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--model", default="cnn", choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument(
        "--width", type=int, default=None, help="model width (default 16 for cnn, 64 for resnet18)"
    )
    ap.add_argument(
        "--norm-groups", type=int, default=None, help="GroupNorm groups (default 4 cnn, 8 resnet18)"
    )
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast")
    ap.add_argument("--naive-examples", type=int, default=8, help="examples the naive loop is timed on")
    ap.add_argument("--skip", nargs="*", default=[], choices=ORDER[1:], help="methods to leave out")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end scoring vs training epoch")
    ap.add_argument("--e2e-repeats", type=int, default=3, help="passes of each end-to-end measurement")
    ap.add_argument("--train-batch", type=int, default=64, help="batch of the end-to-end training epoch")
    ap.add_argument("--norm-batch", type=int, default=512, help="batch of the end-to-end scoring")
    ap.add_argument("--note", default="", help="free text stored in the JSON")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model_name = MODELS[args.model]
    width = args.width or (16 if model_name == "smallcnn" else 64)
    norm_groups = args.norm_groups or (4 if model_name == "smallcnn" else 8)
    shape = (1, 28, 28) if model_name == "smallcnn" else (3, 32, 32)
    out = args.out or REPO / "bench" / "results" / f"{device.type}-{model_name}.json"

    torch.manual_seed(0)
    model = build_model(
        model_name, num_classes=10, input_shape=shape, width=width, norm_groups=norm_groups
    ).to(device)
    x = torch.randn(args.batch, *shape, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    # Opacus warns on every backward that the input needs no gradient; that is expected here.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    load_before = os.getloadavg()
    methods, naive_k = make_methods(model, x, y, device, autocast, args.naive_examples)
    for name in args.skip:
        methods.pop(name, None)
    print(
        f"{device_name(device)} | {model_name} width {width} | batch {args.batch} | "
        f"threads {torch.get_num_threads()} | {args.dtype} | load {load_before[0]:.2f}",
        file=sys.stderr,
    )
    wall, cpu, faults, outputs = time_methods(methods, device, args.repeats, args.warmup)
    load_after = os.getloadavg()
    peaks = peak_memory(methods, device)

    reference = outputs.get("reference")
    if reference is None:
        with autocast():
            reference = pergrad.per_example_grad_norms_reference(model, x, y)
    base_wall, base_cpu = statistics.median(wall["plain"]), statistics.median(cpu["plain"])
    results = {}
    for name in methods:
        scale = args.batch / naive_k if name == "naive" else 1.0  # extrapolated to one batch
        w, c = statistics.median(wall[name]) * scale, statistics.median(cpu[name]) * scale
        entry = {
            "what": WHAT[name],
            "seconds_per_batch": w,
            "ratio_to_plain": w / base_wall,
            "cpu_seconds_per_batch": c,
            "cpu_ratio_to_plain": c / base_cpu,
            "wall_seconds_all_repeats": [t * scale for t in wall[name]],
            "minor_page_faults_per_batch": statistics.median(faults[name]) * scale,
        }
        if name == "naive":
            entry["extrapolated"] = f"timed on {naive_k} examples, scaled by {args.batch}/{naive_k}"
        norms = outputs[name]
        if norms is not None:
            ref = reference[: len(norms)]
            entry["max_rel_err_vs_reference"] = rel_err(norms, ref)
        if name in peaks:
            entry["peak_memory_mib"] = peaks[name]
        results[name] = entry
        print(
            f"  {name:13s} {w * 1e3:9.2f} ms/batch  x{w / base_wall:6.2f} wall  x{c / base_cpu:6.2f} cpu"
            + (
                f"  max rel err {entry['max_rel_err_vs_reference']:.1e}"
                if "max_rel_err_vs_reference" in entry
                else ""
            ),
            file=sys.stderr,
        )

    report = {
        "benchmark": "per-example gradient norms (bench/pergrad.py)",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "opacus": opacus_version(),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cuda_tf32": {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
        }
        if device.type == "cuda"
        else None,
        "model": model_name,
        "width": width,
        "norm_groups": norm_groups,
        "input_shape": list(shape),
        "parameters": count_parameters(model),
        "batch": args.batch,
        "dtype": args.dtype,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "timing": (
            "median over repeats of interleaved rounds (every method once per round), after warm-up rounds"
        ),
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "cpu_count": os.cpu_count(),
        "note": args.note,
        "fast_engine_conv_forms": conv_plan(model, x, y),
        "methods": results,
    }
    if not args.no_e2e:
        print("  end to end ...", file=sys.stderr)
        report["end_to_end"] = end_to_end(
            model, model_name, device, autocast, args.train_batch, args.norm_batch, args.e2e_repeats
        )
        e2e = report["end_to_end"]
        print(
            f"  epoch {e2e['epoch_plain_s']:.2f} s (with norms {e2e['epoch_with_in_batch_norms_s']:.2f} s) | "
            f"score one checkpoint: fast {e2e['score_one_checkpoint_fast_s']:.2f} s, "
            f"reference {e2e['score_one_checkpoint_reference_s']:.2f} s",
            file=sys.stderr,
        )
    report["load_average_end"] = list(os.getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
