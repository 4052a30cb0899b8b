"""Example model factories for the config key ``model.name: "byo_models:<factory>"``.

The workflow calls a factory as ``factory(num_classes=..., input_shape=(C, H, W), width=...,
norm_groups=...)`` (the config's model.width and model.norm_groups) and expects a
``torch.nn.Module`` mapping [B, C, H, W] float inputs to [B, num_classes] logits. This module
must be importable by the jobs, e.g. ``PYTHONPATH=examples/byo snakemake ...``.

- `tiny_convnet`: convolutions, GroupNorm, ReLU, average pooling and linear layers, all of
  which the fast per-example-gradient engine supports.
- `batchnorm_convnet`: the same network with BatchNorm, which the workflow refuses (per-example
  gradients are ill-defined when BatchNorm mixes the examples of a batch).
- `converted_convnet`: `batchnorm_convnet` after ``batchnorm_to_groupnorm``, which the workflow
  accepts.
"""

from __future__ import annotations

import math

from torch import nn

from perinstance.model_checks import batchnorm_to_groupnorm


def _convnet(channels: int, num_classes: int, width: int, norm) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        norm(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
        norm(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * width, num_classes),
    )


def tiny_convnet(
    *, num_classes: int, input_shape: tuple[int, int, int], width: int, norm_groups: int
) -> nn.Module:
    """Two 3x3 convolutions with GroupNorm, then a linear classifier on a 2x2 pooled map."""
    return _convnet(input_shape[0], num_classes, width, lambda c: nn.GroupNorm(math.gcd(norm_groups, c), c))


def batchnorm_convnet(
    *, num_classes: int, input_shape: tuple[int, int, int], width: int, norm_groups: int
) -> nn.Module:
    """`tiny_convnet` with BatchNorm2d instead of GroupNorm (refused by the workflow)."""
    return _convnet(input_shape[0], num_classes, width, nn.BatchNorm2d)


def converted_convnet(
    *, num_classes: int, input_shape: tuple[int, int, int], width: int, norm_groups: int
) -> nn.Module:
    """`batchnorm_convnet` with every BatchNorm swapped for GroupNorm(gcd(norm_groups, C), C)."""
    model = batchnorm_convnet(
        num_classes=num_classes, input_shape=input_shape, width=width, norm_groups=norm_groups
    )
    return batchnorm_to_groupnorm(model, groups=norm_groups)
