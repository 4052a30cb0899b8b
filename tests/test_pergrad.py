import numpy as np
import pytest
import torch
import torch.nn.functional as F

from perinstance.models import build_model
from perinstance.pergrad import (dataset_grad_norms, naive_per_example_grad_norms,
                                 per_example_grad_norms)


def _setup(name, shape, n, width, classes=10):
    torch.manual_seed(0)
    model = build_model(name, num_classes=classes, input_shape=shape, width=width)
    return model, torch.randn(n, *shape), torch.randint(0, classes, (n,))


def _rel_err(a, b):
    return ((a - b).abs() / b.abs().clamp_min(1e-12)).max().item()


@pytest.mark.parametrize("name,shape,n,width", [
    ("smallcnn", (1, 28, 28), 24, 16),
    ("resnet18", (3, 32, 32), 6, 8),
])
def test_matches_naive(name, shape, n, width):
    model, x, y = _setup(name, shape, n, width)
    fast = per_example_grad_norms(model, x, y)
    assert fast.shape == (n,) and fast.dtype == torch.float32
    assert _rel_err(fast, naive_per_example_grad_norms(model, x, y)) < 1e-4


def test_chunking_does_not_change_result():
    model, x, y = _setup("smallcnn", (1, 8, 8), 23, 8)
    torch.testing.assert_close(per_example_grad_norms(model, x, y, chunk_size=5),
                               per_example_grad_norms(model, x, y, chunk_size=256))


def test_restores_mode_and_leaves_grads_untouched():
    model, x, y = _setup("smallcnn", (1, 8, 8), 4, 4)
    model.train()
    model.classifier.eval()  # mixed modes must come back exactly as they were
    modes = [m.training for m in model.modules()]
    for fn in (per_example_grad_norms, naive_per_example_grad_norms):
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
    torch.testing.assert_close(per_example_grad_norms(model, x, y),
                               naive_per_example_grad_norms(model, x, y))
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
