"""Data-parallel training for real: ``torchrun --nproc-per-node 2`` with gloo ranks on the CPU.

A 2-rank run equals a 1-process run with the same global batch; one rank's NaN fails both;
a 2-rank run stopped mid-epoch through the kill path and resumed equals an uninterrupted one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lowrank.config import load
from lowrank.rundir import RunDir
from lowrank.train import main

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]

EXACT = [  # deterministic: no augmentation, no dropout; tiny_convnet has BatchNorm
    "model.name=tiny_convnet", "model.kwargs.width=8", "data.name=synthetic", "data.batch_size=16",
    "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 128, num_val: 32, num_test: 32, noise: 2.0}",
    "data.augment.random_crop=false", "data.augment.flip=false", "data.augment.cutout=0",
    "train.epochs=2", "train.lr=0.05", "train.device=cpu", "log.step_every=2",
]


def make_run(overrides: list[str]) -> RunDir:
    return RunDir.create(load(REPO / "presets" / "quickstart.yaml", overrides).to_dict())


def torchrun(run: RunDir, *extra: str, env: dict | None = None) -> int:
    """The worker under a real torchrun with 2 ranks; its output goes to the run's output.log."""
    with open(run.file("output.log"), "ab") as log:
        return subprocess.run([*TORCHRUN, "-m", "lowrank.train", str(run.path), *extra], stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                              cwd=REPO, timeout=300).returncode


def figures(run: RunDir) -> dict:
    """What two runs that trained alike agree on: per-epoch train loss, the evaluations, the test."""
    status = run.read_status()
    events = run.read_metrics()
    return {"train_loss": [r["loss"] for r in events if r.get("event") == "epoch"],
            "val": [(r["loss"], r["err1"]) for r in events if r.get("event") == "eval"],
            **{key: status[key] for key in ("test_loss", "test_err1", "last_loss", "final_val_err1")}}


def assert_close(a, b, tol: float = 1e-4) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_close(a[key], b[key], tol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b) and a, (a, b)
        for x, y in zip(a, b):
            assert_close(x, y, tol)
    else:
        assert abs(a - b) <= tol, (a, b)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["train.sync_bn=true"],  # BatchNorm over the global batch
    # no BatchNorm; 123 images: the last global batch (11) splits 6 + 5, and 2 micro-batches per step
    ["model.name=mlp", "model.kwargs={hidden: [16]}", "train.accumulate=2",
     "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 123, num_val: 32, num_test: 32, noise: 2.0}"],
    # the dataset on the device: every rank augments the whole global batch and keeps its slice
    ["train.sync_bn=true", "data.device=cpu", "data.augment.random_crop=true", "data.augment.flip=true"],
], ids=["sync_bn", "mlp-accumulate-uneven", "resident-augmented"])
@pytest.mark.slow
@pytest.mark.subprocess
def test_two_ranks_equal_one_process_with_the_same_global_batch(home, overrides):
    single = make_run(EXACT + overrides)
    assert main([str(single.path)]) == 0
    double = make_run(EXACT + overrides + ["resources.nproc=2"])
    assert torchrun(double) == 0, double.file("output.log").read_text()[-3000:]

    assert_close(figures(double), figures(single))
    status = double.read_status()
    assert status["state"] == "finished" and status["world_size"] == 2 and status["launcher"] == "torchrun"
    pids = status["rank_pids"]
    assert len(set(pids)) == 2 and status["pid"] not in pids  # the agent's pid is the run's, the ranks listed
    events = [r["event"] for r in double.read_metrics()]
    assert events.count("start") == 1 and events.count("end") == 1 and events.count("epoch") == 2  # rank 0 alone
    assert len((home / "results.csv").read_text().splitlines()) == 3  # header + one row per run
    log = double.file("output.log").read_text()
    assert log.count("finished: test err") == 1


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_distilled_student_on_two_ranks_equals_one_process(home):
    """The teacher runs on every rank (KD + attention transfer on each rank's slice)."""
    teacher = make_run(EXACT + ["name=teacher", "substitute.method=dense", "train.epochs=1"])
    assert main([str(teacher.path)]) == 0
    distill = ["train.sync_bn=true", f"teacher.checkpoint={teacher.run_id}", "distill.alpha=0.5",
               "distill.temperature=4", "distill.at_beta=10"]
    single = make_run(EXACT + distill)
    assert main([str(single.path)]) == 0
    double = make_run(EXACT + distill + ["resources.nproc=2"])
    assert torchrun(double) == 0, double.file("output.log").read_text()[-3000:]
    assert_close(figures(double), figures(single))
    assert double.read_status()["teacher_err1"] == single.read_status()["teacher_err1"]  # sharded check, reduced


