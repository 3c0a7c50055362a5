"""The training worker: ``python -m lowrank.train RUN_DIR [--resume]``.

Reads ``RUN_DIR/config.yaml``, trains, and writes only into the run directory
(status.json, metrics.jsonl, checkpoints, a results.csv row). The loop is one flat
loop in commented phases (after nanoGPT); protocol choices are config fields.

Exit codes: 0 finished, 1 failed (error summary in status.json), 128+signal when
stopped by SIGTERM/SIGINT (state ``killed``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .amp import Precision
from .config import from_dict
from .errors import UserError
from .rundir import budget_of, BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, RunDir, append_result, now_iso

HEARTBEAT_SECONDS = 5.0


class StopRequested(Exception):
    """Raised inside the loop when SIGTERM/SIGINT arrived; carries the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; the run fails with the epoch and step."""


class _StopFlag:
    """Signal handler target: remembers the first stop signal, checked once per step."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise StopRequested(self.signum)


# ---------------------------------------------------------------- helpers


def resolve_device(name: str) -> torch.device:
    """``auto`` means the first visible CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device asks for CUDA but no CUDA device is visible", key="train.device",
                        hint="use --set train.device=cpu (or auto)")
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, for exact resume."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file and rename, so a kill never leaves half a checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def topk_errors(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """Number of top-1 and top-5 mistakes in a batch (top-5 is top-k with k = min(5, classes))."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top.eq(targets.unsqueeze(1))
    return int((~hit[:, 0]).sum()), int((~hit.any(dim=1)).sum())


