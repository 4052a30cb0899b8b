"""Per-example gradient norms g(x) = ||grad_theta CE(f_theta(x), y)||_2.

`per_example_grad_norms` is the single entry point the rest of the package uses. It dispatches
to one of two engines that compute the same numbers:

- ``"fast"`` (default): one forward and one backward pass per chunk. Forward hooks on every
  module that owns trainable parameters capture its input and output; the backward of the
  SUMMED loss yields the gradient w.r.t. each output, which for example i is the gradient of
  example i's own loss. Each layer's per-example squared norm then follows from (input,
  output gradient), reduced at once, never holding the whole model's per-example gradients:
    Linear     ||a||^2 ||g||^2 for 2-D inputs (ghost norm); for sequence inputs the Gram form
               <A A^T, G G^T> or the per-example g^T a, whichever costs fewer flops;
    Conv2d     the same choice on the unfolded input: Gram matrices cost ~(HW)^2 per example,
               the materialised per-example kernel gradient ~ out*in*k*k*HW. Materialising
               uses unfold + batched matmul, or on CPU for wide layers one grouped
               weight-gradient convolution (measured faster there; see bench/README.md);
    GroupNorm, LayerNorm (affine)   closed form: d/dbias = sum_s g, d/dweight = sum_s g*x_hat.
  A layer's output may be edited in place afterwards (``nn.ReLU(inplace=True)``, ``out += x``
  in a residual block): the output gradient is taken at the layer's own autograd edge, recorded
  when it ran, so it is the gradient w.r.t. the value the layer produced, not the edited one.
  A module type without a rule that owns trainable parameters, a parameter shared between
  modules, a module that runs other than once per forward, or an in-place edit of a captured
  INPUT (whose values the rules use) makes the fast engine raise `UnsupportedModelError`; the
  dispatcher then falls back to the reference with a RuntimeWarning. The fast engine also
  assumes a parameter is used only inside its own module's forward (true of every model in
  models.py).
- ``"reference"``: torch.func (functional_call + vmap(grad)), readable and general; every fast
  path is tested against it.

`loss_backward_with_norms` runs the same engine inside a training step: one forward and one
backward of the mean loss, so that `.grad` is what the optimizer needs, with the in-batch
per-example norms as a by-product (and, by default, the batch gradients of layers whose
per-example gradients were formed anyway taken from those instead of recomputed).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.graph import GradientEdge, get_gradient_edge
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm

__all__ = [
    "ENGINES",
    "LossFn",
    "UnsupportedModelError",
    "dataset_grad_norms",
    "loss_backward_with_norms",
    "naive_per_example_grad_norms",
    "per_example_grad_norms",
    "per_example_grad_norms_fast",
    "per_example_grad_norms_reference",
    "unsupported_modules",
]

ENGINES = ("fast", "reference")
STRATEGIES = ("auto", "ghost", "materialize", "unfold", "grouped")


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A per-example loss: (logits [B, ...], targets [B, ...]) -> losses [B]. Example i's loss may
depend only on logits[i] and targets[i] (true of any loss with reduction="none")."""


class UnsupportedModelError(NotImplementedError):
    """The fast engine cannot compute exact norms for this model (see the message for why)."""


