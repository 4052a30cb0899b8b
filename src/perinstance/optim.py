"""Momentum SGD with weight decay: torch.optim.SGD's update and state dict, without torch.optim.

torch.optim imports torch._dynamo when the first optimizer is built and calls into it on every
step; on a CPU that import costs 1-3 s, a large share of a pipeline job that trains a small model
for half a minute. `SGD` applies torch.optim.SGD's own rule (no dampening, no Nesterov) step for
step, so the weights are bit-identical to torch's (tests/test_optim.py), and its state dict has
torch's layout: either optimizer loads the other's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class SGD:
    """SGD with momentum and weight decay over one parameter group.

    d = grad + weight_decay * p; buf = d on the first step, else momentum * buf + d; p -= lr * buf
    (buf = d when momentum is 0). Set `param_groups[0]["lr"]` to change the learning rate, as with
    torch optimizers.
    """

    def __init__(
        self, params: Iterable[torch.Tensor], *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0
    ):
        params = list(params)
        if not params:
            raise ValueError("SGD got an empty parameter list")
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"SGD needs lr, momentum, weight_decay >= 0, got {lr}, {momentum}, {weight_decay}"
            )
        self.param_groups: list[dict[str, Any]] = [
            {
                "params": params,
                "lr": lr,
                "momentum": momentum,
                "dampening": 0,
                "weight_decay": weight_decay,
                "nesterov": False,
                "maximize": False,
                "foreach": None,
                "differentiable": False,
                "fused": None,
            }
        ]
        self._buffers: list[torch.Tensor | None] = [None] * len(params)

    @property
    def _params(self) -> list[torch.Tensor]:
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        for i, p in enumerate(self._params):
            if p.grad is None:
                continue
            d = p.grad if weight_decay == 0 else p.grad.add(p, alpha=weight_decay)
            if momentum != 0:
                buf = self._buffers[i]
                if buf is None:
                    buf = self._buffers[i] = torch.clone(d).detach()
                else:
                    buf.mul_(momentum).add_(d, alpha=1)  # torch: alpha = 1 - dampening
                d = buf
            p.add_(d, alpha=-lr)

    def state_dict(self) -> dict[str, Any]:
        """torch.optim.SGD's layout: momentum buffers by parameter index, one param group."""
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self._params)))
        state = {i: {"momentum_buffer": b.clone()} for i, b in enumerate(self._buffers) if b is not None}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict of this class or of torch.optim.SGD over the same parameters; the
        buffers move to each parameter's device and dtype."""
        groups = state_dict.get("param_groups", [])
        if len(groups) != 1 or len(groups[0].get("params", [])) != len(self._params):
            raise ValueError(
                f"optimizer state has {len(groups)} parameter group(s) with "
                f"{[len(g.get('params', [])) for g in groups]} parameters; expected one group of "
                f"{len(self._params)}"
            )
        saved = groups[0]
        for key in ("dampening", "nesterov", "maximize"):
            if saved.get(key, self.param_groups[0][key]) != self.param_groups[0][key]:
                raise ValueError(
                    f"optimizer state has {key}={saved[key]!r}; this SGD supports only the default"
                )
        for key in ("lr", "momentum", "weight_decay"):
            self.param_groups[0][key] = saved[key]
        by_index = dict(zip(saved["params"], range(len(self._params))))
        self._buffers = [None] * len(self._params)
        for index, entry in state_dict.get("state", {}).items():
            buf = entry.get("momentum_buffer")
            if buf is not None:
                i = by_index[index]
                p = self._params[i]
                self._buffers[i] = buf.detach().to(device=p.device, dtype=p.dtype, copy=True)
