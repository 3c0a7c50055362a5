"""The scheduler: requirement parsing, the pure planner (property-style over random
hosts with 0..8 GPUs), and the detached scheduler process with real workers."""

from __future__ import annotations

import os
import random
import signal

import psutil
import pytest

from lowrank.errors import UserError
from lowrank.rundir import RunDir

from console.gpus import GPUInfo, HostInfo, HostSnapshot
from console.scheduler import (Job, Requirement, impossible, plan, requirement_for, requirement_from_cli,
                               requirement_from_config, resolve_requirement, scheduler_info, scheduler_running,
                               submit)
from fake_worker import fake_config, wait_for


def host(cpus: int = 8) -> HostInfo:
    return HostInfo(hostname="test", cpu_count=cpus, cpu_percent=0.0, load_avg=(0.0, 0.0, 0.0),
                    memory_used_mb=0.0, memory_total_mb=1024.0)


def snap(free_mb: list[float], total_mb: float = 16384.0, cpus: int = 8) -> HostSnapshot:
    gpus = [GPUInfo(index=i, name="sim", uuid=None, memory_used_mb=total_mb - free, memory_total_mb=total_mb)
            for i, free in enumerate(free_mb)]
    return HostSnapshot(time=0.0, host=host(cpus), gpus=gpus, nvml_error=None if gpus else "no NVML (simulated)")


# ---------------------------------------------------------------- requirements


def test_requirement_from_config_and_cli():
    assert requirement_from_config({"train": {"device": "cpu"}, "resources": {"gpus": 2}}).gpus == 0
    assert requirement_from_config({"train": {"device": "auto"}}) == Requirement()
    assert requirement_from_config({"resources": "cpu"}).gpus == 0
    need = requirement_from_config({"resources": {"gpus": 2, "min_free_memory_gb": 10, "share": True}})
    assert (need.gpus, need.min_free_memory_gb, need.share) == (2, 10.0, True)
    assert Requirement.from_dict({"gpu_ids": [3, 1]}).gpus == 2
    with pytest.raises(UserError, match="unknown key"):
        requirement_from_config({"resources": {"gpu": 1}})
    with pytest.raises(UserError, match="CUDA"):
        requirement_from_config({"train": {"device": "cuda"}, "resources": {"gpus": 0}})
    with pytest.raises(UserError):
        Requirement.from_dict({"gpus": 1, "gpu_ids": [0, 1]})
    # CLI flags override only what they name
    config = {"train": {"device": "auto"}, "resources": {"min_free_memory_gb": 4, "share": True}}
    assert resolve_requirement(config, requirement_from_cli(gpus=2)) == Requirement(2, 4.0, True)
    assert resolve_requirement(config, requirement_from_cli(gpu=[5])) == Requirement(1, 4.0, True, (5,))
    assert resolve_requirement(config, requirement_from_cli(cpu=True)).gpus == 0
    assert resolve_requirement(config, {}) == Requirement(None, 4.0, True)
    with pytest.raises(UserError, match="train.device is cpu"):
        resolve_requirement({"train": {"device": "cpu"}}, requirement_from_cli(gpus=1))


# ---------------------------------------------------------------- the planner


def test_plan_basic_cases():
    two = snap([16000, 16000])
    # a running exclusive run holds GPU 0: the next run gets GPU 1, the one after waits
    running = [Job("r", Requirement(1), (0,))]
    queued = [Job("a", Requirement(1), order=1), Job("b", Requirement(1), order=2)]
    assert plan(queued, running, two) == [("a", [1])]
    # sharing needs both sides to allow it
    assert plan([Job("s", Requirement(1, share=True))], running, snap([16000])) == []
    shared_running = [Job("r", Requirement(1, share=True), (0,))]
    assert plan([Job("s", Requirement(1, share=True))], shared_running, snap([16000])) == [("s", [0])]
    # memory: GPU 0 is busy with someone else's job (2 GB free); a 4 GB run goes to GPU 1
    assert plan([Job("m", Requirement(1, min_free_memory_gb=4))], [], snap([2048, 8192])) == [("m", [1])]
    # pinned ids
    assert plan([Job("p", Requirement(gpu_ids=(1,)))], [Job("r", Requirement(1), (1,))], two) == []
    # no GPU: an "auto" run goes to the CPU, an explicit GPU run cannot start
    none = snap([], cpus=4)
    assert plan([Job("auto", Requirement())], [], none) == [("auto", [])]
    assert plan([Job("g", Requirement(1))], [], none) == []
    assert "no usable GPU" in impossible(Job("g", Requirement(1)), none)
    assert "host has 2" in impossible(Job("g", Requirement(3)), two)
    assert impossible(Job("g", Requirement(2)), two) is None
    # CPU runs: at most max_cpu_runs at once, counting those already running (default cpus // 2)
    cpu_jobs = [Job(f"c{i}", Requirement(0), order=i) for i in range(5)]
    assert [rid for rid, _ in plan(cpu_jobs, [Job("rc", Requirement(0), ())], snap([], cpus=6))] == ["c0", "c1"]
    assert len(plan(cpu_jobs, [], snap([], cpus=2))) == 1
    # oldest first, and a smaller later run may backfill around a big one that does not fit
    order = plan([Job("big", Requirement(2), order=1), Job("small", Requirement(1), order=2)],
                 running, two)
    assert order == [("small", [1])]