def to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device,
              channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch; NHWC images when ``channels_last`` (CUDA only: a no-op on the CPU)."""
    images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
    if channels_last and device.type == "cuda" and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, stop: _StopFlag,
             precision: Precision | None = None, channels_last: bool = False) -> dict[str, float]:
    """Mean cross-entropy and top-1/top-5 error (percent) of ``model`` over ``loader``."""
    model.eval()
    total, loss_sum, miss1, miss5 = 0, 0.0, 0, 0
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    with torch.no_grad():
        for images, targets in loader:
            stop.check()
            images, targets = to_device(images, targets, device, channels_last)
            with autocast():
                logits = model(images)
            if isinstance(logits, tuple):
                logits = logits[0]
            logits = logits.float()
            loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
            m1, m5 = topk_errors(logits, targets)
            miss1, miss5, total = miss1 + m1, miss5 + m5, total + len(targets)
    return {"loss": loss_sum / total, "err1": 100.0 * miss1 / total, "err5": 100.0 * miss5 / total}


# ---------------------------------------------------------------- the run


def train(run: RunDir, resume: bool, stop: _StopFlag) -> dict[str, Any]:
    """Train the run's experiment to the end; returns the summary written to status.json."""
    from .build import build_network
    from .data import build_datasets, describe
    from .protocol import build_objective, drop_path_prob, make_optimizer, plan_phases
    from .schedule import lr_multiplier
    from .teacher import build_teacher, claimed_error

    config = from_dict(run.read_config(), source=str(run.file(CONFIG_FILE)))
    train_cfg, log_cfg = config.train, config.log
    device = resolve_device(train_cfg.device)
    precision = Precision(train_cfg.amp, device)
    channels_last = train_cfg.channels_last and device.type == "cuda"  # a no-op on the CPU
    seed_everything(train_cfg.seed, train_cfg.deterministic)
    run.update_status(state="running", pid=os.getpid(), pgid=os.getpgid(0), started=now_iso(),
                      heartbeat=now_iso(), device=str(device), epochs=train_cfg.epochs, error=None,
                      exit_code=None, ended=None)

    # -- data ------------------------------------------------------------------------
    data = build_datasets(config.data)
    pin = config.data.pin_memory and device.type == "cuda"
    loader_generator = torch.Generator()
    train_loader = DataLoader(data.train, batch_size=config.data.batch_size, shuffle=True, drop_last=False,
                              num_workers=config.data.workers, pin_memory=pin, generator=loader_generator,
                              persistent_workers=False)
    eval_bs = config.data.eval_batch_size or config.data.batch_size
    val_loader = DataLoader(data.val, batch_size=eval_bs, num_workers=config.data.workers, pin_memory=pin)
    test_loader = DataLoader(data.test, batch_size=eval_bs, num_workers=config.data.workers, pin_memory=pin)

    # -- network, teacher, objective, phases ---------------------------------------------
    net = build_network(config, data.num_classes, data.input_shape, device=device)
    model = net.model.to(memory_format=torch.channels_last) if channels_last else net.model
    if train_cfg.drop_path_max and not hasattr(model, "drop_path_prob"):
        raise UserError(f"model {config.model.name!r} has no drop-path (no drop_path_prob attribute)",
                        key="train.drop_path_max", hint="set train.drop_path_max to 0 for this model")
    teacher, teacher_facts = None, {}
    if config.teacher is not None:
        # before the resume below: evaluating draws from the RNG that the checkpoint restores
        teacher, teacher_path = build_teacher(config, data.num_classes, data.input_shape, device, run.home)
        teacher = teacher.to(memory_format=torch.channels_last) if channels_last else teacher
        claimed = claimed_error(teacher_path)  # what the teacher's own run reported, if it is one of ours
        teacher_facts = {"teacher_checkpoint": str(teacher_path), "teacher_claimed_err1": claimed}
        if config.teacher.verify:
            measured = evaluate(teacher, test_loader, device, stop, precision, channels_last)
            teacher_facts.update(teacher_err1=measured["err1"], teacher_err5=measured["err5"])
            run.append_metric({"event": "teacher", "split": "test", "checkpoint": str(teacher_path),
                               "claimed_err1": claimed, **measured})
            print(f"teacher {teacher_path}: test err {measured['err1']:.2f}% (top-5 {measured['err5']:.2f}%)"
                  + (f"; its run reported {claimed:.2f}%" if claimed is not None else ""), flush=True)
        run.update_status(**teacher_facts)
    objective = build_objective(config, model, teacher, data.input_shape, device)
    phases = plan_phases(config)
    steps_per_epoch = len(train_loader)

    start_epoch, best_err1, best_epoch, train_seconds, state = 0, math.inf, None, 0.0, None
    if resume and run.file(CHECKPOINT_FILE).exists():
        state = torch.load(run.file(CHECKPOINT_FILE), map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        objective.load_state_dict(state.get("objective", {}))
        precision.load_state_dict(state.get("scaler", {}))
        start_epoch, best_err1, best_epoch = state["epoch"], state["best_err1"], state["best_epoch"]
        train_seconds = state.get("train_seconds", 0.0)
        set_rng_state(state["rng"])
    elif resume:
        print("no checkpoint to resume from: starting from epoch 0", flush=True)

    facts = net.summary()
    run.update_status(**{k: facts[k] for k in ("params", "macs", "dense_params", "dense_macs", "method", "hp")},
                      epoch=start_epoch, steps_per_epoch=steps_per_epoch)
    run.append_metric({"event": "start", "epoch": start_epoch, "resumed": bool(resume and start_epoch),
                       "device": str(device), "data": describe(data), "amp": train_cfg.amp,
                       "phases": [{"name": p.name, "epochs": p.epochs} for p in phases], **facts})
    print(f"{config.name}: {net.params:,} params ({net.params / net.dense_params:.3f} of dense), "
          f"{net.macs:,} mult-adds, device {device}, {len(data.train)} training images", flush=True)

    last_heartbeat = time.monotonic()
    val_metrics: dict[str, float] = {}
    for phase in phases:
        if phase.end <= start_epoch:
            continue
        # -- optimiser and lr schedule of this phase (each imitation stage starts afresh) --------
        extra = objective.parameters(phase)
        params = [*model.parameters(), *extra]
        optimizer = make_optimizer(config, phase, model, extra)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step, p=phase: lr_multiplier(p.schedule, step / steps_per_epoch, p.epochs))
        if state is not None and start_epoch > phase.start:  # resuming inside this phase
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        stage = {"stage": phase.name} if config.imitation is not None else {}
        for epoch in range(max(start_epoch, phase.start), phase.end):
            # -- train one epoch ---------------------------------------------------------
            model.train()
            if hasattr(model, "drop_path_prob"):
                model.drop_path_prob = drop_path_prob(train_cfg.drop_path_max, epoch, train_cfg.epochs)
            loader_generator.manual_seed(train_cfg.seed * 1_000_003 + epoch)  # per-epoch order: resume-exact
            epoch_start = time.perf_counter()
            seen = loss_sum = miss1 = miss5 = 0
            window_seen, window_loss, window_miss, window_start = 0, 0.0, 0, time.perf_counter()
            part_sums: dict[str, float] = {}
            window_parts: dict[str, float] = {}
            for batch, (images, targets) in enumerate(train_loader):
                stop.check()
                images, targets = to_device(images, targets, device, channels_last)
                with precision.autocast():
                    loss, logits, parts = objective(model, images, targets, phase)

                # a NaN/inf loss stops the run here, not days later (research notes, Dec 2017)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    global_step = epoch * steps_per_epoch + batch
                    raise NonFiniteLoss(f"non-finite loss ({loss_value}) at epoch {epoch + 1}, step {global_step} "
                                        f"(batch {batch + 1}/{steps_per_epoch}); lr {scheduler.get_last_lr()[0]:.4g}")

                precision.backward_and_step(loss, optimizer, params, train_cfg.grad_clip)
                scheduler.step()

                # -- bookkeeping and progress --------------------------------------------
                count = len(targets)
                m1, m5 = topk_errors(logits.detach().float(), targets)
                seen, loss_sum, miss1, miss5 = seen + count, loss_sum + loss_value * count, miss1 + m1, miss5 + m5
                window_seen, window_loss = window_seen + count, window_loss + loss_value * count
                window_miss += m1
                for key, value in parts.items():
                    part_sums[key] = part_sums.get(key, 0.0) + float(value) * count
                    window_parts[key] = window_parts.get(key, 0.0) + float(value) * count
                if (batch + 1) % log_cfg.step_every == 0 or batch + 1 == steps_per_epoch:
                    elapsed = time.perf_counter() - window_start
                    run.append_metric({"event": "step", "epoch": epoch + 1, "step": epoch * steps_per_epoch + batch + 1,
                                       "batch": batch + 1, "batches": steps_per_epoch, "split": "train", **stage,
                                       "loss": window_loss / window_seen, "err1": 100.0 * window_miss / window_seen,
                                       **{key: value / window_seen for key, value in window_parts.items()},
                                       "lr": scheduler.get_last_lr()[0],
                                       "throughput": window_seen / elapsed if elapsed > 0 else None})
                    window_seen, window_loss, window_miss, window_start = 0, 0.0, 0, time.perf_counter()
                    window_parts = {}
                if time.monotonic() - last_heartbeat > HEARTBEAT_SECONDS:
                    run.update_status(heartbeat=now_iso())
                    last_heartbeat = time.monotonic()

            epoch_seconds = time.perf_counter() - epoch_start
            train_seconds += epoch_seconds
            train_metrics = {"loss": loss_sum / seen, "err1": 100.0 * miss1 / seen, "err5": 100.0 * miss5 / seen}
            extras = {key: value / seen for key, value in part_sums.items()}
            if hasattr(model, "drop_path_prob"):
                extras["drop_path_prob"] = model.drop_path_prob
            run.append_metric({"event": "epoch", "epoch": epoch + 1, "split": "train", **stage, **train_metrics,
                               **extras, "lr": scheduler.get_last_lr()[0], "throughput": seen / epoch_seconds,
                               "seconds": epoch_seconds})

            # -- evaluate and checkpoint -------------------------------------------------
            last_epoch = epoch + 1 == train_cfg.epochs
            line = (f"epoch {epoch + 1}/{train_cfg.epochs}{' ' + phase.name if stage else ''} "
                    f"train loss {train_metrics['loss']:.4f} err {train_metrics['err1']:.2f}%")
            if (epoch + 1) % log_cfg.eval_every == 0 or last_epoch:
                val_metrics = evaluate(model, val_loader, device, stop, precision, channels_last)
                run.append_metric({"event": "eval", "epoch": epoch + 1, "split": "val", **stage, **val_metrics})
                line += f" | val loss {val_metrics['loss']:.4f} err {val_metrics['err1']:.2f}%"
                if val_metrics["err1"] < best_err1:
                    best_err1, best_epoch = val_metrics["err1"], epoch + 1
                    atomic_save({"model": model.state_dict(), "epoch": epoch + 1, "val": val_metrics,
                                 "config": config.to_dict()}, run.file(BEST_FILE))
            if (epoch + 1) % log_cfg.checkpoint_every == 0 or last_epoch:
                atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "phase": phase.index,
                             "objective": objective.state_dict(), "scaler": precision.state_dict(),
                             "best_err1": best_err1, "best_epoch": best_epoch, "train_seconds": train_seconds,
                             "rng": rng_state(), "config": config.to_dict()}, run.file(CHECKPOINT_FILE))
            print(f"{line} | {seen / epoch_seconds:.0f} img/s", flush=True)
            run.update_status(epoch=epoch + 1, heartbeat=now_iso(), last_loss=train_metrics["loss"],
                              last_val_err1=val_metrics.get("err1"),
                              best_val_err1=None if math.isinf(best_err1) else best_err1, **stage)
            last_heartbeat = time.monotonic()
    objective.close()

    # -- final test ----------------------------------------------------------------------
    test_metrics = evaluate(model, test_loader, device, stop, precision, channels_last)
    run.append_metric({"event": "test", "epoch": train_cfg.epochs, "split": "test", **test_metrics})
    summary = {"params": net.params, "macs": net.macs, "dense_params": net.dense_params,
               "dense_macs": net.dense_macs, "method": net.method, "hp": net.hp,
               "budget_target": net.budget_target, "budget_gap": net.budget_gap,
               "final_val_err1": val_metrics.get("err1"),
               "best_val_err1": None if math.isinf(best_err1) else best_err1, "best_epoch": best_epoch,
               "test_err1": test_metrics["err1"], "test_err5": test_metrics["err5"],
               "test_loss": test_metrics["loss"], "train_seconds": train_seconds, **teacher_facts}
    return summary


