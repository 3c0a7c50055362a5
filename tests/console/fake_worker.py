"""A stand-in for ``python -m lowrank.train`` that follows the same run-directory protocol.

Used by the console tests through ``LOWRANK_WORKER=tests/console/fake_worker.py``: it
writes status (running, pid, pgid, epoch, heartbeat; finally finished/killed/failed) and
metrics events like the real worker, stops at the next step on SIGTERM/SIGINT (exit
128+signum), and can misbehave on purpose via ``config["fake"]``:

    steps_per_epoch: 5        step_seconds: 0.02
    loader_workers: 0         a real torch DataLoader with this many worker processes
    sleepers: 0               plain forked children that just sleep
    stubborn_child: false     a child that ignores SIGTERM
    orphan: false             a grandchild that calls setsid() and whose parent exits
    ignore_sigterm: false     the worker itself ignores SIGTERM
    vanish: false             exit(3) mid-run without writing a final state
    slow_exit: 0              seconds between recording a stop and exiting (a slow interpreter teardown)

The pids of every helper process it started are written to ``RUN_DIR/fake_children.json``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, for lowrank.rundir

from lowrank.rundir import RunDir, now_iso  # noqa: E402

STOP: list[int] = []


def _on_signal(signum, frame) -> None:
    STOP.append(signum)


def _sleep_forever(ignore_term: bool, follow_parent: bool = False) -> None:
    """Body of a forked helper: sleep until killed (optionally deaf to SIGTERM).

    ``follow_parent``: exit when the parent dies, as DataLoader workers do.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore_term else signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    while not (follow_parent and os.getppid() != parent):
        time.sleep(0.1)
    os._exit(0)


def fork_helper(ignore_term: bool = False, follow_parent: bool = False) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            _sleep_forever(ignore_term, follow_parent)
        finally:
            os._exit(0)
    return pid


def fork_orphan() -> int:
    """A grandchild in its own session whose parent exits at once (re-parented to init)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.setsid()
        grandchild = os.fork()
        if grandchild == 0:
            os.close(write)
            _sleep_forever(ignore_term=True)
        os.write(write, str(grandchild).encode())
        os._exit(0)
    os.close(write)
    grandchild_pid = int(os.read(read, 64).decode())
    os.close(read)
    os.waitpid(pid, 0)
    return grandchild_pid


class SlowData:
    """A tiny map-style dataset whose items take a moment (so workers stay busy)."""

    def __len__(self) -> int:
        return 10_000

    def __getitem__(self, index: int):
        time.sleep(0.005)
        return index


def main() -> int:
    run = RunDir(Path(sys.argv[1]).resolve())
    resume = "--resume" in sys.argv[2:]
    config = run.read_config()
    fake = config.get("fake") or {}
    epochs = int(config.get("train", {}).get("epochs", 3))
    steps, step_seconds = int(fake.get("steps_per_epoch", 5)), float(fake.get("step_seconds", 0.02))

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if fake.get("ignore_sigterm") else _on_signal)
    start_epoch = int(run.read_status().get("epoch") or 0) if resume else 0
    run.update_status(state="running", pid=os.getpid(), pgid=os.getpgid(0), started=now_iso(), heartbeat=now_iso(),
                      device="cpu", epochs=epochs, epoch=start_epoch)
    run.append_metric({"event": "start", "epoch": start_epoch, "resumed": resume})

    children: dict[str, list[int]] = {"sleepers": [], "stubborn": [], "orphan": [], "loader": []}
    for _ in range(int(fake.get("sleepers", 0))):
        children["sleepers"].append(fork_helper(follow_parent=True))
    if fake.get("stubborn_child"):
        children["stubborn"].append(fork_helper(ignore_term=True))
    if fake.get("orphan"):
        children["orphan"].append(fork_orphan())
    batches = None
    if int(fake.get("loader_workers", 0)):
        import psutil
        import torch.utils.data

        loader = torch.utils.data.DataLoader(SlowData(), batch_size=4, num_workers=int(fake["loader_workers"]),
                                             persistent_workers=True)
        batches = iter(loader)
        next(batches)  # workers are up
        known = set(sum(children.values(), []))
        children["loader"] = [child.pid for child in psutil.Process().children() if child.pid not in known]
    tmp = run.path / ".fake_children.json.tmp"
    tmp.write_text(json.dumps(children))
    os.replace(tmp, run.path / "fake_children.json")  # readers never see it half-written

    for epoch in range(start_epoch, epochs):
        for step in range(steps):
            if STOP:
                code = 128 + STOP[0]
                run.append_metric({"event": "end", "state": "killed"})
                run.update_status(state="killed", ended=now_iso(), exit_code=code,
                                  error=f"stopped by {signal.Signals(STOP[0]).name}")
                time.sleep(float(fake.get("slow_exit", 0)))
                return code
            if fake.get("vanish") and epoch == start_epoch and step == 1:
                os._exit(3)
            if batches is not None:
                next(batches)
            time.sleep(step_seconds)
            loss = 2.0 / (1 + epoch + step / steps)
            run.append_metric({"event": "step", "epoch": epoch + 1, "step": epoch * steps + step + 1,
                               "batch": step + 1, "batches": steps, "split": "train", "loss": loss,
                               "err1": 50.0 * loss})
        run.append_metric({"event": "epoch", "epoch": epoch + 1, "split": "train", "loss": loss, "err1": 50 * loss})
        run.append_metric({"event": "eval", "epoch": epoch + 1, "split": "val", "loss": loss * 1.1,
                           "err1": 55 * loss})
        run.update_status(epoch=epoch + 1, heartbeat=now_iso(), last_loss=loss, best_val_err1=55 * loss)
    for pid in sum(children.values(), []):  # a well-behaved finish cleans up after itself
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run.append_metric({"event": "end", "state": "finished"})
    run.update_status(state="finished", ended=now_iso(), exit_code=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------- helpers for the tests

FAKE_WORKER = str(Path(__file__).resolve())


def fake_config(name: str = "fake", epochs: int = 3, **fake) -> dict:
    """A run config the fake worker understands (CPU; ``fake`` keys as in the docstring)."""
    return {"name": name, "model": {"name": "tiny_convnet"}, "substitute": {"method": "dense"},
            "train": {"epochs": epochs, "device": "cpu"}, "fake": fake}


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def children_of(run: RunDir, timeout: float = 30.0) -> dict:
    """The helper pids the fake worker recorded (waits until it has)."""
    path = run.path / "fake_children.json"
    wait_for(path.exists, timeout, what=f"{path}")
    return json.loads(path.read_text())


def gone(pid: int, create_time: float | None = None) -> bool:
    """True when ``pid`` no longer names that process: exited, a zombie, or reused."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1e-3:
            return True
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
