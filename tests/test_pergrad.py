import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from perinstance.models import MaxPool2x2, build_model
from perinstance.pergrad import (
    UnsupportedModelError,
    dataset_grad_norms,
    loss_backward_with_norms,
    naive_per_example_grad_norms,
    per_example_grad_norms,
    per_example_grad_norms_fast,
    per_example_grad_norms_reference,
    unsupported_modules,
)


def _setup(name, shape, n, width, classes=10):
    torch.manual_seed(0)
    model = build_model(name, num_classes=classes, input_shape=shape, width=width)
    return model, torch.randn(n, *shape), torch.randint(0, classes, (n,))


def _rel_err(a, b):
    return ((a - b).abs() / b.abs().clamp_min(1e-12)).max().item()


def _close_to_scale(a, b, rtol=1e-5):
    # Sums in another order differ by rounding relative to the tensor's scale, not per element.
    return (a - b).abs().max().item() <= rtol * b.abs().max().item()


@pytest.mark.parametrize(
    "name,shape,n,width",
    [
        ("smallcnn", (1, 28, 28), 24, 16),
        ("resnet18", (3, 32, 32), 6, 8),
    ],
)
def test_matches_naive(name, shape, n, width):
    model, x, y = _setup(name, shape, n, width)
    fast = per_example_grad_norms(model, x, y)
    assert fast.shape == (n,) and fast.dtype == torch.float32
    assert _rel_err(fast, naive_per_example_grad_norms(model, x, y)) < 1e-4


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_chunking_does_not_change_result(engine):
    model, x, y = _setup("smallcnn", (1, 8, 8), 23, 8)
    torch.testing.assert_close(
        per_example_grad_norms(model, x, y, chunk_size=5, engine=engine),
        per_example_grad_norms(model, x, y, chunk_size=256, engine=engine),
    )
    assert per_example_grad_norms(model, x, y, chunk_size=1, engine=engine).shape == (23,)


def test_restores_mode_and_leaves_grads_untouched():
    model, x, y = _setup("smallcnn", (1, 8, 8), 4, 4)
    model.train()
    model.classifier.eval()  # mixed modes must come back exactly as they were
    modes = [m.training for m in model.modules()]
    for fn in (per_example_grad_norms, per_example_grad_norms_reference, naive_per_example_grad_norms):
        fn(model, x, y)
        assert [m.training for m in model.modules()] == modes
        assert all(p.grad is None for p in model.parameters())


def test_works_under_no_grad_and_skips_frozen_params():
    model, x, y = _setup("smallcnn", (1, 8, 8), 5, 4)
    with torch.no_grad():
        ref = per_example_grad_norms(model, x, y)
    torch.testing.assert_close(ref, naive_per_example_grad_norms(model, x, y))
    for p in model.features.parameters():
        p.requires_grad_(False)
    torch.testing.assert_close(per_example_grad_norms(model, x, y), naive_per_example_grad_norms(model, x, y))
    assert (per_example_grad_norms(model, x, y) < ref).all()


@pytest.mark.parametrize("bias", [False, True])
def test_logistic_regression_closed_form(bias):
    # dCE/dW = (p - onehot(y)) x^T and dCE/db = p - onehot(y), so the norm factorises.
    torch.manual_seed(1)
    model = torch.nn.Linear(6, 4, bias=bias)
    x, y = torch.randn(9, 6), torch.randint(0, 4, (9,))
    residual = (model(x).softmax(1) - F.one_hot(y, 4)).norm(dim=1)
    expected = residual * (x.pow(2).sum(1) + (1.0 if bias else 0.0)).sqrt()
    torch.testing.assert_close(per_example_grad_norms(model, x, y), expected.detach())


def test_dataset_grad_norms_matches_direct_call():
    model, x, y = _setup("smallcnn", (1, 8, 8), 11, 4)
    out = dataset_grad_norms(model, x, y, batch_size=4, progress=True)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (11,)
    np.testing.assert_allclose(out, per_example_grad_norms(model, x, y).numpy(), rtol=1e-6)
    assert dataset_grad_norms(model, x[:0], y[:0]).shape == (0,)


# ----------------------------------------------------------------------- fast engine


