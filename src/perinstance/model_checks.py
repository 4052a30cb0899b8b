"""Checks that a model is fit for per-instance privacy scoring, and the BatchNorm conversion.

Per-example gradient norms, and hence the per-instance privacy losses P(x, alpha) built from
them, require that example i's loss depends on example i alone. BatchNorm breaks that: in
training mode it normalises with statistics of the whole batch, so every example's output (and
gradient) depends on the other examples of its batch. GroupNorm normalises within one example
and keeps the per-example quantities well defined; `batchnorm_to_groupnorm` swaps one for the
other.
"""

from __future__ import annotations

import copy
import math
import warnings

from torch import nn

from .pergrad import unsupported_modules

__all__ = ["BATCHNORM_TYPES", "batchnorm_modules", "batchnorm_to_groupnorm", "check_model"]

# _BatchNorm covers BatchNorm1d/2d/3d, SyncBatchNorm and the lazy variants.
BATCHNORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm,)


def batchnorm_modules(model: nn.Module) -> list[str]:
    """Qualified names (as in ``model.named_modules()``) of every BatchNorm module in `model`.

    The root module itself is reported as ``"<root>"``. Any subclass of torch's ``_BatchNorm``
    counts (BatchNorm1d/2d/3d, SyncBatchNorm, lazy variants).
    """
    return [name or "<root>" for name, m in model.named_modules() if isinstance(m, BATCHNORM_TYPES)]


def _group_norm_like(bn: nn.Module, groups: int) -> nn.GroupNorm:
    channels = bn.num_features
    if not isinstance(channels, int) or channels < 1:
        # Lazy BatchNorm before its first forward does not know its channel count yet.
        raise ValueError(
            f"cannot convert {type(bn).__name__} with unknown number of channels ({channels}); "
            "run one forward pass first to materialise lazy modules"
        )
    # gcd keeps every channel count legal: GroupNorm needs groups to divide channels.
    gn = nn.GroupNorm(math.gcd(groups, channels), channels, eps=bn.eps, affine=bn.affine)
    like = next(iter(bn.parameters()), None)
    if like is None:
        like = next((b for b in bn.buffers() if b.is_floating_point()), None)
    if like is not None and gn.affine:
        gn.to(device=like.device, dtype=like.dtype)
    return gn


def batchnorm_to_groupnorm(model: nn.Module, groups: int = 4) -> nn.Module:
    """A deep copy of `model` with every BatchNorm replaced by a freshly initialised GroupNorm.

    Each BatchNorm over C channels becomes ``nn.GroupNorm(gcd(groups, C), C)`` with the same
    ``eps`` and ``affine`` setting, on the same device and dtype. The BatchNorm's learned scale
    and shift and its running statistics are not carried over (GroupNorm normalises with
    different statistics, so they would not mean the same thing); retrain the converted model.
    `model` itself is left unchanged. A model that is itself a BatchNorm is converted too.

    Args:
        model: any ``nn.Module``.
        groups: the preferred number of GroupNorm groups (>= 1).

    Returns:
        The converted copy; a plain copy when there is no BatchNorm.
    """
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, BATCHNORM_TYPES):
        return _group_norm_like(model, groups)
    converted = copy.deepcopy(model)
    # Collect first, replace after: mutating children while iterating named_modules is unsafe.
    targets = [(name, m) for name, m in converted.named_modules() if name and isinstance(m, BATCHNORM_TYPES)]
    for name, bn in targets:
        parent_name, _, child = name.rpartition(".")
        parent = converted.get_submodule(parent_name) if parent_name else converted
        setattr(parent, child, _group_norm_like(bn, groups))
    return converted


def check_model(model: nn.Module) -> None:
    """Fail on models whose per-example gradients are ill-defined; warn on slow ones.

    Raises:
        TypeError: `model` is not an ``nn.Module``.
        ValueError: `model` contains BatchNorm (names every such module and the fix,
            `perinstance.model_checks.batchnorm_to_groupnorm`).

    Warns:
        UserWarning: some layers are not supported by the fast per-example-gradient engine
            (``perinstance.pergrad.unsupported_modules``); scoring then uses the torch.func
            reference engine, which computes the same numbers more slowly. Only obstacles
            visible before running the model are found (a module run twice per forward, for
            instance, shows up only at run time).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    found = batchnorm_modules(model)
    if found:
        raise ValueError(
            f"model contains BatchNorm ({', '.join(found)}): BatchNorm normalises with statistics "
            "of the whole batch, so each example's output and gradient depend on the other "
            "examples in its batch, which makes per-example gradients (hence per-instance privacy "
            "losses) ill-defined. Use GroupNorm instead, e.g. convert the model with "
            "perinstance.model_checks.batchnorm_to_groupnorm(model, groups=...)."
        )
    problems = unsupported_modules(model)
    if problems:
        warnings.warn(
            "the fast per-example-gradient engine does not support this model ("
            + "; ".join(problems)
            + "); the torch.func reference engine (same numbers, slower) will be used",
            UserWarning,
            stacklevel=2,
        )
