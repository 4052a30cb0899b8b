import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from perinstance.models import MaxPool2x2, available_models, build_model, count_parameters, group_norm


@pytest.mark.parametrize("name", ["smallcnn", "resnet18"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
def test_output_shape(name, shape):
    model = build_model(name, num_classes=7, input_shape=shape, width=4, norm_groups=8)
    assert model(torch.randn(3, *shape)).shape == (3, 7)


def test_available_models():
    assert available_models() == ["resnet18", "smallcnn"]


def test_smallcnn_parameter_count():
    n = count_parameters(build_model("smallcnn", num_classes=10, input_shape=(1, 28, 28)))
    assert 45_000 <= n <= 65_000


def test_resnet18_standard_width_has_about_11m_parameters():
    n = count_parameters(build_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=64))
    assert abs(n - 11.2e6) / 11.2e6 < 0.02


@pytest.mark.parametrize("name", ["smallcnn", "resnet18"])
def test_width_changes_parameter_count(name):
    counts = [
        count_parameters(build_model(name, num_classes=10, input_shape=(3, 32, 32), width=w))
        for w in (4, 8, 16)
    ]
    assert counts[0] < counts[1] < counts[2]


@pytest.mark.parametrize("name", ["smallcnn", "resnet18"])
def test_groupnorm_only(name):
    model = build_model(name, num_classes=10, input_shape=(3, 32, 32), width=12, norm_groups=8)
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_channels % m.num_groups == 0 for m in norms)


def test_group_norm_uses_gcd():
    assert group_norm(12, 8).num_groups == 4
    assert group_norm(7, 8).num_groups == 1
    assert group_norm(64, 8).num_groups == 8


def test_errors_name_config_keys():
    kw = dict(num_classes=10, input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match=r"model\.name.*available: resnet18, smallcnn"):
        build_model("vgg", **kw)
    with pytest.raises(ValueError, match=r"model\.width"):
        build_model("smallcnn", width=0, **kw)
    with pytest.raises(ValueError, match=r"model\.norm_groups"):
        build_model("resnet18", norm_groups=0, **kw)


@pytest.mark.parametrize("name", ["smallcnn", "resnet18"])
def test_build_is_deterministic(name):
    def build():
        torch.manual_seed(0)
        return build_model(name, num_classes=10, input_shape=(3, 32, 32), width=4)

    a, b = build().state_dict(), build().state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _pool_inputs(shape):
    """ReLU'd values with many tied window maxima: flat regions (zeros, repeated positives)."""
    torch.manual_seed(0)
    x = torch.randn(*shape).relu()
    x[..., :3, :] = 0.5  # ties at a positive value, rows 0-2
    x[..., -2:, -2:] = x[..., -1:, -1:]  # ties in the bottom-right window
    return x


@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 7, 9), (1, 2, 2, 2), (5, 1, 3, 3)])
def test_maxpool2x2_matches_maxpool2d_bit_for_bit(shape):
    x = _pool_inputs(shape)
    ours, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = MaxPool2x2()(ours), torch.nn.MaxPool2d(2)(ref)
    assert torch.equal(out, expected)
    g = torch.randn_like(out)
    out.backward(g)
    expected.backward(g)
    assert torch.equal(ours.grad, ref.grad)
    with torch.no_grad():
        assert torch.equal(MaxPool2x2()(x), expected)


def test_maxpool2x2_per_example_gradients_under_vmap():
    from torch.func import grad, vmap

    x = _pool_inputs((4, 2, 6, 6))
    weights = torch.randn(2, 3, 3)

    def loss(pool, xi):
        return (pool(xi.unsqueeze(0)).squeeze(0) * weights).sum()

    ours = vmap(grad(lambda xi: loss(MaxPool2x2(), xi)))(x)
    expected = torch.stack(
        [torch.autograd.functional.vjp(lambda v: loss(torch.nn.MaxPool2d(2), v), xi)[1] for xi in x]
    )
    assert torch.equal(ours, expected)
