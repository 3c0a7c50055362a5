"""The epoch/step loop: one flat loop in commented phases (after nanoGPT).

Protocol choices are config fields; the loop writes only into the run directory
(status.json, metrics.jsonl, checkpoints). ``worker.main`` calls :func:`train`.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from ..amp import Precision
from ..config import from_dict
from ..distributed import Solo, connect, rank_seed, read_env
from ..errors import UserError
from ..faults import armed, fault_point
from ..provenance import record_runtime
from ..rundir import BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, RunDir, now_iso
from ..trial import Pruned, TrialReporter
from .allocator import tune_cpu_allocator
from .checkpoint import load_checkpoint, rng_state, seed_everything, set_rng_state
from .device import resolve_device, to_device
from .evaluation import evaluate, top5_error
from .parallel import LockstepStop, check_config, process_facts, rank_states, sync_buffers, wrap
from .resident import ResidentLoader
from .shard import ShardedBatches, check_split
from .position import MidEpoch, Replay, window_from_dict, window_to_dict
from .stop import StopFlag, StopRequested
from .tally import Tally, Window
from .writer import CheckpointWriter, serialize, write_atomically

HEARTBEAT_SECONDS = 2.0  # status.json is rewritten at most this often while training


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; the run fails with the epoch and step."""


def train(run: RunDir, resume: bool, stop: StopFlag) -> dict[str, Any]:
    """Train the run's experiment to the end; returns the summary written to status.json.

    Under torchrun every rank calls this; it joins the process group (lowrank.distributed)
    first and leaves it at the end, whatever happens. ``run`` is a rank's own view: rank 0
    writes, the others read (lowrank.train.parallel.FollowerRun).
    """
    config = from_dict(run.read_config(), source=str(run.file(CONFIG_FILE)))
    env = read_env()
    check_config(config, env.world_size)  # before joining: every rank refuses the same config alike
    device = resolve_device(config.train.device)
    group = connect(env, device.type)
    writer = CheckpointWriter()
    try:
        summary = _train(run, resume, stop, config, group.device if group.distributed else device, group, writer)
        writer.wait()  # every checkpoint on disk before the run can be called finished
        return summary
    finally:
        writer.close()  # after an error too: the last checkpoint is finished, not left half-written
        group.close()


