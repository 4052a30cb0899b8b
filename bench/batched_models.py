"""Several small models trained at once (torch.func vmap) against one after the other, in one process.

    python bench/batched_models.py                     # 3 SmallCNNs (the oracle replicates of a group)
    python bench/batched_models.py --models 2 --device cuda

Each round times `--steps` SGD steps (batch 64, lr 0.05, momentum 0.9, weight decay 2e-3, the
default recipe) of K default-sized SmallCNNs on MNIST-shaped batches, once sequentially (a
perinstance.optim.SGD per model) and once vectorized (torch.func.stack_module_state +
vmap(grad) over the stacked weights, the same update on the stacked tensors); rounds alternate so
load drift hits both alike. The JSON keeps the median seconds per step of all K models, their
ratio, and the largest weight difference between the two paths after the timed steps (vmap
batches the convolutions as one grouped convolution, whose sums are ordered differently).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, stack_module_state, vmap

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
from perinstance.models import build_model  # noqa: E402
from perinstance.optim import SGD  # noqa: E402
from workflow import machine  # noqa: E402

LR, MOMENTUM, WEIGHT_DECAY, BATCH = 0.05, 0.9, 2e-3, 64


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    def fresh(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build_model("smallcnn", num_classes=10, input_shape=(1, 28, 28), width=16, norm_groups=4).to(
            device
        )

    sequential = [fresh(k) for k in range(args.models)]
    optimizers = [
        SGD(m.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY) for m in sequential
    ]
    params, buffers = stack_module_state([fresh(k) for k in range(args.models)])
    params = {k: v.detach() for k, v in params.items()}
    momentum = {k: None for k in params}
    template = fresh(0).to("meta")

    def loss(p, b, x, y):
        return F.cross_entropy(functional_call(template, (p, b), (x,)), y)

    grads_of = vmap(grad(loss))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.models, BATCH, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (args.models, BATCH), generator=g).to(device)

    def sequential_step() -> None:
        for model, optimizer, xb, yb in zip(sequential, optimizers, x, y):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()

    @torch.no_grad()
    def vectorized_step() -> None:
        with torch.enable_grad():
            grads = grads_of(params, buffers, x, y)
        for name, p in params.items():
            d = grads[name].add(p, alpha=WEIGHT_DECAY)
            buf = momentum[name]
            momentum[name] = buf = d.clone() if buf is None else buf.mul_(MOMENTUM).add_(d)
            p.add_(buf, alpha=-LR)

    def timed(step) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / args.steps

    for step in (sequential_step, vectorized_step):  # warm-up, and the same number of steps for both
        timed(step)
    rounds = {"sequential": [], "vmap": []}
    for _ in range(args.rounds):
        rounds["sequential"].append(timed(sequential_step))
        rounds["vmap"].append(timed(vectorized_step))
    max_diff = max(
        (params[name][k] - dict(model.named_parameters())[name]).abs().max().item()
        for name in params
        for k, model in enumerate(sequential)
    )
    median = {k: statistics.median(v) for k, v in rounds.items()}
    result = {
        "models": args.models,
        "batch": BATCH,
        "device": str(device),
        "threads": args.threads,
        "seconds_per_step_all_models": median,
        "vmap_over_sequential": median["vmap"] / median["sequential"],
        "rounds": rounds,
        "max_abs_weight_difference_after_all_steps": max_diff,
        "machine": machine(),
    }
    out = args.out or REPO / "bench" / "results" / f"batched-models-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"seconds_per_step": median, "vmap_over_sequential": result["vmap_over_sequential"]}))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
