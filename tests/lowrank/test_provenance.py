"""Provenance: the git commit + dirty flag of the working directory's repo and of lowrank,
versions, host and command line recorded in status.json (lowrank/provenance.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lowrank import provenance
from lowrank.rundir import RunDir

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "commit.gpgsign=false"]


def make_repo(path):
    path.mkdir()
    subprocess.run([*GIT, "init", "-q", str(path)], check=True)
    (path / "train.py").write_text("print(1)\n")
    subprocess.run([*GIT, "-C", str(path), "add", "train.py"], check=True)
    subprocess.run([*GIT, "-C", str(path), "commit", "-qm", "first"], check=True)
    commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    return commit


@pytest.fixture(autouse=True)
def no_cache(monkeypatch):
    monkeypatch.setattr(provenance, "_cache", {})


@pytest.mark.subprocess
def test_working_directory_repo_commit_and_dirty_flag(tmp_path, monkeypatch, home):
    repo = tmp_path / "study"
    commit = make_repo(repo)
    monkeypatch.chdir(repo)
    run = RunDir.create({"name": "x", "train": {"epochs": 1}}, home=home)
    recorded = run.read_status()["provenance"]
    assert recorded["repo"] == {"root": str(repo), "commit": commit, "dirty": False}
    assert recorded["command"] and recorded["cwd"] == str(repo) and recorded["host"]
    assert recorded["python"] == ".".join(map(str, sys.version_info[:3]))
    assert recorded["lowrank"]["version"] and recorded["lowrank"]["path"] == str(provenance.lowrank_source())

    (repo / "train.py").write_text("print(2)\n")  # a tracked file edited: dirty
    provenance._cache.clear()
    assert provenance.launch_provenance()["repo"]["dirty"] is True
    (repo / "scratch.txt").write_text("x")
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", "train.py"], check=True)
    provenance._cache.clear()
    assert provenance.launch_provenance()["repo"]["dirty"] is False  # untracked files do not count


@pytest.mark.subprocess
def test_outside_a_repository_and_without_git(tmp_path, monkeypatch):
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert provenance.launch_provenance(argv=["lowrank", "run", "a b.yaml"], cwd=outside)["repo"] is None
    assert provenance.launch_provenance(argv=["lowrank", "run", "a b.yaml"], cwd=outside)["command"] \
        == "lowrank run 'a b.yaml'"
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all: fields are None, nothing raises
    provenance._cache.clear()
    assert provenance.git_state(outside) is None


@pytest.mark.subprocess
def test_lowrank_checkout_commit_is_recorded():
    source = provenance.lowrank_source()
    head = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("lowrank is not a git checkout here")
    assert provenance.launch_provenance()["lowrank"]["commit"] == head.stdout.strip()


@pytest.mark.subprocess
def test_runtime_half_names_torch_cuda_cudnn_and_gpus(home):
    import torch

    run = RunDir.create({"name": "x", "train": {"epochs": 1}}, home=home)
    provenance.record_runtime(run)
    recorded = run.read_status()["provenance"]
    assert recorded["torch"] == torch.__version__ and recorded["cuda"] == torch.version.cuda
    assert recorded["gpu_names"] == [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    assert "command" in recorded  # the launch half is kept
    assert provenance._cudnn_text(92400) == "9.24.0" and provenance._cudnn_text(8902) == "8.9.2"


def test_display_lines():
    lines = dict(provenance.provenance_lines({
        "lowrank": {"version": "0.1.0", "commit": "a" * 40, "dirty": True},
        "repo": None, "command": "lowrank run x.yaml", "gpu_names": ["NVIDIA H200"], "cuda": "12.4"}))
    assert lines["lowrank"] == "0.1.0 aaaaaaaaaaaa (dirty)"
    assert lines["repo"].startswith("none") and lines["GPUs"] == "NVIDIA H200" and lines["command"] == "lowrank run x.yaml"
    assert provenance.provenance_lines("garbage") == [] and provenance.provenance_lines(None) == []