def random_case(rng: random.Random):
    count = rng.randint(0, 8)
    total = rng.choice([8192.0, 16384.0, 81920.0])
    free = [rng.uniform(0, total) for _ in range(count)]
    snapshot = snap(free, total, cpus=rng.randint(1, 16))

    def requirement() -> Requirement:
        kind = rng.random()
        if kind < 0.2:
            return Requirement(0)
        if kind < 0.3:
            return Requirement(None, share=rng.random() < 0.3)
        if kind < 0.4 and count:
            ids = tuple(rng.sample(range(count + 1), rng.randint(1, min(2, count + 1))))  # may name a missing GPU
            return Requirement(gpu_ids=ids, share=rng.random() < 0.3)
        return Requirement(rng.randint(1, 4), min_free_memory_gb=rng.choice([0, 0, 2, 8, 40]),
                           share=rng.random() < 0.3)

    running = []
    for i in range(rng.randint(0, 6)):
        need = requirement()
        n = need.count(count > 0)
        held = tuple(sorted(rng.sample(range(count), min(n, count)))) if n else ()
        running.append(Job(f"run{i}", need, held))
    queued = [Job(f"q{i}", requirement(), order=rng.random()) for i in range(rng.randint(0, 12))]
    return snapshot, running, queued, rng.randint(1, 4)


def fits(need: Requirement, snapshot: HostSnapshot, holders: dict[int, list[Requirement]],
         promised: dict[int, float]) -> bool:
    """Independent statement of when a run could start on the state left after a plan."""
    n = need.count(snapshot.has_gpus)
    ok = [g.index for g in snapshot.gpus
          if (not holders[g.index] or (need.share and all(h.share for h in holders[g.index])))
          and g.memory_free_mb - promised[g.index] >= need.min_free_memory_gb * 1024
          and (need.gpu_ids is None or g.index in need.gpu_ids)]
    if need.gpu_ids is not None:
        return set(need.gpu_ids) <= set(ok)
    return len(ok) >= n


def test_plan_never_over_assigns_random_hosts():
    rng = random.Random(1234)
    started_total = 0
    for _ in range(3000):
        snapshot, running, queued, max_cpu = random_case(rng)
        starts = plan(queued, running, snapshot, max_cpu_runs=max_cpu)
        by_id = {job.run_id: job for job in queued}
        ids = [rid for rid, _ in starts]
        assert len(ids) == len(set(ids)) and set(ids) <= set(by_id)
        started_total += len(starts)

        holders = {g.index: [] for g in snapshot.gpus}
        for job in running:
            for index in job.gpus:
                holders[index].append(job.requirement)
        promised = {g.index: 0.0 for g in snapshot.gpus}
        cpu_running = sum(1 for job in running if job.gpus == ())
        cpu_started = 0
        for rid, gpus in starts:
            need = by_id[rid].requirement
            assert len(gpus) == need.count(snapshot.has_gpus) and len(set(gpus)) == len(gpus)
            if need.gpu_ids is not None:
                assert sorted(gpus) == sorted(need.gpu_ids)
            if not gpus:
                cpu_started += 1
            for index in gpus:
                gpu = snapshot.gpu(index)
                assert gpu is not None, "assigned a GPU that does not exist"
                # exclusive means exclusive: nobody of ours there before, or everyone shares
                assert not holders[index] or (need.share and all(h.share for h in holders[index]))
                holders[index].append(need)
                promised[index] += need.min_free_memory_gb * 1024
                assert promised[index] <= gpu.memory_free_mb + 1e-6, "memory over-promised"
        assert cpu_started == 0 or cpu_running + cpu_started <= max_cpu
        # and it is not lazy: whatever still waits could not start on what is left
        for job in queued:
            if job.run_id in ids:
                continue
            need = job.requirement
            if need.count(snapshot.has_gpus) == 0:
                assert cpu_running + cpu_started >= max_cpu
            else:
                assert not fits(need, snapshot, holders, promised), (job, starts)
    assert started_total > 1000  # the cases did exercise starting runs


# ---------------------------------------------------------------- the detached scheduler


@pytest.fixture
def fake(fake, monkeypatch):
    """The shared fake-worker home (tests/console/conftest.py), 1 CPU run(s) at a time."""
    monkeypatch.setenv("LOWRANK_MAX_CPU_RUNS", "1")
    return fake


