"""Model zoo. GroupNorm only: BatchNorm mixes examples in a batch, which would
make per-example gradients (and hence per-instance privacy losses) ill-defined.

Besides the built-ins (`available_models`), a model may be named by the import path of a
factory, ``"package.module:factory"``: `resolve_factory` imports it and `build_model` calls it
with the same keyword arguments the built-ins get, then checks the result
(`perinstance.model_checks.check_model`).
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MaxPool2x2",
    "available_models",
    "build_from_config",
    "build_model",
    "count_parameters",
    "group_norm",
    "is_import_path",
    "resolve_factory",
]


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    # gcd keeps every width legal: GroupNorm needs groups to divide channels.
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class _MaxPool2x2Function(torch.autograd.Function):
    """2x2, stride-2 max-pool: values from the four strided window corners, gradient from ATen.

    The indices handed to ATen's backward kernel mark the first maximum of each window in
    row-major order, as ATen's own forward does, so outputs and gradients equal F.max_pool2d's
    bit for bit (NaN inputs aside: ATen routes their gradient to the NaN).
    """

    generate_vmap_rule = True  # torch.func (the reference engine) vmaps forward and backward

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        top_left, top_right, bottom_left, bottom_right = _window_corners(x)
        return torch.maximum(torch.maximum(top_left, top_right), torch.maximum(bottom_left, bottom_right))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        (x,) = inputs
        top_left, top_right, bottom_left, bottom_right = _window_corners(x)
        # Strict comparisons: a tie keeps the earlier corner, as ATen's kernel does. (Boolean
        # algebra rather than torch.where: the latter is several times slower on CPU.)
        bottom = output > torch.maximum(top_left, top_right)
        right = (bottom & (bottom_right > bottom_left)) | (~bottom & (top_right > top_left))
        h, w = output.shape[-2:]
        width = x.shape[-1]
        corner = (torch.arange(h, device=x.device) * (2 * width)).unsqueeze(1) + torch.arange(
            w, device=x.device
        ) * 2
        indices = torch.add(corner, bottom, alpha=width).add_(right)
        ctx.save_for_backward(x, indices)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, indices = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        )


def _window_corners(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    return (x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2], x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2])


class MaxPool2x2(nn.Module):
    """nn.MaxPool2d(2) (2x2 windows, stride 2, floor mode): the same outputs and gradients.

    On CPU, ATen's max_pool2d kernel for NCHW tensors is about 10x slower than the elementwise
    maximum of the four strided window corners (bench/README.md); it was the most expensive op in
    training and scoring the small CNN. Other devices call max_pool2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4:
            return F.max_pool2d(x, 2)
        if torch.is_grad_enabled() and x.requires_grad:
            return _MaxPool2x2Function.apply(x)
        return _MaxPool2x2Function.forward(x)