def _per_example_losses(loss_fn: LossFn | None, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if loss_fn is None:
        return F.cross_entropy(logits, y, reduction="none")
    losses = loss_fn(logits, y)
    if not isinstance(losses, torch.Tensor) or losses.shape != (len(logits),):
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(
            f"loss_fn must return one loss per example, shape ({len(logits)},), got {shape} "
            "(use reduction='none')"
        )
    return losses


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


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


# --------------------------------------------------------------------------- reference engines


def per_example_grad_norms_reference(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    chunk_size: int = 256,
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """torch.func engine (model in eval mode): the readable definition the fast engine matches.

    `loss_fn` (per-example losses, default cross-entropy) must be vmap-compatible.
    """
    _check_chunk_size(chunk_size)
    named = dict(model.named_parameters())
    params = {k: p.detach() for k, p in named.items() if p.requires_grad}
    frozen = {k: p.detach() for k, p in named.items() if not p.requires_grad}
    buffers = {k: b.detach() for k, b in model.named_buffers()}

    def loss_one(p, xi, yi):
        out = functional_call(model, (p, frozen, buffers), (xi.unsqueeze(0),))
        if loss_fn is None:
            return F.cross_entropy(out, yi.unsqueeze(0))
        return loss_fn(out, yi.unsqueeze(0)).sum()

    per_example_grads = vmap(grad(loss_one), in_dims=(None, 0, 0))
    sq = torch.zeros(len(x), dtype=torch.float32, device=x.device)
    with _eval_mode(model):
        for s in range(0, len(x), chunk_size):
            grads = per_example_grads(params, x[s : s + chunk_size], y[s : s + chunk_size])
            # Reduce immediately so only one chunk of per-example gradients is alive.
            sq[s : s + chunk_size] = sum(g.reshape(len(g), -1).float().pow(2).sum(1) for g in grads.values())
    return sq.sqrt()


def naive_per_example_grad_norms(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss_fn: LossFn | None = None
) -> torch.Tensor:
    """One backward pass per example: slow ground truth for tests and benchmarks."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = torch.empty(len(x), dtype=torch.float32, device=x.device)
    with _eval_mode(model), torch.enable_grad():
        for i in range(len(x)):
            logits = model(x[i : i + 1])
            if loss_fn is None:
                loss = F.cross_entropy(logits, y[i : i + 1])
            else:
                loss = _per_example_losses(loss_fn, logits, y[i : i + 1]).sum()
            grads = torch.autograd.grad(loss, params)
            out[i] = sum(g.float().pow(2).sum() for g in grads).sqrt()
    return out


# --------------------------------------------------------------------------- capture

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass
class _Record:
    """One call of a module that owns trainable parameters, as captured by the forward hook."""

    name: str
    module: nn.Module
    input: torch.Tensor | None
    input_version: int
    # Where the layer's output enters the graph, taken when the layer ran (None: the output needs
    # no gradient). A tensor would not do: an in-place edit of the output (ReLU(inplace=True))
    # moves the tensor's history to the edit, while this edge stays at the layer.
    edge: GradientEdge | None
    form: str  # how the weight's per-example norm is computed, fixed at forward time
    fed_by_leaf: bool  # the input carries no autograd graph (e.g. the model input)
    stats: tuple[torch.Tensor, torch.Tensor] | None = None  # GroupNorm mean, rstd


def _prefer_ghost(k: int, o: int, length: int) -> bool:
    # Gram form: two L x L Gram matrices per example; materialised: one O x K matrix per example.
    return length * length * (k + o + 1) < o * k * (length + 1)


def _conv_materialize_backend(x: torch.Tensor, rows_per_group: int) -> str:
    # Measured on CPU (bench/README.md): the grouped weight-gradient kernel beats unfold + bmm
    # once a group has a few dozen input rows; on GPUs unfold + bmm is the well-trodden path.
    if x.device.type == "cpu" and rows_per_group >= 64:
        return "grouped"
    return "unfold"


def _form(module: nn.Module, x: torch.Tensor, output: torch.Tensor, strategy: str) -> str:
    """ "rank1", "ghost", "materialize" (Linear), "unfold", "grouped" (Conv2d) or "closed"."""
    if type(module) is nn.Linear:
        length = output.numel() // max(1, len(output) * module.out_features)
        if length == 1:
            return "rank1"
        if strategy == "auto":
            ghost = _prefer_ghost(module.in_features, module.out_features, length)
            return "ghost" if ghost else "materialize"
        return "ghost" if strategy == "ghost" else "materialize"
    if type(module) is nn.Conv2d:
        rows = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        if strategy in ("unfold", "grouped", "ghost"):
            return strategy
        length = output.shape[-2] * output.shape[-1]
        if strategy == "auto" and _prefer_ghost(rows, module.out_channels // module.groups, length):
            return "ghost"
        return _conv_materialize_backend(x, rows)
    return "closed"


# --------------------------------------------------------------------------- per-layer rules
# Each rule maps (captured call, gradient of the loss w.r.t. the module output, keep) to the
# float32 [B] squared norm of that module's own per-example parameter gradient. With keep=True
# it also returns the batch gradient (the sum over examples) of every parameter whose
# per-example gradients it formed anyway: the training step then takes those from here and
# autograd skips their weight-gradient kernels.

Grads = list[tuple[nn.Parameter, torch.Tensor]]


def _matmul_operands(a: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Under autocast the layer itself multiplied in half precision; doing the same here keeps the
    # extra cost proportional, while products are squared and summed in float32 by the callers.
    if a.dtype in _LOW_PRECISION or g.dtype in _LOW_PRECISION:
        dtype = g.dtype if g.dtype in _LOW_PRECISION else a.dtype
    else:
        dtype = torch.promote_types(a.dtype, g.dtype)
    return a.to(dtype), g.to(dtype)


def _sq_sum(t: torch.Tensor) -> torch.Tensor:
    """Per-row sum of squares in float32, without a squared temporary the size of `t`."""
    dtype = torch.promote_types(t.dtype, torch.float32)
    return torch.linalg.vector_norm(t.flatten(1), dim=1, dtype=dtype).square().float()


def _wants(p: nn.Parameter | None) -> bool:
    return p is not None and p.requires_grad


def _weight_sq(a: torch.Tensor, g: torch.Tensor, ghost: bool, keep: bool):
    """Per-example ||sum_t g[b, ..., :, t] a[b, ..., :, t]^T||^2 and, if kept, sum over b.

    a: [B, ..., K, L] inputs, g: [B, ..., O, L] output gradients, L positions sharing the weight.
    The batch sum comes back as [..., O, K]; None for the Gram (ghost) form.
    """
    a, g = _matmul_operands(a, g)
    if ghost:
        gram_a = a.transpose(-1, -2) @ a
        gram_g = g.transpose(-1, -2) @ g
        return (gram_a.float() * gram_g.float()).flatten(1).sum(1), None
    # Same norm either way round; with few input rows MKL runs the K x L @ L x O form ~2x faster.
    if a.shape[-2] < 64:
        per_example = a @ g.transpose(-1, -2)
        return _sq_sum(per_example), per_example.sum(0).transpose(-1, -2) if keep else None
    per_example = g @ a.transpose(-1, -2)
    return _sq_sum(per_example), per_example.sum(0) if keep else None


def _linear_sq(rec: _Record, g: torch.Tensor, keep: bool) -> tuple[torch.Tensor, Grads]:
    m, a = rec.module, rec.input
    b = len(a)
    a, g = a.reshape(b, -1, a.shape[-1]), g.reshape(b, -1, g.shape[-1])
    sq = torch.zeros(b, dtype=torch.float32, device=g.device)
    grads: Grads = []
    if _wants(m.weight):
        if rec.form == "rank1":  # ||g a^T|| = ||g|| ||a||
            sq += _sq_sum(a) * _sq_sum(g)
        else:
            w_sq, w_sum = _weight_sq(a.transpose(1, 2), g.transpose(1, 2), rec.form == "ghost", keep)
            sq += w_sq
            if w_sum is not None:
                grads.append((m.weight, w_sum))
    if _wants(m.bias):
        per_example = g.sum(1)
        sq += _sq_sum(per_example)
        if keep:
            grads.append((m.bias, per_example.sum(0)))
    return sq, grads


def _unfold(x: torch.Tensor, kernel_size, dilation, stride) -> torch.Tensor:
    """[B, C*kh*kw, L] patches of an already padded input, rows ordered like the weight's.

    Strided slices stacked in one copy: on CPU several times faster than F.unfold (im2col)."""
    b, c, h, w = x.shape
    (kh, kw), (dh, dw), (sh, sw) = kernel_size, dilation, stride
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    patches = [
        x[:, :, i * dh : i * dh + (ho - 1) * sh + 1 : sh, j * dw : j * dw + (wo - 1) * sw + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    return torch.stack(patches, 2).reshape(b, c * kh * kw, ho * wo)


def _conv2d_sq(rec: _Record, g: torch.Tensor, keep: bool) -> tuple[torch.Tensor, Grads]:
    m, x = rec.module, rec.input
    b, o, groups = len(x), m.out_channels, m.groups
    sq = torch.zeros(b, dtype=torch.float32, device=g.device)
    grads: Grads = []
    if _wants(m.weight):
        padding = m.padding
        if isinstance(padding, str) or m.padding_mode != "zeros":
            # 'same' may pad asymmetrically and reflect/replicate/circular are not zeros: pad
            # exactly as Conv2d._conv_forward does.
            mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            x, padding = F.pad(x, m._reversed_padding_repeated_twice, mode=mode), (0, 0)
        if rec.form == "grouped":
            x, g_ = _matmul_operands(x, g)
            # Example i's kernel gradient is group i of a convolution whose batch was folded
            # into channels: one native weight-gradient call yields all of them. (The op behind
            # torch.nn.grad.conv2d_weight, called directly: that wrapper's expanded dummy weight
            # gets copied in full by the CPU kernel; only the weight's shape matters.)
            weight = torch.empty(
                (b * o, m.in_channels // groups, *m.kernel_size), dtype=x.dtype, device=x.device
            )
            per_example = torch.ops.aten.convolution_backward(
                g_.reshape(1, -1, *g.shape[2:]),
                x.reshape(1, -1, *x.shape[2:]),
                weight,
                None,
                list(m.stride),
                list(padding),
                list(m.dilation),
                False,
                [0, 0],
                b * groups,
                [False, True, False],
            )[1]
            sq += _sq_sum(per_example.view(b, -1))
            if keep:
                grads.append((m.weight, per_example.view(b, *m.weight.shape).sum(0)))
        else:
            if any(padding):
                x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
            cols = _unfold(x, m.kernel_size, m.dilation, m.stride)
            length = cols.shape[-1]
            # Rows are channel-major, so each group's rows are one contiguous block.
            w_sq, w_sum = _weight_sq(
                cols.view(b, groups, -1, length),
                g.reshape(b, groups, o // groups, length),
                rec.form == "ghost",
                keep,
            )
            sq += w_sq
            if w_sum is not None:
                grads.append((m.weight, w_sum.reshape(m.weight.shape)))
    if _wants(m.bias):
        per_example = g.flatten(2).sum(2)
        sq += _sq_sum(per_example)
        if keep:
            grads.append((m.bias, per_example.sum(0)))
    return sq, grads


def _group_norm_sq(rec: _Record, g: torch.Tensor, keep: bool) -> tuple[torch.Tensor, Grads]:
    m, x = rec.module, rec.input
    b, c, groups = x.shape[0], x.shape[1], m.num_groups
    positions = x[0, 0].numel()
    x = x.float()
    if rec.stats is not None:
        mean, rstd = rec.stats
    else:
        _, mean, rstd = torch.native_group_norm(x.contiguous(), None, None, b, c, positions, groups, m.eps)
    x, g = x.reshape(1, b * c, positions), g.float().reshape(1, b * c, positions)
    # With the batch folded into channels (one "example" of b*c channels in b*groups groups),
    # the native backward's per-channel sums sum_s g*x_hat and sum_s g become per-(example,
    # channel) sums: exactly the per-example weight and bias gradients, in one fused pass that
    # writes nothing the size of the activation. gamma only enters d/dx, which is not requested.
    _, d_weight, d_bias = torch.ops.aten.native_group_norm_backward(
        g,
        x,
        mean.float().reshape(1, b * groups),
        rstd.float().reshape(1, b * groups),
        torch.ones(b * c, dtype=torch.float32, device=x.device),
        1,
        b * c,
        positions,
        b * groups,
        [False, True, True],
    )
    return _affine_result(m, d_weight.view(b, c), d_bias.view(b, c), keep)


def _affine_result(m: nn.Module, d_weight: torch.Tensor, d_bias: torch.Tensor, keep: bool):
    sq = torch.zeros(len(d_weight), dtype=torch.float32, device=d_weight.device)
    grads: Grads = []
    for p, per_example in ((m.weight, d_weight), (m.bias, d_bias)):
        if _wants(p):
            sq += _sq_sum(per_example)
            if keep:
                grads.append((p, per_example.sum(0).reshape(p.shape)))
    return sq, grads


def _group_norm_stats(output: torch.Tensor, batch: int, groups: int):
    """Mean and rstd that autograd saved for the backward of a GroupNorm output, if any.

    Saved tensors are exposed as `grad_fn._saved_*` (documented under "Saved tensors" in the
    autograd notes); reusing them spares a pass over the activation."""
    fn = output.grad_fn
    if fn is None or type(fn).__name__ != "NativeGroupNormBackward0":
        return None
    try:
        mean, rstd = fn._saved_result1, fn._saved_result2
    except (AttributeError, RuntimeError):
        return None
    if mean.numel() != batch * groups or rstd.numel() != batch * groups:
        return None
    return mean.detach(), rstd.detach()


def _layer_norm_sq(rec: _Record, g: torch.Tensor, keep: bool) -> tuple[torch.Tensor, Grads]:
    m, x = rec.module, rec.input
    b, size = len(x), math.prod(m.normalized_shape)
    x_hat = F.layer_norm(x.float(), m.normalized_shape, None, None, m.eps).reshape(b, -1, size)
    g = g.float().reshape(b, -1, size)
    return _affine_result(m, (g * x_hat).sum(1), g.sum(1), keep)


# Exact types: a subclass may override forward() and use its parameters differently.
_RULES = {
    nn.Linear: _linear_sq,
    nn.Conv2d: _conv2d_sq,
    nn.GroupNorm: _group_norm_sq,
    nn.LayerNorm: _layer_norm_sq,
}


def _kept_params(rec: _Record) -> list[nn.Parameter]:
    """The parameters whose batch gradient `_RULES[...](rec, g, keep=True)` returns."""
    m = rec.module
    kept = [m.bias] if type(m) in (nn.Linear, nn.Conv2d) else [m.weight, m.bias]
    if rec.form not in ("rank1", "ghost"):
        kept.append(m.weight)
    return [p for p in kept if _wants(p)]


def _trainable_owners(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (name, m)
        for name, m in model.named_modules()
        if any(p.requires_grad for p in m.parameters(recurse=False))
    ]


def unsupported_modules(model: nn.Module) -> list[str]:
    """Why the fast engine cannot handle `model`, one line per obstacle found before running it."""
    problems = [
        f"{name or '<root>'} ({type(m).__name__}) owns trainable parameters and has no rule"
        for name, m in _trainable_owners(model)
        if type(m) not in _RULES
    ]
    seen: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.requires_grad and id(p) in seen:
            problems.append(f"parameter {name} is shared with {seen[id(p)]}")
        seen.setdefault(id(p), name)
    return problems


class _Tap:
    """Forward hooks on every module owning trainable parameters; one `_Record` per call."""

    def __init__(self, model: nn.Module, strategy: str, on_grad=None):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        problems = unsupported_modules(model)
        if problems:
            raise UnsupportedModelError("fast per-example norms: " + "; ".join(problems))
        self.owners = _trainable_owners(model)
        self.strategy = strategy
        self.on_grad = on_grad
        self.records: list[_Record] = []
        self.handles: list = []

    def __enter__(self) -> _Tap:
        for name, m in self.owners:
            self.handles.append(m.register_forward_hook(self._capture(name)))
        return self

    def __exit__(self, *exc) -> None:
        self.reset()
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _capture(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0] if inputs else None
            if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor):
                return  # check() reports the missing record
            rec = _Record(
                name,
                module,
                x.detach(),
                x._version,
                get_gradient_edge(output) if output.requires_grad else None,
                _form(module, x, output, self.strategy),
                x.grad_fn is None,
            )
            if type(module) is nn.GroupNorm:
                rec.stats = _group_norm_stats(output, len(x), module.num_groups)
            self.records.append(rec)
            if self.on_grad is not None and output.requires_grad:
                # A hook registered before an in-place edit of the tensor receives the gradient
                # w.r.t. the value before the edit (autograd notes, "Tensor hooks and in-place").
                self.handles.append(output.register_hook(lambda g: self.on_grad(rec, g)))

        return hook

    def check(self) -> list[_Record]:
        """The records of the forward just run, once each was verified to be usable."""
        calls: dict[str, int] = {}
        for rec in self.records:
            calls[rec.name] = calls.get(rec.name, 0) + 1
            # The rules read the captured input's values; the output is only a place in the graph.
            if rec.input._version != rec.input_version:
                raise UnsupportedModelError(
                    f"fast per-example norms: the input of {rec.name} was modified in place after "
                    "the module ran (use an out-of-place op there)"
                )
        odd = [f"{name} ran {calls.get(name, 0)} times" for name, _ in self.owners if calls.get(name, 0) != 1]
        if odd:
            raise UnsupportedModelError(
                "fast per-example norms need every module that owns trainable parameters to run "
                "exactly once per forward with a tensor input and output: " + ", ".join(odd)
            )
        return list(self.records)

    def reset(self) -> None:
        """Forget the records of the last forward and remove their gradient hooks."""
        for h in self.handles[len(self.owners) :]:
            h.remove()
        del self.handles[len(self.owners) :]
        for rec in self.records:
            rec.input = rec.edge = rec.stats = None
        self.records.clear()


def _layer_sq(rec: _Record, g: torch.Tensor, keep: bool = False) -> tuple[torch.Tensor, Grads]:
    # The rules pick their own precision; an enclosing autocast must not re-cast their matmuls.
    with torch.autocast(g.device.type, enabled=False):
        return _RULES[type(rec.module)](rec, g, keep)


# --------------------------------------------------------------------------- fast engine


def per_example_grad_norms_fast(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    chunk_size: int = 256,
    strategy: str = "auto",
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """Fast engine (model in eval mode); raises `UnsupportedModelError` where it cannot be exact.

    `strategy` forces one form for Conv2d and sequence Linear layers: "ghost" (Gram matrices),
    "materialize" (per-example weight gradients, device default), "unfold" (unfold + batched
    matmul) or "grouped" (grouped-convolution weight gradient); "auto" picks per layer by cost.
    `loss_fn` replaces the cross-entropy by another per-example loss (see `LossFn`).
    """
    _check_chunk_size(chunk_size)
    out = torch.zeros(len(x), dtype=torch.float32, device=x.device)
    with _eval_mode(model), torch.enable_grad(), _Tap(model, strategy) as tap:
        for s in range(0, len(x), chunk_size):
            tap.reset()
            logits = model(x[s : s + chunk_size].detach())
            # A sum, not a mean: the gradient w.r.t. example i's activations is then the gradient
            # of example i's own loss, unscaled by the chunk size.
            if loss_fn is None:
                loss = F.cross_entropy(logits, y[s : s + chunk_size], reduction="sum")
            else:
                loss = _per_example_losses(loss_fn, logits, y[s : s + chunk_size]).sum()
            records = [r for r in tap.check() if r.edge is not None]
            if not records:
                continue
            # Gradients w.r.t. the layer outputs only: autograd then skips every weight-gradient
            # kernel, which the norms never need.
            grads = list(torch.autograd.grad(loss, [r.edge for r in records], allow_unused=True))
            del logits, loss
            sq = torch.zeros(len(x[s : s + chunk_size]), dtype=torch.float32, device=x.device)
            for i, rec in enumerate(records):
                g, grads[i] = grads[i], None
                if g is not None:
                    sq += _layer_sq(rec, g)[0]
                rec.input = None
            out[s : s + chunk_size] = sq.sqrt()
    return out


def loss_backward_with_norms(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    strategy: str = "auto",
    reuse_per_example: bool = True,
    loss_fn: LossFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training forward/backward that also yields each example's gradient norm.

    Runs the model in its current mode, computes `losses = CE(model(x), y, reduction="none")`
    (or `loss_fn(model(x), y)`, one loss per example, see `LossFn`) and back-propagates
    `losses.mean()`: `.grad` receives what `losses.mean().backward()` would add (zero the
    gradients first, as for any backward). Returns detached `(logits, losses, norms)`,
    `norms[i] = ||grad losses[i]||` in float32.

    With `reuse_per_example` (default), parameters whose per-example gradients the norms need
    anyway (most convolution kernels, all biases and norm-layer affines) get their batch
    gradient as the sum of those, and autograd skips their weight-gradient kernels: the same
    gradient up to float rounding (summation order), for less work. Only parameters receive
    gradients then (an input that requires grad gets none). False leaves every gradient to
    autograd, bit-identical to the plain backward.

    Where the fast engine cannot be exact it warns, back-propagates plainly and takes the
    norms from the reference engine (eval mode).
    """
    if len(x) == 0:
        raise ValueError("loss_backward_with_norms needs a non-empty batch")
    problems = unsupported_modules(model)
    if problems:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        _warn_fallback("; ".join(problems))
        return _plain_backward_then_reference(model, x, y, loss_fn)
    batch = len(x)
    sq = torch.zeros(batch, dtype=torch.float32, device=x.device)
    keep = False

    def on_grad(rec: _Record, g: torch.Tensor) -> None:
        nonlocal sq
        layer_sq, grads = _layer_sq(rec, g, keep)
        sq = sq + layer_sq
        for p, total in grads:
            _accumulate(p, total)
        rec.input = None  # free the activation as soon as its layer is done

    fallback = None
    with torch.enable_grad(), _Tap(model, strategy, on_grad=on_grad) as tap:
        logits = model(x)
        losses = _per_example_losses(loss_fn, logits, y)
        loss = losses.mean()
        try:
            records = tap.check()
        except UnsupportedModelError as err:
            tap.reset()  # removes the gradient hooks; the backward below is then plain
            records, fallback = [], str(err)
        if reuse_per_example and records:
            keep = True
            kept = {id(p) for rec in records for p in _kept_params(rec)}
            rest = [p for p in model.parameters() if p.requires_grad and id(p) not in kept]
            # Asking for the gradient at the outputs of the layers fed by graph leaves (the
            # model input) makes it flow through every hooked layer between them and the loss,
            # even where no parameter there is left to autograd. autograd.grad rather than
            # backward(inputs=...): the latter clones each non-leaf gradient into its .grad.
            forced = [r.edge for r in records if r.fed_by_leaf and r.edge is not None]
            if not forced:  # the input came with a graph of its own: ask at every layer
                forced = [r.edge for r in records if r.edge is not None]
            if rest or forced:
                grads = torch.autograd.grad(loss, rest + forced, allow_unused=True)
                for p, total in zip(rest, grads):
                    if total is not None:
                        _accumulate(p, total)
                del grads
        else:
            loss.backward()
    logits, losses = logits.detach(), losses.detach()
    if fallback is not None:
        _warn_fallback(fallback)
        return logits, losses, per_example_grad_norms_reference(model, x, y, loss_fn=loss_fn)
    # The backward carried d(mean)/d(output) = (per-example gradient) / batch.
    return logits, losses, sq.sqrt() * batch


def _accumulate(p: nn.Parameter, total: torch.Tensor) -> None:
    # What backward() does with a parameter's gradient: set it, or add to the one already there.
    total = total.to(p.dtype)
    if p.grad is None:
        p.grad = total
    else:
        p.grad.add_(total)


def _plain_backward_then_reference(model, x, y, loss_fn: LossFn | None = None):
    logits = model(x)
    losses = _per_example_losses(loss_fn, logits, y)
    losses.mean().backward()
    return logits.detach(), losses.detach(), per_example_grad_norms_reference(model, x, y, loss_fn=loss_fn)


def _warn_fallback(reason: str) -> None:
    warnings.warn(
        f"fast per-example gradient norms unavailable, using the torch.func reference "
        f"engine instead: {reason}",
        RuntimeWarning,
        stacklevel=3,
    )


# --------------------------------------------------------------------------- entry points


def per_example_grad_norms(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    chunk_size: int = 256,
    engine: str = "fast",
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """float32 [N] norms of each example's own loss gradient, model in eval mode.

    `.grad` and module modes are left as they were. engine="fast" falls back to the reference
    (with a RuntimeWarning) for models it cannot handle exactly. `loss_fn`: a per-example loss
    instead of the cross-entropy (see `LossFn`).
    """
    _check_chunk_size(chunk_size)
    if engine == "reference":
        return per_example_grad_norms_reference(model, x, y, chunk_size=chunk_size, loss_fn=loss_fn)
    if engine != "fast":
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    try:
        return per_example_grad_norms_fast(model, x, y, chunk_size=chunk_size, loss_fn=loss_fn)
    except UnsupportedModelError as err:
        _warn_fallback(str(err))
        return per_example_grad_norms_reference(model, x, y, chunk_size=chunk_size, loss_fn=loss_fn)


def dataset_grad_norms(
    model: torch.nn.Module,
    x,
    y,
    *,
    batch_size: int = 512,
    device=None,
    progress: bool = False,
    desc: str = "grad norms",
    engine: str = "fast",
) -> np.ndarray:
    """Norms for a dataset that may not fit on the device; returns float32 numpy [N]."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if device is None:
        device = next(model.parameters()).device
    out = np.empty(len(x), dtype=np.float32)
    for s in tqdm(range(0, len(x), batch_size), desc=desc, disable=not progress):
        xb = x[s : s + batch_size].to(device)
        yb = y[s : s + batch_size].to(device)
        out[s : s + len(xb)] = per_example_grad_norms(model, xb, yb, engine=engine).cpu().numpy()
    return out
