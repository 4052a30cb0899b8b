"""perinstance.optim.SGD against torch.optim.SGD: bit-identical weights, interchangeable state dicts."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from perinstance.models import build_model
from perinstance.optim import SGD


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("smallcnn", num_classes=10, input_shape=(1, 12, 12), width=4, norm_groups=2)


def _train(model, optimizer, steps, *, start=0, lrs=None) -> None:
    for step in range(start, start + steps):
        if lrs is not None:
            optimizer.param_groups[0]["lr"] = lrs[step]
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(16, 1, 12, 12, generator=g), torch.randint(0, 10, (16,), generator=g)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.9, 2e-3), (0.0, 0.0), (0.5, 0.0), (0.0, 1e-2)])
def test_the_same_weights_as_torch_sgd_bit_for_bit(momentum, weight_decay):
    ours, theirs = _model(), _model()
    lrs = [0.05, 0.05, 0.01, 0.2, 0.0, 0.03, 0.05, 0.05]
    _train(ours, SGD(ours.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay), 8, lrs=lrs)
    reference = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay)
    _train(theirs, reference, 8, lrs=lrs)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), name


def test_state_dicts_load_into_each_other_and_continue_identically():
    start = _model()
    ours = SGD(start.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-3)
    _train(start, ours, 3)
    saved_ours, weights = ours.state_dict(), copy.deepcopy(start.state_dict())

    # torch continues from our state, and we continue from torch's: both equal our own continuation
    via_torch = _model()
    via_torch.load_state_dict(weights)
    torch_opt = torch.optim.SGD(via_torch.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-3)
    torch_opt.load_state_dict(copy.deepcopy(saved_ours))  # torch adopts the tensors it is given
    _train(via_torch, torch_opt, 3, start=3)

    back = _model()
    back.load_state_dict(weights)
    ours_again = SGD(back.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-3)
    ours_again.load_state_dict(torch.optim.SGD(back.parameters(), lr=0.05, momentum=0.9).state_dict())
    assert all(b is None for b in ours_again._buffers)  # torch's fresh state has no buffers yet
    ours_again.load_state_dict(saved_ours)
    assert ours_again.param_groups[0]["weight_decay"] == 2e-3
    _train(back, ours_again, 3, start=3)

    _train(start, ours, 3, start=3)
    for a, b, c in zip(start.parameters(), via_torch.parameters(), back.parameters()):
        assert torch.equal(a, c), "ours from our state"
        assert torch.equal(a, b), "torch from our state"


def test_a_state_of_other_parameters_is_refused():
    model = _model()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="expected one group of"):
        opt.load_state_dict({"state": {}, "param_groups": [{"params": [0], "lr": 0.1}]})
    with pytest.raises(ValueError, match="nesterov"):
        state = opt.state_dict()
        state["param_groups"][0]["nesterov"] = True
        opt.load_state_dict(state)


def test_training_never_imports_torch_dynamo():
    """The reason the class exists: building and stepping it leaves torch._dynamo unimported."""
    code = (
        "import sys, torch, torch.nn.functional as F\n"
        "from perinstance.optim import SGD\n"
        "m = torch.nn.Linear(3, 2); o = SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)\n"
        "F.cross_entropy(m(torch.randn(4, 3)), torch.tensor([0, 1, 0, 1])).backward(); o.step()\n"
        "o.load_state_dict(o.state_dict())\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
