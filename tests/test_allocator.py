"""Retaining freed heap memory: fewer page faults per training step, bit-identical results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from perinstance.allocator import retain_freed_memory

SRC = Path(__file__).resolve().parents[1] / "src"

# trains the default model for a few steps in a fresh process; prints page faults per step and
# the weights' bytes as hex (a fresh process: glibc's thresholds are per process and one-way)
SCRIPT = """
import hashlib, json, resource, torch
import torch.nn.functional as F
from perinstance.allocator import retain_freed_memory
applied = retain_freed_memory()
torch.manual_seed(0)
torch.set_num_threads(1)
from perinstance.models import build_model
from perinstance.optim import SGD
model = build_model("smallcnn", num_classes=10, input_shape=(1, 28, 28), width=16, norm_groups=4)
opt = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=2e-3)
x, y = torch.randn(512, 1, 28, 28), torch.randint(0, 10, (512,))
def step(i):
    rows = slice(64 * (i % 8), 64 * (i % 8 + 1))
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x[rows]), y[rows]).backward()
    opt.step()
for i in range(5):
    step(i)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(5, 25):
    step(i)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
print(json.dumps({"applied": applied, "faults_per_step": faults, "weights": digest}))
"""


def _train(tuning: bool) -> dict:
    env = dict(os.environ, PERINSTANCE_MALLOC_TUNING="1" if tuning else "0")
    env["PYTHONPATH"] = f"{SRC}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.pop("MALLOC_MMAP_THRESHOLD_", None), env.pop("MALLOC_TRIM_THRESHOLD_", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning applies to glibc's malloc only")
def test_retaining_freed_memory_removes_page_faults_and_keeps_the_numbers():
    tuned, default = _train(True), _train(False)
    assert tuned["applied"] is True and default["applied"] is False
    assert tuned["weights"] == default["weights"]  # allocation placement never changes arithmetic
    # the default model's activations are multi-megabyte: glibc's defaults map and fault them in
    # every step, the raised thresholds keep them in the heap
    assert default["faults_per_step"] > 100
    assert tuned["faults_per_step"] < 0.1 * default["faults_per_step"]


def test_the_environment_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv("PERINSTANCE_MALLOC_TUNING", "0")
    assert retain_freed_memory() is False