class OddConvNet(nn.Module):
    """Every Conv2d option the fast engine handles: bias, stride, groups, dilation, rectangular
    kernels, 'same' and non-zero padding modes, plus a sequence Linear and a bias-free GroupNorm."""

    def __init__(self, classes=5):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(6, 8, (3, 2), padding="same", padding_mode="reflect", groups=2, dilation=(1, 2))
        self.c3 = nn.Conv2d(8, 4, 1, padding=1, padding_mode="circular", bias=False)
        self.gn = nn.GroupNorm(2, 4)
        self.gn.bias.requires_grad_(False)
        self.rows = nn.Linear(8, 6)  # applied to each of the 4 channels' rows: a sequence input
        self.fc = nn.Linear(4 * 8 * 6, classes)

    def forward(self, x):
        h = self.gn(self.c3(torch.relu(self.c2(self.c1(x)))))
        return self.fc(torch.tanh(self.rows(h)).flatten(1))


class TinySequenceNet(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.embed = nn.Linear(5, 16)
        self.norm = nn.LayerNorm(16)
        self.mix = nn.Linear(16, 16, bias=False)
        self.head = nn.Linear(16, classes)

    def forward(self, x):  # x: [B, T, 5]
        h = torch.relu(self.mix(self.norm(self.embed(x))))
        return self.head(h.mean(1))


def _case(name):
    torch.manual_seed(0)
    if name == "smallcnn-28":
        model, shape, n, classes = (
            build_model("smallcnn", num_classes=10, input_shape=(1, 28, 28), width=16),
            (1, 28, 28),
            12,
            10,
        )
    elif name == "smallcnn-8":
        model, shape, n, classes = (
            build_model("smallcnn", num_classes=3, input_shape=(1, 8, 8), width=4, norm_groups=2),
            (1, 8, 8),
            9,
            3,
        )
    elif name == "resnet18":
        model, shape, n, classes = (
            build_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=4, norm_groups=2),
            (3, 32, 32),
            5,
            10,
        )
    elif name == "oddconv":
        model, shape, n, classes = OddConvNet(), (3, 12, 12), 7, 5
    elif name == "sequence":
        model, shape, n, classes = TinySequenceNet(), (7, 5), 6, 4
    x = torch.randn(n, *shape)
    y = torch.randint(0, classes, (n,))
    return model, x, y


