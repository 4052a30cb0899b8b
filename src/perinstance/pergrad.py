"""Per-example gradient norms g(x) = ||grad_theta CE(f_theta(x), y)||_2.

`per_example_grad_norms` is the single entry point the rest of the package
uses, so a faster engine can replace its body without touching callers."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

__all__ = ["per_example_grad_norms", "naive_per_example_grad_norms", "dataset_grad_norms"]


@contextmanager
def _eval_mode(model: torch.nn.Module):
    # Per-module flags, because model.train(flag) would flatten mixed modes.
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def per_example_grad_norms(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                           chunk_size: int = 256) -> torch.Tensor:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    named = dict(model.named_parameters())
    params = {k: p.detach() for k, p in named.items() if p.requires_grad}
    frozen = {k: p.detach() for k, p in named.items() if not p.requires_grad}
    buffers = {k: b.detach() for k, b in model.named_buffers()}

    def loss_one(p, xi, yi):
        out = functional_call(model, (p, frozen, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_example_grads = vmap(grad(loss_one), in_dims=(None, 0, 0))
    sq = torch.zeros(len(x), dtype=torch.float32, device=x.device)
    with _eval_mode(model):
        for s in range(0, len(x), chunk_size):
            grads = per_example_grads(params, x[s:s + chunk_size], y[s:s + chunk_size])
            # Reduce immediately so only one chunk of per-example gradients is alive.
            sq[s:s + chunk_size] = sum(g.flatten(1).float().pow(2).sum(1) for g in grads.values())
    return sq.sqrt()


def naive_per_example_grad_norms(model: torch.nn.Module, x: torch.Tensor,
                                 y: torch.Tensor) -> torch.Tensor:
    """One backward pass per example: slow ground truth for tests and benchmarks."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = torch.empty(len(x), dtype=torch.float32, device=x.device)
    with _eval_mode(model), torch.enable_grad():
        for i in range(len(x)):
            loss = F.cross_entropy(model(x[i:i + 1]), y[i:i + 1])
            grads = torch.autograd.grad(loss, params)
            out[i] = sum(g.float().pow(2).sum() for g in grads).sqrt()
    return out


def dataset_grad_norms(model: torch.nn.Module, x, y, *, batch_size: int = 512, device=None,
                       progress: bool = False, desc: str = "grad norms") -> np.ndarray:
    """Norms for a dataset that may not fit on the device; returns float32 numpy [N]."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if device is None:
        device = next(model.parameters()).device
    out = np.empty(len(x), dtype=np.float32)
    for s in tqdm(range(0, len(x), batch_size), desc=desc, disable=not progress):
        xb = x[s:s + batch_size].to(device)
        yb = y[s:s + batch_size].to(device)
        out[s:s + len(xb)] = per_example_grad_norms(model, xb, yb).cpu().numpy()
    return out
