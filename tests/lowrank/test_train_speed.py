"""The loop's speed paths: no host sync per step, few disk flushes and status rewrites,
gradient accumulation equal to the big batch, torch.compile on the CPU."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from lowrank import rundir
from lowrank.config import load
from lowrank.rundir import RunDir
from lowrank.train import StopFlag, main, train
from lowrank.train.tally import Tally, topk_hits

REPO = Path(__file__).resolve().parents[2]

TINY = [
    "model.name=tiny_convnet", "model.kwargs.width=8",
    "data.name=synthetic", "data.batch_size=16",
    "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 128, num_val: 32, num_test: 32, noise: 2.0}",
    "train.epochs=2", "train.lr=0.05", "train.device=cpu", "log.checkpoint_every=1",
]


def make_run(overrides: list[str] = ()) -> RunDir:
    return RunDir.create(load(REPO / "presets" / "quickstart.yaml", TINY + list(overrides)).to_dict())


def test_tally_matches_host_sums_and_names_the_bad_step():
    logits = torch.tensor([[3.0, 1, 0, 0, 0, 0], [0, 3.0, 1, 0, 0, 0], [6.0, 5, 4, 3, 2, 1], [1.0, 2, 3, 4, 5, 6]])
    targets = torch.tensor([0, 2, 5, 1])  # hit at rank 0, rank 1, a miss (rank 6), hit at rank 4
    hits = topk_hits(logits, targets)
    assert hits.tolist() == [1, 1, 0, 0, 1]
    tally = Tally()
    for loss in (0.5, 1.25, float("nan"), 2.0):
        tally.add(torch.tensor(loss), [(logits, targets)], 4, {"ce": torch.tensor(loss / 2)})
    window = tally.read()
    assert window.seen == 16 and window.miss1 == 12 and window.miss5 == 4
    assert window.bad_step == 2 and math.isnan(window.bad_loss) and math.isnan(window.parts["ce"])
    assert len(tally) == 0 and tally.read().seen == 0
    # two micro-batches in one step (accumulation): both halves' predictions count
    tally.add(torch.tensor(1.5), [(logits[:2], targets[:2]), (logits[2:], targets[2:])], 4, {"ce": torch.tensor(0.25)})
    tally.add(torch.tensor(0.5), [(logits, targets)], 4, {})
    window = tally.read()
    assert window.bad_step is None and window.loss_sum == pytest.approx(8.0) and window.parts == {"ce": 1.0}
    assert window.miss1 == 8 - 2 * 1 and window.miss5 == 8 - 2 * 3  # per 4 images: 1 top-1 hit, 3 top-5 hits


def test_tally_batched_ranking_equals_per_step_ranking_and_holds_few_logits():
    """Predictions are ranked in batches of FOLD_STEPS steps: the same hit counts as ranking
    each step alone, across fold boundaries, ragged last batches and ties; bounded memory."""
    generator = torch.Generator().manual_seed(0)
    tally, expected1, expected5, seen = Tally(), 0, 0, 0
    for step in range(3 * Tally.FOLD_STEPS + 5):
        size = 7 if step % 11 == 10 else 16
        logits = torch.randint(0, 4, (size, 12), generator=generator).float()  # many ties
        targets = torch.randint(0, 12, (size,), generator=generator)
        hits = topk_hits(logits, targets)
        expected1, expected5, seen = expected1 + size - int(hits[0]), expected5 + size - int(hits.sum()), seen + size
        tally.add(torch.tensor(1.0), [(logits, targets)], size, {})
        assert len(tally._pending) < Tally.FOLD_STEPS
    window = tally.read()
    assert (window.seen, window.miss1, window.miss5) == (seen, expected1, expected5)


def test_one_topk_per_logging_window_not_per_step(home, monkeypatch):
    """16 steps with one step line: the training figures take one top-k, not one per step."""
    run = make_run(["train.epochs=1", "log.step_every=1000", "data.kwargs.num_train=256",
                    "data.eval_batch_size=64"])
    calls = []
    original = torch.Tensor.topk
    monkeypatch.setattr(torch.Tensor, "topk", lambda self, *a, **k: (calls.append(self.shape[0]), original(self, *a, **k))[1])
    train(run, resume=False, stop=StopFlag())
    # the training window (256 predictions in one call), then val (32) and test (32): one batch each
    assert calls == [256, 32, 32], calls


def test_no_host_read_of_loss_or_errors_per_step(home, monkeypatch):
    """One device->host read per logging step, not one (or three) per step as before."""
    run = make_run(["train.epochs=1", "log.step_every=1000", "data.kwargs.num_train=256"])  # 16 steps, 1 log line
    reads = {"n": 0}
    for name in ("item", "tolist", "__float__"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            if self.is_floating_point() or name == "tolist":
                reads["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    train(run, resume=False, stop=StopFlag())
    # 1 step-line read + 2 evaluations (val, test); the old loop read float(loss) on each of 16 steps
    assert reads["n"] <= 6, reads


def test_progress_lines_are_not_fsynced_ends_are(home, monkeypatch):
    synced = []
    monkeypatch.setattr(rundir.os, "fsync", lambda fd: synced.append(fd))
    run = RunDir.create({"name": "x"})
    synced.clear()
    for event in ("step", "step", "epoch", "eval"):
        run.append_metric({"event": event})
    assert synced == []
    run.append_metric({"event": "end"})
    run.append_metric({"event": "test"})
    run.append_metric({"event": "eval"}, sync=True)
    run.sync_metrics()
    assert len(synced) == 4
    assert [r["event"] for r in run.read_metrics()] == ["step", "step", "epoch", "eval", "end", "test", "eval"]


def test_every_checkpoint_follows_an_fsync_of_the_lines_it_claims(home, monkeypatch):
    """Durable record first: metrics.jsonl is fsynced after the last line a checkpoint claims and
    before checkpoint.pt/best.pt are written; one fsync per checkpoint, not one per epoch line,
    and one directory fsync for the pair. The files are written by the background writer."""
    import threading

    events: list[tuple] = []  # (kind, what, thread name)
    real_fsync, real_replace = rundir.os.fsync, rundir.os.replace

    def fsyncing(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        kind = "metrics" if target.endswith("metrics.jsonl") else "dir" if os.path.isdir(target) else "file"
        events.append(("fsync", kind, threading.current_thread().name))
        return real_fsync(fd)

    def replacing(a, b):
        events.append(("replace", Path(b).name, threading.current_thread().name))
        return real_replace(a, b)

    monkeypatch.setattr(rundir.os, "fsync", fsyncing)
    monkeypatch.setattr(rundir.os, "replace", replacing)
    real_append = RunDir.append_metric
    monkeypatch.setattr(RunDir, "append_metric", lambda self, record, sync=None: (
        events.append(("line", record["event"], record.get("epoch"))), real_append(self, record, sync))[1])
    run = make_run(["train.epochs=4", "log.checkpoint_every=2", "log.step_every=1"])
    assert main([str(run.path)]) == 0
    checkpoints = [i for i, e in enumerate(events) if e[:2] == ("replace", "checkpoint.pt")]
    assert len(checkpoints) == 2  # epochs 2 and 4
    writer_thread = events[checkpoints[0]][2]
    assert writer_thread.startswith("lowrank-checkpoint")  # not the training thread
    for index, claimed in zip(checkpoints, (2, 4)):
        # later epochs' lines may be appended meanwhile, but every line of the epochs the
        # checkpoint claims precedes an fsync of metrics.jsonl that precedes it
        last_claimed = max(i for i, e in enumerate(events[:index]) if e[0] == "line" and e[2] is not None
                           and e[2] <= claimed and e[1] != "test")
        assert ("fsync", "metrics", writer_thread) in events[last_claimed:index], "checkpoint before its lines were synced"
    written = [e[:2] for e in events if e[0] != "line" and e[2] == writer_thread]
    # per checkpoint: metrics fsync, best.pt (file fsync, rename, no directory fsync), then
    # checkpoint.pt (file fsync, rename) and one directory fsync for both renames
    pair = [("fsync", "metrics"), ("fsync", "file"), ("replace", "best.pt"), ("fsync", "file"),
            ("replace", "checkpoint.pt"), ("fsync", "dir")]
    single = [("fsync", "metrics"), ("fsync", "file"), ("replace", "checkpoint.pt"), ("fsync", "dir")]
    assert written[:6] == pair  # epoch 2 improved on nothing before it: best.pt goes with it
    assert written[6:] in (pair, single)
    between = events[checkpoints[0] + 1:checkpoints[1]]
    assert sum(1 for e in between if e[:2] == ("line", "epoch")) == 2  # epochs 3 and 4: no fsync of their own
    assert sum(1 for e in between if e == ("fsync", "metrics", writer_thread)) == 1  # the checkpoint's own
    # the training thread may fsync meanwhile only for a synced event it just appended (the final
    # "test" line can land before the writer thread renames the epoch-4 checkpoint), never for an
    # epoch, eval or step line
    for position, event in enumerate(between):
        if event[:2] == ("fsync", "metrics") and event[2] != writer_thread:
            appended = next(e for e in reversed(between[:position]) if e[0] == "line")
            assert appended[1] not in rundir.UNSYNCED_EVENTS, (appended, between)


def test_status_is_not_rewritten_every_epoch(home, monkeypatch):
    run = make_run(["train.epochs=6", "data.kwargs.num_train=32", "log.checkpoint_every=3"])
    writes = []
    real = RunDir.update_status
    monkeypatch.setattr(RunDir, "update_status", lambda self, **f: (writes.append(sorted(f)), real(self, **f))[1])
    import time

    start = time.monotonic()
    assert main([str(run.path)]) == 0
    elapsed = time.monotonic() - start
    from lowrank.train.loop import HEARTBEAT_SECONDS

    epoch_writes = [w for w in writes if "epoch" in w and "last_loss" in w]
    # the last epoch always writes; others only once HEARTBEAT_SECONDS have passed since the last write
    assert 1 <= len(epoch_writes) <= 1 + elapsed / HEARTBEAT_SECONDS
    status = run.read_status()
    assert status["state"] == "finished" and status["epoch"] == 6 and status["best_val_err1"] is not None


def test_best_checkpoint_written_with_the_checkpoint_and_agrees_with_it(home):
    run = make_run(["train.epochs=4", "log.checkpoint_every=2"])
    assert main([str(run.path)]) == 0
    best = torch.load(run.file("best.pt"), weights_only=False)
    last = torch.load(run.file("checkpoint.pt"), weights_only=False)
    assert best["epoch"] == last["best_epoch"] and best["val"]["err1"] == last["best_err1"]
    evals = [r for r in run.read_metrics() if r["event"] == "eval"]
    assert min(r["err1"] for r in evals) == last["best_err1"]


def _final_weights(overrides: list[str]) -> dict[str, torch.Tensor]:
    run = RunDir.create(load(REPO / "presets" / "quickstart.yaml", [
        "model.name=mlp", "model.kwargs={hidden: [32, 16]}", "substitute.method=dense", "substitute.skip=[]",
        "data.name=synthetic", "data.batch_size=32", "data.augment.random_crop=false",
        "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 96, num_val: 32, num_test: 32}",
        "train.epochs=2", "train.device=cpu", "train.weight_decay=0.001", "train.grad_clip=1.0",
        "log.checkpoint_every=1", *overrides]).to_dict())
    assert main([str(run.path)]) == 0
    return torch.load(run.file("checkpoint.pt"), weights_only=False)["model"]


def test_accumulation_equals_the_big_batch_without_batchnorm(home):
    """batch 32 in 4 micro-batches of 8 (and uneven 3 chunks) == one batch of 32, to 1e-6."""
    whole = _final_weights(["train.accumulate=1"])
    for parts in (4, 3):
        split = _final_weights([f"train.accumulate={parts}"])
        assert whole.keys() == split.keys()
        for key in whole:
            torch.testing.assert_close(split[key], whole[key], rtol=0, atol=1e-6)
    moved = _final_weights(["train.accumulate=1", "train.lr=0.2"])  # the comparison can fail
    assert any((moved[k] - whole[k]).abs().max() > 1e-3 for k in whole)


@pytest.mark.slow
@pytest.mark.subprocess
def test_compiled_student_trains_on_cpu(home):
    plain, compiled = make_run(), make_run(["train.compile=true"])
    assert main([str(plain.path)]) == 0
    assert main([str(compiled.path)]) == 0
    a, b = plain.read_status(), compiled.read_status()
    assert b["state"] == "finished" and b["params"] == a["params"]
    # same data, same init: inductor's kernels differ only in rounding over 16 steps
    assert abs(a["final_val_err1"] - b["final_val_err1"]) <= 10.0
    keys = torch.load(compiled.file("checkpoint.pt"), weights_only=False)["model"].keys()
    assert not any(k.startswith("_orig_mod") for k in keys)  # the plain module's state dict is saved


@pytest.mark.subprocess
def test_auto_precision_and_layout_are_fp32_nchw_on_the_cpu(home):
    from lowrank.amp import Precision

    assert Precision("auto", torch.device("cpu")).mode == "off"
    run = make_run(["train.epochs=1", "train.amp=auto", "train.channels_last=auto"])
    assert main([str(run.path)]) == 0
    start = run.read_metrics()[0]
    assert start["event"] == "start" and start["amp"] == "off" and start["channels_last"] is False
    for preset in ("resnet9_dawn", "wrn28_10_teacher"):  # the dense-conv presets default to bf16 + NHWC on CUDA
        train_cfg = load(REPO / "presets" / f"{preset}.yaml").train
        assert (train_cfg.amp, train_cfg.channels_last) == ("auto", "auto")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_auto_precision_is_bf16_on_cuda():
    from lowrank.amp import Precision

    assert Precision("auto", torch.device("cuda")).mode == ("bf16" if torch.cuda.is_bf16_supported() else "off")
