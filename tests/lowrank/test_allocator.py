"""The worker's glibc malloc settings (lowrank.train.allocator): a training step's activations
are reused from the heap instead of unmapped and page-faulted back every step."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from lowrank.config import load
from lowrank.rundir import RunDir
from lowrank.train import main

REPO = Path(__file__).resolve().parents[2]

STEPS = """
import resource, sys, torch
if sys.argv[1] == "tuned":
    from lowrank.train.allocator import tune_cpu_allocator
    tune_cpu_allocator()
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                          torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                          torch.nn.Flatten(), torch.nn.Linear(32, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
def step():
    loss = torch.nn.functional.cross_entropy(net(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_step(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.slow
@pytest.mark.subprocess
def test_tuned_steps_do_not_page_fault_their_activations_back():
    plain, tuned = faults_per_step("plain"), faults_per_step("tuned")
    # glibc's defaults: the step's activations are trimmed and faulted back every step
    assert tuned * 20 < plain, (plain, tuned)  # measured: ~7000 vs ~50 faults per step


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
@pytest.mark.subprocess
def test_the_worker_applies_and_records_the_settings(home):
    config = load(REPO / "presets" / "quickstart.yaml", [
        "data.name=synthetic", "data.batch_size=16", "model.kwargs.width=8", "train.epochs=1", "train.device=cpu",
        "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 32, num_val: 16, num_test: 16}"])
    run = RunDir.create(config.to_dict(), home=home)
    assert main([str(run.path)]) == 0
    assert run.read_status()["provenance"]["malloc"] == "glibc mmap_threshold=33554432 trim_threshold=67108864"
