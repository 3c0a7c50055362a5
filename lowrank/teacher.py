"""The teacher of a distillation or imitation run: find its checkpoint, build it, verify it.

``teacher.checkpoint`` is a file path or a run id. A run id resolves to the run's
``checkpoint.pt`` - after a finished run, the final weights, the ones its reported
``test_err1`` was measured on - or, before the first checkpoint, ``best.pt`` (give the
path of ``best.pt`` to use the best-validation weights instead: they generally have a
different test error). Existence is checked here, in the worker, not when the preset is
validated: a student preset names a teacher the user trains first.

The network: our checkpoints carry the config they were trained with, and the teacher is
rebuilt from it exactly (substituted layers included); ``teacher.model``, when given, must
agree with it. A foreign state dict (no config) is loaded into ``teacher.model`` built
plainly from the registry. With ``teacher.verify`` the trainer measures the teacher's own
test error before training (the research notes, 22 Nov 2018, found a teacher 0.25% worse
than claimed once loaded); :func:`claimed_error` is the figure its run reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .config import ExperimentConfig, from_dict
from .distill import freeze, load_weights
from .errors import UserError
from .rundir import BEST_FILE, CHECKPOINT_FILE, runs_root


def resolve_checkpoint(spec: str, home: Path | None = None) -> Path:
    """The teacher file named by ``spec``: an existing path, or a run id's best.pt / checkpoint.pt."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path.resolve()
    run_dir = runs_root(home) / spec
    if "/" not in spec and run_dir.is_dir():
        for name in (CHECKPOINT_FILE, BEST_FILE):
            if (run_dir / name).is_file():
                return run_dir / name
        raise UserError(f"run {spec} has no {CHECKPOINT_FILE} or {BEST_FILE} yet", key="teacher.checkpoint",
                        file=str(run_dir), hint="wait for the teacher run to evaluate at least once")
    raise UserError(f"teacher checkpoint not found: {spec}", key="teacher.checkpoint",
                    hint=f"give an existing .pt file (absolute, or relative to {Path.cwd()}) or a run id under "
                         f"{runs_root(home)}, e.g. --set teacher.checkpoint=<run id of the teacher run>")


def _read(path: Path) -> Any:
    """The teacher file's contents, loaded weights-only (a refused or unreadable file is a UserError)."""
    from .safeload import load_file

    return load_file(path, what="teacher checkpoint", key="teacher.checkpoint")


def _saved_config(contents: Any) -> dict[str, Any] | None:
    """The experiment config our checkpoints carry (None for a foreign state dict)."""
    config = contents.get("config") if isinstance(contents, dict) else None
    return config if isinstance(config, dict) else None


def claimed_error(path: Path) -> float | None:
    """The test error the teacher's own run reported, when ``path`` is that run's final checkpoint."""
    status = path.parent / "status.json"
    if path.name != CHECKPOINT_FILE or not status.is_file():
        return None
    try:
        return json.loads(status.read_text(encoding="utf-8")).get("test_err1")
    except (OSError, ValueError):
        return None


def build_teacher(config: ExperimentConfig, num_classes: int, input_shape: tuple[int, int, int],
                  device: torch.device, home: Path | None = None) -> tuple[nn.Module, Path]:
    """The frozen teacher on ``device`` and the file it came from."""
    from .build import build_network

    path = resolve_checkpoint(config.teacher.checkpoint, home)
    contents = _read(path)  # read once, weights only: a teacher from someone else never runs code
    spec, saved = config.teacher.model, _saved_config(contents)
    if saved is None:
        if spec is None:
            raise UserError("the teacher checkpoint carries no config to rebuild the network from",
                            key="teacher.model", file=str(path), hint="give teacher.model: {name: ..., kwargs: ...}")
        from .models import create_model

        model = create_model(spec.name, num_classes=num_classes, in_channels=input_shape[0], **(spec.kwargs or {}))
        load_weights(model, path, what="teacher weights", contents=contents)
        return freeze(model.to(device)), path
    teacher_config = from_dict(saved, source=f"{path} (saved config)")
    trained = teacher_config.model
    if spec is not None and (spec.name, spec.kwargs) != (trained.name, trained.kwargs):
        raise UserError(f"teacher.model is {spec.name} {spec.kwargs} but the checkpoint was trained as "
                        f"{trained.name} {trained.kwargs}", key="teacher.model", file=str(path),
                        hint="fix teacher.model or leave it out to use the checkpoint's own")
    model = build_network(teacher_config, num_classes, input_shape, device="cpu").model
    load_weights(model, path, what="teacher weights", contents=contents)
    return freeze(model.to(device)), path