class SmallCNN(nn.Module):
    def __init__(
        self, in_channels: int, height: int, width_px: int, num_classes: int, width: int, norm_groups: int
    ):
        super().__init__()
        h, w = height // 4, width_px // 4
        if h < 1 or w < 1:
            raise ValueError(f"smallcnn needs inputs of at least 4x4 pixels, got {height}x{width_px}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            group_norm(width, norm_groups),
            nn.ReLU(),
            MaxPool2x2(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            group_norm(2 * width, norm_groups),
            nn.ReLU(),
            MaxPool2x2(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * h * w, 2 * width),
            nn.ReLU(),
            nn.Linear(2 * width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm_groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = group_norm(c_out, norm_groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = group_norm(c_out, norm_groups)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), group_norm(c_out, norm_groups)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR variant: 3x3 stride-1 stem and no max-pool, so 32x32 inputs keep resolution."""

    def __init__(self, in_channels: int, num_classes: int, width: int, norm_groups: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), group_norm(width, norm_groups), nn.ReLU()
        )
        layers, c_in = [], width
        for i, c_out in enumerate([width, 2 * width, 4 * width, 8 * width]):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(c_in, c_out, stride, norm_groups), BasicBlock(c_out, c_out, 1, norm_groups)]
            c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


def _smallcnn(num_classes, input_shape, width, norm_groups):
    c, h, w = input_shape
    return SmallCNN(c, h, w, num_classes, width, norm_groups)


def _resnet18(num_classes, input_shape, width, norm_groups):
    return ResNet18(input_shape[0], num_classes, width, norm_groups)


_BUILDERS = {"resnet18": _resnet18, "smallcnn": _smallcnn}


_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
# "package.module:factory" (the attribute part may be dotted too: "module:Class.create").
_IMPORT_PATH = re.compile(rf"{_IDENTIFIER}(?:\.{_IDENTIFIER})*:{_IDENTIFIER}(?:\.{_IDENTIFIER})*")


def available_models() -> list[str]:
    """Names of the built-in models (import paths of factories are accepted besides these)."""
    return sorted(_BUILDERS)


def is_import_path(name: str) -> bool:
    """Whether `name` has the form ``"package.module:factory"`` (syntax only, nothing imported)."""
    return isinstance(name, str) and _IMPORT_PATH.fullmatch(name) is not None


def resolve_factory(name: str) -> Callable[..., nn.Module]:
    """The callable named by the import path ``"package.module:factory"`` (config key model.name).

    The module is imported with `importlib.import_module`, so it must be importable by the
    Python that runs the jobs (installed, in the working directory, or on PYTHONPATH); the
    attribute part may be dotted (``"module:Class.build"``).

    Raises:
        ValueError: `name` is not of that form, the module (or a module it imports) is not
            found, the attribute is missing, or it is not callable; each message says which
            part failed. Errors raised while the module itself runs propagate unchanged.
    """
    if not is_import_path(name):
        raise ValueError(
            f"model.name {name!r} is neither a built-in model ({', '.join(available_models())}) "
            "nor an import path of the form 'package.module:factory'"
        )
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or module_name
        inside = (
            ""
            if module_name == missing or module_name.startswith(f"{missing}.")
            else (f" (imported by {module_name!r})")
        )
        raise ValueError(
            f"model.name {name!r}: module {missing!r}{inside} not found; the module must be importable "
            "by the jobs' Python: install it, or put the folder holding it in the working directory "
            "or on PYTHONPATH"
        ) from err
    target: Any = module
    for depth, part in enumerate(attribute.split(".")):
        if not hasattr(target, part):
            owner = module_name if depth == 0 else f"{module_name}:{'.'.join(attribute.split('.')[:depth])}"
            raise ValueError(f"model.name {name!r}: {owner!r} has no attribute {part!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(
            f"model.name {name!r}: {attribute!r} in module {module_name!r} is a {type(target).__name__}, "
            "not a callable factory"
        )
    return target


def _from_factory(name, num_classes, input_shape, width, norm_groups) -> nn.Module:
    from .model_checks import check_model  # model_checks imports pergrad, which need not load otherwise

    factory = resolve_factory(name)
    kwargs = dict(num_classes=num_classes, input_shape=input_shape, width=width, norm_groups=norm_groups)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins and extension types have no signature
        signature = None
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError as err:
            raise ValueError(
                f"model.name {name!r}: the factory cannot be called with the keyword arguments "
                f"{', '.join(kwargs)} ({err})"
            ) from None
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"model.name {name!r}: the factory returned a {type(model).__name__}, not a torch.nn.Module"
        )
    try:
        check_model(model)
    except ValueError as err:
        raise ValueError(f"model.name {name!r}: {err}") from None
    return model


def build_model(
    name: str, *, num_classes: int, input_shape: tuple[int, int, int], width: int = 16, norm_groups: int = 8
) -> nn.Module:
    """A freshly initialised model (torch's global generator) for `num_classes` classes.

    Args:
        name: a built-in model (`available_models`) or the import path
            ``"package.module:factory"`` of a factory. The factory is called as
            ``factory(num_classes=..., input_shape=(C, H, W), width=..., norm_groups=...)``
            and must return an ``nn.Module`` mapping [B, C, H, W] float inputs to [B, num_classes]
            logits; it is then checked with `perinstance.model_checks.check_model` (BatchNorm is
            refused; layers the fast per-example-gradient engine does not support give a warning).
            The logits' shape is not checked here (that needs a forward pass).
        num_classes: number of classes.
        input_shape: (channels, height, width) of one example.
        width: config key model.width.
        norm_groups: config key model.norm_groups.
    """
    if name not in _BUILDERS and not is_import_path(name):
        raise ValueError(
            f"unknown model {name!r} (config key model.name); available: {', '.join(available_models())}, "
            "or the import path of a factory, 'package.module:factory'"
        )
    if width < 1:
        raise ValueError(f"model.width must be >= 1, got {width}")
    if norm_groups < 1:
        raise ValueError(f"model.norm_groups must be >= 1, got {norm_groups}")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}")
    if name in _BUILDERS:
        return _BUILDERS[name](num_classes, tuple(input_shape), width, norm_groups)
    return _from_factory(name, num_classes, tuple(input_shape), width, norm_groups)


def build_from_config(config: Mapping[str, Any], dataset) -> nn.Module:
    """The experiment's architecture (config key `model`) for `dataset`'s classes and input shape
    (any object with `num_classes` and `input_shape`, such as a data.Dataset), freshly initialised
    from torch's global generator."""
    spec = config["model"]
    return build_model(
        spec["name"],
        width=spec["width"],
        norm_groups=spec["norm_groups"],
        num_classes=dataset.num_classes,
        input_shape=dataset.input_shape,
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
