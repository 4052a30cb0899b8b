from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from perinstance.barrier import barrier_heights, interpolation_losses
from perinstance.models import build_model


def test_loss_linear_along_the_path_has_no_barrier():
    lambdas = np.linspace(0, 1, 25)
    losses = np.outer(1 - lambdas, [0.3, 2.0]) + np.outer(lambdas, [1.1, 0.5])
    np.testing.assert_allclose(barrier_heights(losses, lambdas), 0.0, atol=1e-12)


def test_hand_built_non_convex_path():
    lambdas = np.array([0, 1 / 3, 2 / 3, 1])
    losses = np.array([[1.0], [3.0], [3.0], [2.0]])
    # straight line 1, 4/3, 5/3, 2 -> excess 0, 5/3, 4/3, 0
    assert barrier_heights(losses, lambdas)[0] == pytest.approx(5 / 3)
    assert barrier_heights(losses, lambdas, "endpoints_mean")[0] == pytest.approx(3.0 - 1.5)
    convex = np.array([[1.0], [0.2], [0.3], [2.0]])
    assert barrier_heights(convex, lambdas)[0] == 0.0  # the endpoints themselves bound it below
    with pytest.raises(ValueError, match="barrier.variant"):
        barrier_heights(losses, lambdas, "max")
    with pytest.raises(ValueError, match="from 0 to 1"):
        barrier_heights(losses, lambdas[::-1])


def _model(seed):
    torch.manual_seed(seed)
    return build_model("smallcnn", width=4, norm_groups=2, num_classes=3, input_shape=(1, 8, 8))


def test_path_endpoints_and_midpoint_match_explicit_models():
    a, b = _model(0), _model(1)
    x, y = torch.randn(7, 1, 8, 8), torch.randint(0, 3, (7,))
    work = _model(2)
    losses = interpolation_losses(work, a.state_dict(), b.state_dict(), x, y, [0.0, 0.5, 1.0])
    mid = _model(3)
    mid.load_state_dict({k: (a.state_dict()[k] + b.state_dict()[k]) / 2 for k in a.state_dict()})
    with torch.no_grad():
        for row, model in zip(losses, (a, mid, b)):
            model.eval()
            np.testing.assert_allclose(row, F.cross_entropy(model(x), y, reduction="none").double().numpy(), rtol=1e-5)
    # the endpoint models were not modified; only the working copy was
    assert all(torch.equal(v, _model(0).state_dict()[k]) for k, v in a.state_dict().items())
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in work.state_dict().items())