@pytest.mark.slow
@pytest.mark.subprocess
def test_without_sync_bn_the_ranks_normalise_their_own_halves(home):
    """The check above can fail: per-rank BatchNorm statistics give another training."""
    single = make_run(EXACT + ["train.epochs=1"])
    assert main([str(single.path)]) == 0
    double = make_run(EXACT + ["train.epochs=1", "resources.nproc=2"])
    assert torchrun(double) == 0, double.file("output.log").read_text()[-3000:]
    assert abs(figures(double)["train_loss"][0] - figures(single)["train_loss"][0]) > 1e-4


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_nan_on_one_rank_fails_the_run_on_both(home):
    run = make_run(EXACT + ["resources.nproc=2", "train.epochs=3"])
    assert torchrun(run, env={"LOWRANK_FAULT": "nan-loss@rank1"}) != 0
    status = run.read_status()
    assert status["state"] == "failed" and status["exit_code"] == 1
    # rank 0's own loss was finite: it learnt of rank 1's NaN through the reduced figures
    assert "non-finite loss" in status["error"] and "epoch 1" in status["error"], status["error"]
    log = run.file("output.log").read_text()
    assert "rank 1 failed: non-finite loss" in log and "failed: non-finite loss" in log
    assert [r["state"] for r in run.read_metrics() if r.get("event") == "end"] == ["failed"]
    assert not (home / "results.csv").exists()


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_batch_that_does_not_split_fails_every_rank_before_training(home):
    run = make_run(EXACT + ["resources.nproc=2", "data.batch_size=15"])
    assert torchrun(run) != 0
    status = run.read_status()
    assert status["state"] == "failed" and "does not split over 2 ranks" in status["error"]
    assert not any(r.get("event") == "step" for r in run.read_metrics())


# ---------------------------------------------------------------- stop through the kill path, resume


AUGMENTED = [  # per-rank augmentation draws: resume must restore every rank's RNG
    "model.name=tiny_convnet", "model.kwargs.width=8", "data.name=synthetic", "data.batch_size=16",
    "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 512, num_val: 32, num_test: 32, noise: 2.0}",
    "data.augment.random_crop=true", "data.augment.crop_padding=1", "data.augment.flip=true",
    "data.augment.cutout=3", "train.sync_bn=true", "resources.nproc=2",
    "train.epochs=3", "train.lr=0.05", "train.device=cpu", "log.step_every=2", "log.checkpoint_every=1",
]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.subprocess
def test_killed_mid_epoch_and_resumed_equals_uninterrupted(home, monkeypatch):
    from console.backends.local import kill_run, start_worker
    from console.runs import relaunch

    monkeypatch.delenv("LOWRANK_WORKER", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    straight, interrupted = make_run(AUGMENTED), make_run(AUGMENTED)
    start_worker(straight, gpus=[])
    start_worker(interrupted, gpus=[])

    def in_epoch_two():
        return any(r.get("event") == "step" and r.get("epoch") == 2 and r.get("batch", 0) >= 4
                   for r in interrupted.read_metrics())

    wait_for(in_epoch_two, 240, "epoch 2 of the interrupted run")
    ranks = wait_for(lambda: interrupted.read_status().get("rank_pids"), 10, "rank pids")
    report = kill_run(interrupted, grace=30)
    assert report.survivors == [] and report.sigkilled == []  # a clean stop on both ranks
    assert set(ranks) <= set(report.pids)
    assert all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE for pid in ranks)
    status = interrupted.read_status()
    assert status["state"] == "killed" and status["exit_code"] == 143, status
    events = interrupted.read_metrics()
    stopped_in = max(r["epoch"] for r in events if r.get("event") == "step")
    assert stopped_in < 3 and not any(r.get("event") == "epoch" and r["epoch"] == stopped_in for r in events)

    # the stop checkpoint (lowrank.train.position) is one state written by rank 0 at the step both
    # ranks agreed on, with each rank's RNG at the stop and at the start of the epoch
    import torch

    saved = torch.load(interrupted.file("checkpoint.pt"), weights_only=True)
    assert saved["mid_epoch"] is not None and saved["mid_epoch"]["epoch"] == stopped_in - 1
    assert len(saved["rng_ranks"]) == len(saved["epoch_rng_ranks"]) == 2
    assert not torch.equal(saved["rng_ranks"][0]["torch"], saved["rng_ranks"][1]["torch"])  # own draws per rank
    trained = saved["mid_epoch"]["batches"]
    logged = max(r["batch"] for r in events if r.get("event") == "step" and r["epoch"] == stopped_in)
    assert logged <= trained < 32  # stopped inside the epoch, after the last logged step

    resumed = relaunch(interrupted, resume=True)
    start_worker(resumed, gpus=[], resume=True)
    for run in (straight, resumed):
        wait_for(lambda run=run: run.read_status().get("state") in ("finished", "failed", "killed"), 300, "the end")
    assert straight.read_status()["state"] == resumed.read_status()["state"] == "finished", \
        resumed.file("output.log").read_text()[-3000:]
    assert_close(figures(resumed)["train_loss"][-1], figures(straight)["train_loss"][-1])
    for key in ("test_loss", "test_err1", "last_loss", "final_val_err1"):
        assert_close(resumed.read_status()[key], straight.read_status()[key])
    starts = [r for r in resumed.read_metrics() if r.get("event") == "start"]
    assert len(starts) == 2 and starts[1]["resumed"] is True and starts[1]["epoch"] >= 1


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_to_one_rank_stops_both_at_the_same_step(home, monkeypatch):
    """Not through the agent: rank 1 alone is signalled; the lockstep check stops rank 0 with it."""
    import signal

    from console.backends.local import start_worker

    monkeypatch.delenv("LOWRANK_WORKER", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = make_run(AUGMENTED + ["train.epochs=100"])
    start_worker(run, gpus=[])
    wait_for(lambda: sum(r.get("event") == "step" for r in run.read_metrics()) >= 2, 120, "steps")
    ranks = run.read_status()["rank_pids"]
    os.kill(ranks[1], signal.SIGTERM)
    wait_for(lambda: run.read_status().get("state") in ("finished", "failed", "killed"), 60, "the end")
    status = run.read_status()
    assert status["state"] == "killed" and status["error"] == "stopped by SIGTERM", status
    assert [r["state"] for r in run.read_metrics() if r.get("event") == "end"] == ["killed"]
    wait_for(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                             for pid in [status["pid"], *ranks]), 60, "agent and ranks to exit")


