"""The console stays small after launching a run: the launch is validated by torch-free code or
a subprocess, so the console process never imports torch (it grew to 590 MB when it did)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from console.launch import kill_run
from lowrank.rundir import RunDir

PROBE = Path(__file__).resolve().parent / "console_rss_probe.py"
REPO = Path(__file__).resolve().parents[3]
TINY = """\
name: rss-tiny
model: {name: tiny_convnet, kwargs: {width: 8}}
data: {name: synthetic, batch_size: 32, kwargs: {num_train: 256, num_val: 64, num_test: 64, image_size: 8}}
train: {epochs: 200, device: cpu}
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_console_stays_under_150_mb_and_torch_free_after_a_launch(home, tmp_path):
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "tiny.yaml").write_text(TINY)
    env = {**os.environ, "LOWRANK_PRESETS": str(presets), "LOWRANK_HOME": str(home),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(PROBE), str(home)], capture_output=True, text=True, env=env,
                          timeout=280, cwd=REPO)
    try:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["torch_imported"] is False
        assert report["rss_mb"] < 150, report
    finally:
        for run_dir in (home / "runs").iterdir() if (home / "runs").is_dir() else ():
            kill_run(RunDir(run_dir), grace=5)