def intervals(run: RunDir) -> tuple[float, float]:
    events = run.read_metrics()
    start = next(r["time"] for r in events if r.get("event") == "start")
    end = next(r["time"] for r in events if r.get("event") == "end")
    return start, end


@pytest.mark.slow
@pytest.mark.subprocess
def test_detached_scheduler_runs_queue_one_cpu_run_at_a_time_and_exits(fake):
    runs = [RunDir.create(fake_config(name=f"q{i}", epochs=2, steps_per_epoch=4, step_seconds=0.05), home=fake)
            for i in range(3)]
    for run in runs:
        submit(run, requirement_from_cli(cpu=True))
    assert runs[0].read_status()["requirement"]["gpus"] == 0
    assert scheduler_running(fake)
    info = wait_for(lambda: scheduler_info(fake).get("pid") and scheduler_info(fake), 10, what="scheduler.json")
    scheduler = psutil.Process(info["pid"])
    assert os.getsid(scheduler.pid) == scheduler.pid  # detached: its own session
    for run in runs:
        wait_for(lambda: run.read_status()["state"] == "finished", 60, 0.05, what=f"{run.run_id} to finish")
    spans = sorted(intervals(run) for run in runs)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, "two CPU runs overlapped with max_cpu_runs=1"
    wait_for(lambda: not scheduler_running(fake), 10, what="the scheduler to exit when the queue is empty")
    assert "queue empty" in (fake / "scheduler.log").read_text()


@pytest.mark.slow
@pytest.mark.subprocess
def test_runs_survive_kill_9_of_the_scheduler(fake):
    run = RunDir.create(fake_config(name="long", epochs=15, steps_per_epoch=4, step_seconds=0.05), home=fake)
    waiting = RunDir.create(fake_config(name="next", epochs=1), home=fake)
    submit(run, {"gpus": 0})
    wait_for(lambda: run.read_status()["state"] == "running" and run.read_status().get("epoch", 0) >= 1, 30,
             what="the first run to train")
    submit(waiting, {"gpus": 0})  # queued behind it (one CPU run at a time)
    # the first scheduler may have exited on an empty queue: the second writes its info once started
    info = wait_for(lambda: scheduler_info(fake).get("pid") and scheduler_info(fake), 10, what="scheduler.json")
    os.kill(info["pid"], signal.SIGKILL)
    wait_for(lambda: not scheduler_running(fake), 10, what="the lock to be released")
    from console.runs import RunStore

    listed = {info.run_id: info.state for info in RunStore(fake).list()}
    assert listed[run.run_id] == "running" and listed[waiting.run_id] == "queued"
    wait_for(lambda: run.read_status()["state"] == "finished", 60, 0.05, what="the orphaned run to finish")
    # the queue waits for the next scheduler; a later submit (or `lowrank scheduler start`) picks it up
    assert waiting.read_status()["state"] == "queued"
    from console.scheduler import ensure_scheduler

    assert ensure_scheduler(fake)
    wait_for(lambda: waiting.read_status()["state"] == "finished", 60, 0.05, what="the queued run")


def test_submit_bad_requirement_fails_the_run(fake):
    run = RunDir.create({"name": "x", "train": {"device": "cpu", "epochs": 1}}, home=fake)
    with pytest.raises(UserError):
        submit(run, requirement_from_cli(gpus=2))
    assert run.read_status()["state"] == "failed"
    assert not scheduler_running(fake)


def test_requirement_for_prefers_recorded(home):
    run = RunDir.create({"name": "x", "train": {"device": "auto"}}, home=home)
    assert requirement_for(run) == Requirement()
    run.update_status(requirement={"gpus": 2, "min_free_memory_gb": 1.0, "share": False, "gpu_ids": None})
    assert requirement_for(run) == Requirement(2, 1.0)


def test_unstartable_run_is_failed_with_reason(fake):
    """On a GPU-less host a run that insists on a GPU fails with a clear reason instead of waiting forever."""
    from console.gpus import snapshot
    from console.scheduler import Scheduler

    if snapshot().has_gpus:
        pytest.skip("this host has GPUs")
    run = RunDir.create(fake_config(name="needs-gpu"), home=fake)
    run.update_status(state="queued", requirement=Requirement(1).to_dict())
    assert Scheduler(fake, poll=0.05).step() == (0, 0)
    status = run.read_status()
    assert status["state"] == "failed" and "no usable GPU" in status["error"]
    assert not status.get("pid")  # nothing was launched


def test_every_resources_key_of_the_schema_is_accepted():
    """config.yaml always holds the whole resources section as the schema dumps it: a key the
    schema has but placement does not know (nproc, backend) must not refuse every run."""
    from lowrank.config import ExperimentConfig

    resources = ExperimentConfig().to_dict()["resources"]
    assert Requirement.from_dict(resources) == Requirement()