def _results_row(run: RunDir, status: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    config = run.read_config()
    return {**summary, "run_id": run.run_id, "name": config.get("name"), "sweep": status.get("sweep"),
            "state": "finished", "model": config.get("model", {}).get("name"),
            "dataset": config.get("data", {}).get("name"),
            "budget": budget_of(config, status),
            "epochs": config.get("train", {}).get("epochs"), "seed": config.get("train", {}).get("seed"),
            "ended": status.get("ended"), "run_dir": str(run.path)}


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: run the experiment in RUN_DIR and record how it ended."""
    parser = argparse.ArgumentParser(prog="python -m lowrank.train", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the run directory holding config.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint.pt")
    args = parser.parse_args(argv)
    run = RunDir(args.run_dir.resolve())
    if not run.file(CONFIG_FILE).exists():
        print(f"error: {run.file(CONFIG_FILE)} not found: not a run directory", file=sys.stderr)
        return 2

    stop = _StopFlag()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        summary = train(run, args.resume, stop)
    except StopRequested as stopped:
        code = 128 + stopped.signum
        run.append_metric({"event": "end", "state": "killed", "signal": str(stopped)})
        run.update_status(state="killed", ended=now_iso(), exit_code=code, error=f"stopped by {stopped}")
        print(f"stopped by {stopped}", flush=True)
        return code
    except (NonFiniteLoss, UserError) as error:
        run.append_metric({"event": "end", "state": "failed", "error": str(error)})
        run.update_status(state="failed", ended=now_iso(), exit_code=1, error=str(error))
        print(f"failed: {error}", file=sys.stderr, flush=True)
        return 1
    except BaseException as error:  # a bug or an environment failure: keep the traceback in output.log
        traceback.print_exc()
        summary_line = f"{type(error).__name__}: {error}".strip()
        run.append_metric({"event": "end", "state": "failed", "error": summary_line})
        run.update_status(state="failed", ended=now_iso(), exit_code=1, error=summary_line)
        return 1
    run.append_metric({"event": "end", "state": "finished", **summary})
    status = run.update_status(state="finished", ended=now_iso(), exit_code=0, **summary)
    append_result(_results_row(run, status, summary), home=run.home)
    print(f"finished: test err {summary['test_err1']:.2f}% (best val {summary['best_val_err1']:.2f}%)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