CASES = ["smallcnn-28", "smallcnn-8", "resnet18", "oddconv", "sequence"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("strategy", ["auto", "ghost", "unfold", "grouped"])
def test_fast_engine_matches_reference(case, strategy):
    model, x, y = _case(case)
    if strategy == "ghost" and case == "resnet18":
        x, y = x[:2], y[:2]  # (HW)^2 Gram matrices at 32x32: keep the test quick
    reference = per_example_grad_norms_reference(model, x, y)
    fast = per_example_grad_norms_fast(model, x, y, strategy=strategy)
    assert fast.shape == reference.shape and fast.dtype == torch.float32
    assert _rel_err(fast, reference) < 1e-4
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("reuse", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_loss_backward_with_norms_is_a_training_step(case, reuse):
    model, x, y = _case(case)
    model.train()
    plain = {k: v.clone() for k, v in model.state_dict().items()}
    logits = model(x)
    losses = F.cross_entropy(logits, y, reduction="none")
    losses.mean().backward()
    expected = {name: p.grad for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    got_logits, got_losses, norms = loss_backward_with_norms(model, x, y, reuse_per_example=reuse)
    for name, p in model.named_parameters():
        if expected[name] is None:
            assert p.grad is None, name
        elif reuse:  # summed per-example gradients: the same up to summation order
            assert p.grad.dtype == p.dtype and p.grad.shape == p.shape
            assert _close_to_scale(p.grad, expected[name]), name
        else:  # the same autograd graph: bit-identical gradients
            assert torch.equal(p.grad, expected[name]), name
    assert torch.equal(got_logits, logits.detach()) and torch.equal(got_losses, losses.detach())
    assert not got_logits.requires_grad and not norms.requires_grad
    assert model.training
    assert _rel_err(norms, per_example_grad_norms_reference(model, x, y)) < 1e-4
    assert all(torch.equal(v, plain[k]) for k, v in model.state_dict().items())


def test_loss_backward_with_norms_input_with_its_own_graph():
    model, x, y = _case("resnet18")
    scale = torch.tensor(1.5, requires_grad=True)  # e.g. a differentiable preprocessing step
    F.cross_entropy(model(x * scale), y).backward()
    expected = [p.grad for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    _, _, norms = loss_backward_with_norms(model, x * scale, y)
    for p, g in zip(model.parameters(), expected):
        assert _close_to_scale(p.grad, g)
    assert _rel_err(norms, per_example_grad_norms_reference(model, x * scale.detach(), y)) < 1e-4


@pytest.mark.parametrize("strategy", ["ghost", "unfold", "grouped"])
def test_loss_backward_with_norms_every_form(strategy):
    model, x, y = _case("oddconv")
    F.cross_entropy(model(x), y).backward()
    expected = [p.grad for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    _, _, norms = loss_backward_with_norms(model, x, y, strategy=strategy)
    for p, g in zip(model.parameters(), expected):
        if g is not None:
            assert _close_to_scale(p.grad, g)
    assert _rel_err(norms, per_example_grad_norms_reference(model, x, y)) < 1e-4


@pytest.mark.parametrize("reuse", [True, False])
def test_loss_backward_with_norms_accumulates_like_backward(reuse):
    model, x, y = _case("smallcnn-8")
    loss_backward_with_norms(model, x, y, reuse_per_example=reuse)
    once = [p.grad.clone() for p in model.parameters()]
    loss_backward_with_norms(model, x, y, reuse_per_example=reuse)  # accumulates, as backward() does
    for p, g in zip(model.parameters(), once):
        torch.testing.assert_close(p.grad, 2 * g)
    with pytest.raises(ValueError, match="non-empty"):
        loss_backward_with_norms(model, x[:0], y[:0])


class Scaled(nn.Module):
    """A module that owns a parameter the fast engine has no rule for."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return x * self.scale


class Reused(nn.Module):
    """One Linear applied twice: its per-example gradient is a sum the hooks cannot see."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.inner(torch.tanh(self.inner(x))))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6, bias=False)
        self.b = nn.Linear(6, 6, bias=False)
        self.b.weight = self.a.weight
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.b(torch.tanh(self.a(x))))


@pytest.mark.parametrize(
    "make,shape,static",
    [
        (lambda: nn.Sequential(nn.Linear(6, 4), Scaled(), nn.Linear(4, 3)), (6,), True),
        (Tied, (6,), True),
        (Reused, (6,), False),
    ],
)
def test_unsupported_models_fall_back_to_reference(make, shape, static):
    torch.manual_seed(0)
    model, x, y = make(), torch.randn(5, *shape), torch.randint(0, 3, (5,))
    assert bool(unsupported_modules(model)) == static
    with pytest.raises(UnsupportedModelError):
        per_example_grad_norms_fast(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    expected = naive_per_example_grad_norms(model, x, y)
    with pytest.warns(RuntimeWarning, match="reference"):
        got = per_example_grad_norms(model, x, y)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)

    losses = F.cross_entropy(model(x), y, reduction="none")
    losses.mean().backward()
    grads = [p.grad for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    with pytest.warns(RuntimeWarning, match="reference"):
        _, got_losses, norms = loss_backward_with_norms(model, x, y)
    torch.testing.assert_close(norms, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_losses, losses.detach())
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g)


# ----------------------------------------------------------------------- in-place edits


class InPlaceConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.act = nn.ReLU(inplace=True)  # overwrites the conv output the hook saw
        self.head = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x):
        return self.head(self.act(self.conv(x)).flatten(1))


class InPlaceCNN(nn.Module):
    """SmallCNN's layout with in-place activations after GroupNorm, Conv2d and Linear layers."""

    def __init__(self, act=lambda: nn.ReLU(inplace=True), classes=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.GroupNorm(2, 4),
            act(),
            MaxPool2x2(),
            nn.Conv2d(4, 8, 3, padding=1),
            act(),  # straight on a convolution's output
            nn.GroupNorm(2, 8),
            act(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 6), act(), nn.Linear(6, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class InPlaceResidual(nn.Module):
    """torchvision's BasicBlock idiom: `out += shortcut(x)` on a GroupNorm output, then relu_."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(2, 4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(2, 4)
        self.shortcut = nn.Conv2d(2, 4, 1, bias=False)
        self.head = nn.Linear(4 * 6 * 6, classes)

    def forward(self, x):
        out = self.norm1(self.conv1(x)).relu_()
        out = self.norm2(self.conv2(out))
        out += self.shortcut(x)
        return self.head(out.relu_().flatten(1))


IN_PLACE = {
    "conv-relu": (InPlaceConv, (1, 8, 8)),
    "cnn-relu": (InPlaceCNN, (1, 8, 8)),
    "cnn-leaky": (lambda: InPlaceCNN(lambda: nn.LeakyReLU(0.1, inplace=True)), (1, 8, 8)),
    "cnn-relu6": (lambda: InPlaceCNN(lambda: nn.ReLU6(inplace=True)), (1, 8, 8)),
    "cnn-silu": (lambda: InPlaceCNN(lambda: nn.SiLU(inplace=True)), (1, 8, 8)),
    "cnn-elu": (lambda: InPlaceCNN(lambda: nn.ELU(inplace=True)), (1, 8, 8)),
    "residual": (InPlaceResidual, (2, 6, 6)),
}


def _in_place_case(name):
    make, shape = IN_PLACE[name]
    torch.manual_seed(0)
    model = make()
    return model, 3 * torch.randn(6, *shape), torch.randint(0, 3, (6,))


@pytest.mark.parametrize("case", sorted(IN_PLACE))
@pytest.mark.parametrize("strategy", ["auto", "ghost", "unfold", "grouped"])
def test_in_place_activations_stay_on_the_fast_engine(case, strategy):
    model, x, y = _in_place_case(case)
    assert unsupported_modules(model) == []
    reference = per_example_grad_norms_reference(model, x, y)
    assert torch.allclose(reference, naive_per_example_grad_norms(model, x, y), rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to the reference would warn
        fast = per_example_grad_norms_fast(model, x, y, strategy=strategy)
    assert _rel_err(fast, reference) < 1e-4
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("reuse", [True, False])
@pytest.mark.parametrize("case", sorted(IN_PLACE))
def test_in_place_activations_in_a_training_step(case, reuse):
    model, x, y = _in_place_case(case)
    model.train()
    losses = F.cross_entropy(model(x), y, reduction="none")
    losses.mean().backward()
    expected = {name: p.grad for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, got_losses, norms = loss_backward_with_norms(model, x, y, reuse_per_example=reuse)
    for name, p in model.named_parameters():
        if reuse:
            assert _close_to_scale(p.grad, expected[name]), name
        else:
            assert torch.equal(p.grad, expected[name]), name
    assert torch.equal(got_losses, losses.detach())
    assert _rel_err(norms, per_example_grad_norms_reference(model, x, y)) < 1e-4


class EditsItsInput(nn.Module):
    """Scales its input in place after the first layer used it: that layer's captured input,
    from which its per-example weight gradient would be formed, no longer holds what it saw."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        out = self.fc(x)
        x.mul_(2.0)
        return out


def test_in_place_edit_of_a_captured_input_is_refused():
    torch.manual_seed(0)
    model, x, y = EditsItsInput(), torch.randn(4, 6), torch.randint(0, 3, (4,))
    with pytest.raises(UnsupportedModelError, match="input of fc was modified in place"):
        per_example_grad_norms_fast(model, x.clone(), y)


# ----------------------------------------------------------------------- per-example loss_fn


def _squared_error(out, target):
    return 0.5 * (out - target).pow(2).sum(1)


def test_loss_fn_linear_regression_closed_form():
    # 0.5 ||W x + b - t||^2 has gradient r x^T (W) and r (b), r = W x + b - t, so its norm is
    # ||r|| sqrt(||x||^2 + 1).
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, t = torch.randn(7, 5), torch.randn(7, 3)
    with torch.no_grad():
        r = model(x) - t
    expected = r.norm(dim=1) * (x.pow(2).sum(1) + 1).sqrt()
    for engine in ("fast", "reference"):
        got = per_example_grad_norms(model, x, t, engine=engine, loss_fn=_squared_error)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)
    _, losses, norms = loss_backward_with_norms(model, x, t, loss_fn=_squared_error)
    torch.testing.assert_close(norms, expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(losses, 0.5 * r.pow(2).sum(1))
    torch.testing.assert_close(model.bias.grad, r.mean(0))
    torch.testing.assert_close(model.weight.grad, r.T @ x / len(x))


@pytest.mark.parametrize("case", ["smallcnn-8", "oddconv", "sequence"])
def test_loss_fn_matches_naive_and_plain_backward(case):
    model, x, y = _case(case)

    def smoothed(logits, target):
        return F.cross_entropy(logits, target, reduction="none", label_smoothing=0.2)

    naive = naive_per_example_grad_norms(model, x, y, loss_fn=smoothed)
    assert not torch.allclose(naive, naive_per_example_grad_norms(model, x, y), rtol=1e-3)
    assert _rel_err(per_example_grad_norms_fast(model, x, y, loss_fn=smoothed), naive) < 1e-4
    assert _rel_err(per_example_grad_norms_reference(model, x, y, loss_fn=smoothed), naive) < 1e-4
    smoothed(model(x), y).mean().backward()
    expected = [p.grad for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    _, _, norms = loss_backward_with_norms(model, x, y, loss_fn=smoothed)
    assert _rel_err(norms, naive) < 1e-4
    for p, g in zip(model.parameters(), expected):
        if g is not None:
            assert _close_to_scale(p.grad, g)


def test_loss_fn_cross_entropy_is_bit_identical_to_the_default():
    model, x, y = _case("smallcnn-8")
    default = loss_backward_with_norms(model, x, y)
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    explicit = loss_backward_with_norms(
        model, x, y, loss_fn=lambda logits, t: F.cross_entropy(logits, t, reduction="none")
    )
    assert all(torch.equal(a, b) for a, b in zip(default, explicit))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


def test_loss_fn_on_the_fallback_path():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), Scaled(), nn.Linear(4, 3))
    x, t = torch.randn(5, 6), torch.randn(5, 3)
    expected = naive_per_example_grad_norms(model, x, t, loss_fn=_squared_error)
    with pytest.warns(RuntimeWarning, match="reference"):
        _, _, norms = loss_backward_with_norms(model, x, t, loss_fn=_squared_error)
    torch.testing.assert_close(norms, expected, rtol=1e-5, atol=1e-6)


def test_loss_fn_must_return_one_loss_per_example():
    model, x, y = _case("smallcnn-8")
    with pytest.raises(ValueError, match=r"loss_fn must return one loss per example, shape \(9,\)"):
        loss_backward_with_norms(model, x, y, loss_fn=F.cross_entropy)  # a mean: a scalar
    with pytest.raises(ValueError, match="loss_fn"):
        per_example_grad_norms_fast(model, x, y, loss_fn=lambda logits, t: logits)


def test_unused_module_and_frozen_first_layer():
    model, x, y = _case("smallcnn-8")
    model.features[0].requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(
            per_example_grad_norms(model, x, y), naive_per_example_grad_norms(model, x, y)
        )
    model.spare = nn.Linear(3, 3)  # never called: the hooks would miss a parameter, so fall back
    with pytest.raises(UnsupportedModelError, match="ran 0 times"):
        per_example_grad_norms_fast(model, x, y)


def test_float64_model():
    model, x, y = _case("oddconv")
    model, x = model.double(), x.double()
    fast = per_example_grad_norms_fast(model, x, y)
    assert fast.dtype == torch.float32
    assert _rel_err(fast, per_example_grad_norms_reference(model, x, y)) < 1e-6


def test_bad_arguments():
    model, x, y = _case("smallcnn-8")
    with pytest.raises(ValueError, match="engine"):
        per_example_grad_norms(model, x, y, engine="turbo")
    with pytest.raises(ValueError, match="strategy"):
        per_example_grad_norms_fast(model, x, y, strategy="magic")
    with pytest.raises(ValueError, match="chunk_size"):
        per_example_grad_norms_fast(model, x, y, chunk_size=0)


def _autocast_devices():
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


@pytest.mark.parametrize("device", _autocast_devices())
@pytest.mark.parametrize("case", ["smallcnn-28", "resnet18"])
def test_bf16_autocast_is_close(device, case):
    model, x, y = _case(case)
    model, x, y = model.to(device), x.to(device), y.to(device)
    reference = per_example_grad_norms_reference(model, x, y)  # fp32
    with torch.autocast(device, dtype=torch.bfloat16):
        fast = per_example_grad_norms_fast(model, x, y)
        _, _, in_step = loss_backward_with_norms(model, x, y)
    assert fast.dtype == torch.float32
    # bf16 keeps ~3 significant digits; the layers' own rounding dominates the difference.
    assert _rel_err(fast, reference) < 5e-2
    assert _rel_err(in_step, reference) < 5e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", CASES)
def test_cuda_fp32_matches_reference(case):
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # exact fp32
    try:
        model, x, y = _case(case)
        model, x, y = model.cuda(), x.cuda(), y.cuda()
        reference = per_example_grad_norms_reference(model, x, y)
        for strategy in ("auto", "ghost", "unfold", "grouped"):
            fast = per_example_grad_norms_fast(model, x, y, strategy=strategy)
            assert _rel_err(fast, reference) < 1e-4, strategy
        F.cross_entropy(model(x), y).backward()
        expected = [p.grad for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        _, _, norms = loss_backward_with_norms(model, x, y)
        assert _rel_err(norms, reference) < 1e-4
        for p, g in zip(model.parameters(), expected):
            if g is not None:
                assert _close_to_scale(p.grad, g)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