def _train(run: RunDir, resume: bool, local_stop: StopFlag, config: Any, device: torch.device,
           group: Solo, writer: CheckpointWriter) -> dict[str, Any]:
    """The loop itself, on this rank's ``device`` in ``group`` (lowrank.distributed.SOLO: one process).

    ``stop`` is what the loop checks: the signal flag itself for one process, with W ranks a
    collective check (LockstepStop) so every rank stops, and checkpoints, at the same step.
    """
    stop = LockstepStop(local_stop, group) if group.distributed else local_stop
    from ..build import build_network
    from ..data import build_datasets, describe
    from ..protocol import build_objective, drop_path_prob, make_optimizer, plan_phases
    from ..schedule import lr_multiplier
    from ..teacher import build_teacher, claimed_error

    train_cfg, log_cfg = config.train, config.log
    say = print if group.is_main else _quiet  # one copy of each line in output.log
    precision = Precision(train_cfg.amp, device)
    channels_last = train_cfg.channels_last in (True, "auto") and device.type == "cuda"  # a no-op on the CPU
    seed_everything(train_cfg.seed, train_cfg.deterministic)  # every rank alike: the same network is built
    run.update_status(state="running", **process_facts(group), started=now_iso(),
                      heartbeat=now_iso(), device=str(device), epochs=train_cfg.epochs, error=None,
                      exit_code=None, ended=None)
    # None unless `lowrank tune` made this run a trial (tune.json); rank 0 talks to the study
    reporter = TrialReporter.for_run(run.path) if group.is_main else None
    is_trial = group.broadcast(reporter is not None)
    # torch/CUDA/cuDNN versions, GPU names and the malloc settings into status provenance
    record_runtime(run, tune_cpu_allocator())
    if log_cfg.tensorboard and group.is_main:  # the tensorboard package is imported only when asked for
        from ..tensorboard import attach

        attach(run)

    # -- data ------------------------------------------------------------------------
    stop.check()  # a kill during setup stops here, between stages, not only once training runs
    data = build_datasets(config.data)
    pin = config.data.pin_memory and device.type == "cuda"
    loader_generator = torch.Generator()
    eval_bs = config.data.eval_batch_size or config.data.batch_size
    if not group.distributed:
        train_loader = DataLoader(data.train, batch_size=config.data.batch_size, shuffle=True, drop_last=False,
                                  num_workers=config.data.workers, pin_memory=pin, generator=loader_generator,
                                  persistent_workers=False)
        val_loader = DataLoader(data.val, batch_size=eval_bs, num_workers=config.data.workers, pin_memory=pin)
        test_loader = DataLoader(data.test, batch_size=eval_bs, num_workers=config.data.workers, pin_memory=pin)
    else:  # this rank's slice of every global batch, drawn in the single-process order (lowrank.train.shard)
        check_split(config.data.batch_size, group.world_size, len(data.train))
        rank, world = group.rank, group.world_size

        def sharded(dataset, sampler, batch_size, **extra):
            batches = ShardedBatches(BatchSampler(sampler, batch_size, drop_last=False), rank, world)
            return DataLoader(dataset, batch_sampler=batches, num_workers=config.data.workers, pin_memory=pin,
                              worker_init_fn=_ignore_stop_signals, **extra)

        train_loader = sharded(data.train, RandomSampler(data.train, generator=loader_generator),
                               config.data.batch_size, generator=loader_generator)
        val_loader = sharded(data.val, SequentialSampler(data.val), eval_bs)
        test_loader = sharded(data.test, SequentialSampler(data.test), eval_bs)
    if config.data.device is not None:  # the dataset on the device, batches gathered and augmented there
        if torch.device(config.data.device).type != device.type:
            raise UserError(f"data.device is {config.data.device} but the run trains on {device}",
                            key="data.device", hint=f"set data.device={device.type} or leave it unset")
        shard = (group.rank, group.world_size)
        train_loader = ResidentLoader(data.train, config.data.batch_size, device, shuffle=True,
                                      generator=loader_generator, augment=config.data.augment, shard=shard)
        val_loader = ResidentLoader(data.val, eval_bs, device, shard=shard)
        test_loader = ResidentLoader(data.test, eval_bs, device, shard=shard)

    # -- network, teacher, objective, phases ---------------------------------------------
    stop.check()
    net = build_network(config, data.num_classes, data.input_shape, device=device)
    model = net.model.to(memory_format=torch.channels_last) if channels_last else net.model
    if train_cfg.sync_bn and group.distributed:  # before any hook or optimiser sees the BatchNorm layers
        from ..sync_bn import convert

        model = convert(model, device.type)
    bayes = None
    if config.bayes is not None:  # Bayesian layers before the teacher's hooks, the optimiser and any resume
        from ..bayes.hook import attach
        from ..bayes.objective import training_examples
        bayes = attach(config, model, training_examples(data.train), data.input_shape, device)
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
            measured = evaluate(teacher, test_loader, device, local_stop, precision, channels_last, group)
            teacher_facts.update(teacher_err1=measured["err1"], teacher_err5=measured["err5"])
            run.append_metric({"event": "teacher", "split": "test", "checkpoint": str(teacher_path),
                               "claimed_err1": claimed, **measured})
            say(f"teacher {teacher_path}: test err {measured['err1']:.2f}%"
                  + (f" (top-5 {measured['err5']:.2f}%)" if measured["err5"] is not None else "")
                  + (f"; its run reported {claimed:.2f}%" if claimed is not None else ""), flush=True)
        run.update_status(**teacher_facts)
    stop.check()
    objective = build_objective(config, model, teacher, data.input_shape, device)
    if bayes is not None:
        objective = bayes.wrap(objective)  # + kl_weight * KL / N (N training examples)
    phases = plan_phases(config)
    steps_per_epoch = len(train_loader)

    if group.rank:  # each rank's own augmentation/dropout draws (rank 0 keeps the single-process stream)
        seed_everything(rank_seed(train_cfg.seed, group.rank), train_cfg.deterministic)
    start_epoch, best_err1, best_epoch, train_seconds, state, mid = 0, math.inf, None, 0.0, None, None
    if resume and run.file(CHECKPOINT_FILE).exists():
        state = load_checkpoint(run.file(CHECKPOINT_FILE), map_location=device)  # weights only, never code
        model.load_state_dict(state["model"])
        objective.load_state_dict(state.get("objective", {}))
        precision.load_state_dict(state.get("scaler", {}))
        start_epoch, best_err1, best_epoch = state["epoch"], state["best_err1"], state["best_epoch"]
        train_seconds = state.get("train_seconds", 0.0)
        state = rank_states(state, group, say)  # with W ranks: this rank's own RNG states
        set_rng_state(state["rng"])
        mid = MidEpoch.from_checkpoint(state)  # stopped inside an epoch: continue at that step
    elif resume:
        say("no checkpoint to resume from: starting from epoch 0", flush=True)

    facts = net.summary()
    run.update_status(**{k: facts[k] for k in ("params", "macs", "dense_params", "dense_macs", "method", "hp",
                                                  "training_only_params")},
                      epoch=start_epoch, steps_per_epoch=steps_per_epoch, val_is_test=data.val_is_test)
    run.append_metric({"event": "start", "epoch": start_epoch, "resumed": bool(resume and start_epoch),
                       "device": str(device), "data": describe(data), "amp": precision.mode,
                       "channels_last": channels_last,
                       "phases": [{"name": p.name, "epochs": p.epochs} for p in phases], **facts})
    say(f"{config.name}: {net.params:,} params ({net.params / net.dense_params:.3f} of dense), "
          f"{net.macs:,} mult-adds, device {device}, {len(data.train)} training images", flush=True)

    # a compiled student for the forward passes; `model` stays the plain module (state dicts, hooks);
    # with W ranks the student trains inside DistributedDataParallel and evaluates unwrapped (its
    # shards differ in length, so a forward must not be a collective)
    ddp = wrap(model, group, device, train_cfg.aux_weight) if group.distributed else None
    step_model = torch.compile(ddp or model) if train_cfg.compile else (ddp or model)
    eval_model = (torch.compile(model) if train_cfg.compile else model) if ddp is not None else step_model
    poisoned = group.distributed and armed(f"nan-loss@rank{group.rank}")  # tests only (lowrank.faults)
    train_size, global_batch = len(data.train), config.data.batch_size
    accumulate = train_cfg.accumulate
    best_pending: dict[str, Any] | None = None  # best.pt content not yet on disk (written with checkpoints)

    def save_checkpoint(epoch_done: int, phase_index: int, position: MidEpoch | None = None,
                        rng: dict[str, Any] | None = None, wait: bool = False) -> None:
        """best.pt (if a better model is pending), then checkpoint.pt, both atomically;
        ``position``: a stop inside epoch ``epoch_done + 1`` (see lowrank.train.position).
        Serialised here, written by the background writer (lowrank.train.writer); ``wait``:
        return only once both are on disk. With W ranks (all call this) rank 0 writes, with
        every rank's RNG states gathered in."""
        nonlocal best_pending
        rng = rng if rng is not None else rng_state()
        ranks = group.gather((rng, position.epoch_rng if position is not None else None)) \
            if group.distributed else None
        if not group.is_main:
            return
        best = serialize(best_pending) if best_pending is not None else None
        best_pending = None
        state = serialize({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "epoch": epoch_done, "phase": phase_index,
                          "objective": objective.state_dict(), "scaler": precision.state_dict(),
                          "best_err1": best_err1, "best_epoch": best_epoch, "train_seconds": train_seconds,
                          "rng": rng, "config": config.to_dict(),
                          "mid_epoch": position.to_checkpoint() if position is not None else None,
                          **({"rng_ranks": [r for r, _ in ranks], "epoch_rng_ranks": [e for _, e in ranks]}
                             if ranks else {})})

        def write() -> None:
            run.sync_metrics()  # durable record first: the metric lines of the epochs this checkpoint claims
            if best is not None:
                write_atomically(best, run.file(BEST_FILE), sync_dir=False)  # checkpoint.pt's fsyncs the directory
            write_atomically(state, run.file(CHECKPOINT_FILE))

        writer.submit(write)
        if wait:
            writer.wait()

    last_status = time.monotonic()
    progress: dict[str, Any] = {}  # the latest epoch's facts: every status write carries them
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
        inside = start_epoch > phase.start or (mid is not None and phase.start <= mid.epoch < phase.end)
        if state is not None and inside:  # resuming inside this phase
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        stage = {"stage": phase.name} if config.imitation is not None else {}
        for epoch in range(max(start_epoch, phase.start), phase.end):
            # -- train one epoch ---------------------------------------------------------
            model.train()
            if hasattr(model, "drop_path_prob"):
                model.drop_path_prob = drop_path_prob(train_cfg.drop_path_max, epoch, train_cfg.epochs)
            loader_generator.manual_seed(train_cfg.seed * 1_000_003 + epoch)  # per-epoch order: resume-exact
            replay = Replay(mid) if mid is not None and epoch == mid.epoch else None
            if replay is not None:
                replay.begin_epoch()  # the RNG as it was when this epoch began
            epoch_rng = rng_state()  # kept for a stop inside this epoch
            epoch_start = time.perf_counter() - (replay.mid.seconds if replay is not None else 0.0)
            totals = window_from_dict(replay.mid.totals) if replay is not None else Window()
            tally, window_first, window_start = Tally(), 0, time.perf_counter()
            for batch, (images, targets) in enumerate(train_loader):
                if replay is not None and replay.skip(batch):
                    window_first = batch + 1
                    continue  # trained before the stop: loaded again (same draws), not trained on
                images, targets = to_device(images, targets, device, channels_last)

                # -- forward/backward per micro-batch, one optimizer step -----------------
                # each chunk's mean loss is weighted by its share of the batch, so the summed
                # gradients equal the whole batch's (exactly so for models without BatchNorm)
                optimizer.zero_grad(set_to_none=True)
                if bayes is not None:
                    bayes.begin_step(epoch + batch / steps_per_epoch)  # KL warm-up
                count = len(targets)
                chunks = list(zip(images.chunk(accumulate), targets.chunk(accumulate))) if accumulate > 1 \
                    else [(images, targets)]
                # with W ranks: DDP averages the W ranks' gradients, so this rank's mean loss is weighted
                # by count * W / (the global batch's size): the gradient is the global batch's mean
                scale = 1.0 if ddp is None else count * group.world_size / min(global_batch,
                                                                               train_size - batch * global_batch)
                step_loss, step_parts, predictions = None, {}, []
                for index, (chunk_images, chunk_targets) in enumerate(chunks):
                    # accumulation micro-steps keep their gradients local; the last one all-reduces
                    local = ddp.no_sync() if ddp is not None and index < len(chunks) - 1 else contextlib.nullcontext()
                    with local:
                        with precision.autocast():
                            loss, logits, parts = objective(step_model, chunk_images, chunk_targets, phase)
                        if poisoned and batch >= 2:
                            loss = loss * float("nan")
                        predictions.append((logits, chunk_targets))  # ranked in the tally, batched
                        if accumulate == 1:
                            precision.backward(loss if scale == 1.0 else loss * scale)
                            step_loss, step_parts = loss.detach(), parts
                            continue
                        share = len(chunk_targets) / count
                        precision.backward(loss * (share * scale))
                    loss = loss.detach() * share
                    step_loss = loss if step_loss is None else step_loss + loss
                    for key, value in parts.items():
                        step_parts[key] = value * share + step_parts.get(key, 0.0)
                precision.step(optimizer, params, train_cfg.grad_clip)
                if bayes is not None:
                    bayes.after_step()  # clip_var
                scheduler.step()
                tally.add(step_loss, predictions, count, step_parts)  # stays on the device: no sync

                # -- progress: one device read per logging step ---------------------------
                if (batch + 1) % log_cfg.step_every == 0 or batch + 1 == steps_per_epoch:
                    window = tally.read(group.sum if group.distributed else None)  # global figures
                    if window.bad_step is not None:  # a NaN/inf loss stops the run here (notes, Dec 2017)
                        bad = window_first + window.bad_step
                        global_step = epoch * steps_per_epoch + bad
                        raise NonFiniteLoss(f"non-finite loss ({window.bad_loss}) at epoch {epoch + 1}, step "
                                            f"{global_step} (batch {bad + 1}/{steps_per_epoch}); "
                                            f"lr {scheduler.get_last_lr()[0]:.4g}"
                                            + (bayes.blame() if bayes is not None else ""))
                    totals.add(window)
                    elapsed = time.perf_counter() - window_start
                    run.append_metric({"event": "step", "epoch": epoch + 1, "step": epoch * steps_per_epoch + batch + 1,
                                       "batch": batch + 1, "batches": steps_per_epoch, "split": "train", **stage,
                                       "loss": window.loss_sum / window.seen, "err1": 100.0 * window.miss1 / window.seen,
                                       **{key: value / window.seen for key, value in window.parts.items()},
                                       "lr": scheduler.get_last_lr()[0],
                                       "throughput": window.seen / elapsed if elapsed > 0 else None})
                    window_first, window_start = batch + 1, time.perf_counter()
                    if time.monotonic() - last_status > HEARTBEAT_SECONDS:
                        # with the epoch facts: a step heartbeat resets the clock, so an epoch end
                        # soon after it writes nothing, and `ls` showed epochs long finished as to do
                        run.update_status(heartbeat=now_iso(), **progress)
                        last_status = time.monotonic()

                # -- a stop signal: checkpoint at this step boundary, then end (resume continues here)
                if stop.requested():  # with W ranks: agreed by all, so all checkpoint here together
                    window = tally.read(group.sum if group.distributed else None)
                    if window.bad_step is None:  # never checkpoint a diverged step
                        totals.add(window)
                        save_checkpoint(epoch, phase.index, MidEpoch(
                            epoch, batch + 1, window_to_dict(totals), epoch_rng, {},
                            seconds=time.perf_counter() - epoch_start), wait=True)
                        fault_point("worker-stop-checkpoint")
                    stop.check()
            if replay is not None:
                replay.finish()  # every batch of the epoch was trained before the stop

            epoch_seconds = time.perf_counter() - epoch_start
            train_seconds += epoch_seconds
            seen = totals.seen
            train_metrics = {"loss": totals.loss_sum / seen, "err1": 100.0 * totals.miss1 / seen,
                             "err5": top5_error(totals.miss5, seen, data.num_classes)}
            extras = {key: value / seen for key, value in totals.parts.items()}
            if hasattr(model, "drop_path_prob"):
                extras["drop_path_prob"] = model.drop_path_prob
            if bayes is not None:  # KL, groups kept per layer, weights kept, the two factors
                extras.update(bayes.epoch_metrics())
            if replay is None or not replay.mid.epoch_logged:
                run.append_metric({"event": "epoch", "epoch": epoch + 1, "split": "train", **stage, **train_metrics,
                                   **extras, "lr": scheduler.get_last_lr()[0], "throughput": seen / epoch_seconds,
                                   "seconds": epoch_seconds})

            # -- evaluate and checkpoint -------------------------------------------------
            last_epoch = epoch + 1 == train_cfg.epochs
            checkpoint_due = (epoch + 1) % log_cfg.checkpoint_every == 0 or last_epoch
            line = (f"epoch {epoch + 1}/{train_cfg.epochs}{' ' + phase.name if stage else ''} "
                    f"train loss {train_metrics['loss']:.4f} err {train_metrics['err1']:.2f}%")
            evaluated = (epoch + 1) % log_cfg.eval_every == 0 or last_epoch
            if evaluated:
                before_eval = rng_state()  # iterating a loader draws its worker seed from the global RNG
                sync_buffers(model, group)  # rank 0's BatchNorm statistics on every rank
                try:
                    # with W ranks a stop in here ends every rank's pass together (evaluate reduces it)
                    val_metrics = evaluate(eval_model, val_loader, device, local_stop, precision, channels_last,
                                           group)
                except StopRequested:  # stopped in the epoch's evaluation: resume re-evaluates it
                    save_checkpoint(epoch, phase.index, MidEpoch(
                        epoch, steps_per_epoch, window_to_dict(totals), epoch_rng, {}, epoch_logged=True,
                        seconds=epoch_seconds), rng=before_eval, wait=True)
                    raise
                # made durable by save_checkpoint, before the checkpoint that records its outcome
                run.append_metric({"event": "eval", "epoch": epoch + 1, "split": "val", **stage, **val_metrics})
                line += f" | val loss {val_metrics['loss']:.4f} err {val_metrics['err1']:.2f}%"
                if val_metrics["err1"] < best_err1:
                    best_err1, best_epoch = val_metrics["err1"], epoch + 1
                    # kept in memory and written with the next checkpoint (one save per checkpoint,
                    # and best.pt always agrees with the best_err1 that checkpoint.pt resumes with)
                    best_pending = None if not group.is_main else {"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                                    "epoch": epoch + 1, "val": val_metrics, "config": config.to_dict()}
            if checkpoint_due:
                save_checkpoint(epoch + 1, phase.index)
            say(f"{line} | {seen / epoch_seconds:.0f} img/s", flush=True)
            # status.json is rewritten at most every HEARTBEAT_SECONDS (and at the last epoch)
            progress = {"epoch": epoch + 1, "last_loss": train_metrics["loss"],
                        "last_val_err1": val_metrics.get("err1"),
                        "best_val_err1": None if math.isinf(best_err1) else best_err1, **stage}
            if last_epoch or time.monotonic() - last_status > HEARTBEAT_SECONDS:
                run.update_status(heartbeat=now_iso(), **progress)
                last_status = time.monotonic()
            # -- a trial: report this evaluation; the pruner may stop the run here ---------------
            if is_trial and evaluated:
                decision = None  # rank 0 asks the study; every rank follows its answer
                if reporter is not None:
                    try:
                        reporter.report(epoch + 1, val_metrics, best_err1, may_prune=not last_epoch)
                    except Pruned as told:
                        decision = (told.epoch, told.value)
                decision = group.broadcast(decision)
                try:
                    if decision is not None:
                        raise Pruned(*decision)
                except Pruned as pruned:
                    if not checkpoint_due:
                        save_checkpoint(epoch + 1, phase.index, wait=True)  # a clean epoch boundary: resumable
                    pruned.summary = {**{key: facts[key] for key in ("params", "macs", "dense_params", "dense_macs",
                                                                     "method", "hp")},
                                      "epoch": epoch + 1, "last_loss": train_metrics["loss"],
                                      "final_val_err1": val_metrics.get("err1"), "best_val_err1": best_err1,
                                      "best_epoch": best_epoch, "train_seconds": train_seconds, **teacher_facts}
                    raise
    objective.close()

    # -- final test ----------------------------------------------------------------------
    bayes_facts: dict[str, Any] = {}
    if bayes is not None:  # unmasked/pruned/quantised errors, pruned.pt, bayes.json; leaves the model masked
        bayes_facts = bayes.finish(
            run.path, run.home, config.to_dict(), train_cfg.seed,
            lambda m: evaluate(m, test_loader, device, local_stop, precision, channels_last), test_loader,
            lambda images, targets: to_device(images, targets, device, channels_last))
        run.append_metric({"event": "bayes", "epoch": train_cfg.epochs, "split": "test", **bayes_facts})
    sync_buffers(model, group)
    test_metrics = evaluate(eval_model, test_loader, device, local_stop, precision, channels_last, group)
    run.append_metric({"event": "test", "epoch": train_cfg.epochs, "split": "test", **test_metrics})
    latency_facts: dict[str, Any] = {}
    if config.bench.after_run and group.is_main:  # measured, recorded with the results (lowrank.deploy)
        from ..deploy.after_run import measure_run

        latency_facts = measure_run(run.path, config, device)
        run.append_metric({"event": "latency", "epoch": train_cfg.epochs, **latency_facts})
        if "latency_ms_b1" in latency_facts:
            say(f"latency {latency_facts['latency_ms_b1']:.3f} ms at batch 1, {latency_facts['throughput']:.0f} img/s "
                f"at batch {latency_facts['throughput_batch']} ({latency_facts['latency_device']})", flush=True)
    summary = {"params": net.params, "macs": net.macs, "dense_params": net.dense_params,
               "dense_macs": net.dense_macs, "method": net.method, "hp": net.hp,
               "budget_target": net.budget_target, "budget_gap": net.budget_gap,
               "final_val_err1": val_metrics.get("err1"),
               "best_val_err1": None if math.isinf(best_err1) else best_err1, "best_epoch": best_epoch,
               "test_err1": test_metrics["err1"], "test_err5": test_metrics["err5"],
               "test_loss": test_metrics["loss"], "train_seconds": train_seconds, "val_is_test": data.val_is_test,
               **teacher_facts, **bayes_facts, **latency_facts}
    return summary


def _quiet(*args: Any, **kwargs: Any) -> None:
    """``print`` on ranks other than 0: their lines would repeat rank 0's in output.log."""


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers of a data-parallel rank ignore SIGTERM/SIGINT: torchrun signals each rank's
    whole process group, and a worker that died of it would turn the rank's clean stop into a
    crash; they exit when the rank shuts its loader down (or dies)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