@pytest.mark.slow
@pytest.mark.subprocess
def test_ranks_started_without_torchrun_join_the_rendezvous_the_environment_names(home):
    """As Slurm (submitit) starts them: one plain process per rank with RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR and MASTER_PORT set - no torchrun, no --standalone."""
    import socket

    single = make_run(EXACT + ["train.sync_bn=true", "train.epochs=1"])
    assert main([str(single.path)]) == 0
    run = make_run(EXACT + ["train.sync_bn=true", "train.epochs=1", "resources.nproc=2"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(run.file("output.log"), "ab") as log:
        ranks = [subprocess.Popen([sys.executable, "-m", "lowrank.train", str(run.path)], stdout=log,
                                  stderr=subprocess.STDOUT, cwd=REPO,
                                  env={**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank),
                                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                       "MASTER_PORT": str(port)})
                 for rank in range(2)]
        codes = [proc.wait(300) for proc in ranks]
    assert codes == [0, 0], run.file("output.log").read_text()[-3000:]
    status = run.read_status()
    assert status["state"] == "finished" and status["world_size"] == 2 and status["launcher"] == "env"
    assert status["rank_pids"] == [proc.pid for proc in ranks]
    assert_close(figures(run), figures(single))


def test_rank_slices_partition_every_batch_in_order():
    from lowrank.train.shard import shard

    for length in range(0, 40):
        for world in (1, 2, 3, 8):
            batch = list(range(100, 100 + length))
            parts = [list(shard(batch, rank, world)) for rank in range(world)]
            assert sum(parts, []) == batch  # every item once, in the loader's order
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_rank_never_tears_down_its_interpreter_while_gloo_threads_run(home, tmp_path):
    """CI, 5 Dec 2026: a rank that had finished aborted at exit ('terminate called without an active
    exception', SIGABRT) and torchrun failed the run. After DDP, torch keeps the process group's
    gloo threads alive past destroy_process_group, so they ran during interpreter teardown (about
    2 of ~420 exits of a bare DDP script crashed). A rank now runs its exit handlers and leaves without teardown."""
    run = make_run(EXACT + ["model.name=mlp", "model.kwargs={hidden: [16]}", "train.epochs=1",
                            "resources.nproc=2"])
    witness = str(Path(__file__).with_name("ddp_exit_witness.py"))
    out = tmp_path / "exit"
    with open(run.file("output.log"), "ab") as log:
        code = subprocess.run([*TORCHRUN, witness, str(run.path), str(out)], stdout=log, stderr=subprocess.STDOUT,
                              cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300).returncode
    assert code == 0, run.file("output.log").read_text()[-3000:]
    assert run.read_status()["state"] == "finished"
    for rank in (0, 1):
        assert (tmp_path / f"exit.atexit.{rank}").exists()  # exit handlers still ran
        teardown = tmp_path / f"exit.teardown.{rank}"
        threads = teardown.read_text() if teardown.exists() else ""
        assert "gloo" not in threads, f"rank {rank} tore down its interpreter beside threads: {threads}"


@pytest.mark.slow
@pytest.mark.subprocess
def test_accumulation_micro_steps_do_not_all_reduce(home):
    """train.accumulate=4: one gradient all-reduce per optimizer step, not per micro-batch (no_sync)."""
    run = make_run(EXACT + ["model.name=mlp", "model.kwargs={hidden: [16]}", "train.accumulate=4",
                            "train.epochs=1", "resources.nproc=2"])  # a small model: one gradient bucket
    counter = str(Path(__file__).with_name("ddp_comm_counter.py"))
    with open(run.file("output.log"), "ab") as log:
        code = subprocess.run([*TORCHRUN, counter, str(run.path)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300).returncode
    text = run.file("output.log").read_text()
    assert code == 0, text[-3000:]
    steps = run.read_status()["steps_per_epoch"]
    assert steps == 8 and f"rank 0: all-reduces {steps}" in text and f"rank 1: all-reduces {steps}" in text, text
