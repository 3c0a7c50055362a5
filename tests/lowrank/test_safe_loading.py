"""Checkpoints are data, not code: a malicious pickle through every load path runs nothing.

The fixture is a real ``torch.save`` file whose pickle calls ``exec`` (or ``os.system``)
to create a marker file when unpickled by the full unpickler. Each load path must refuse
it with one error naming the file, and the marker must never appear.
"""

from __future__ import annotations

import builtins
import os
import re
from pathlib import Path

import pytest
import torch

from lowrank.config import load
from lowrank.errors import UserError
from lowrank.rundir import RunDir
from lowrank.safeload import load_file
from lowrank.train import main, rng_state, set_rng_state

REPO = Path(__file__).resolve().parents[2]
DATA = ["model.name=tiny_convnet", "model.kwargs.width=8", "data.name=synthetic", "data.batch_size=16",
        "data.workers=0", "substitute.method=dense",
        "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 32, num_val: 16, num_test: 16}",
        "train.device=cpu", "train.epochs=1", "log.checkpoint_every=1"]


class ExecPayload:
    """Unpickles as ``exec(code)``: what a crafted checkpoint does to ``weights_only=False``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class SystemPayload(ExecPayload):
    """Unpickles as ``os.system("touch marker")``."""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def make_config(overrides=()):
    return load(REPO / "presets" / "quickstart.yaml", DATA + list(overrides))


@pytest.fixture(params=["exec-zip", "system-zip", "exec-legacy"])
def evil(request, tmp_path):
    """A factory: ``evil(path, like=...)`` writes a malicious .pt at ``path`` shaped like ``like``;
    ``evil.marker`` is the file its payload would create."""
    payload_cls = SystemPayload if request.param.startswith("system") else ExecPayload
    legacy = request.param.endswith("legacy")
    marker = tmp_path / f"MARKER-{request.param}"

    def write(path: Path, like: dict | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        obj = dict(like or {})
        obj["payload"] = payload_cls(marker)
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        return path

    write.marker = marker
    return write


def our_checkpoint_contents() -> dict:
    """What a lowrank checkpoint holds, so the malicious file passes any shape check first."""
    from lowrank.models import create_model

    model = create_model("tiny_convnet", num_classes=4, in_channels=1, width=8)
    return {"model": model.state_dict(), "config": make_config().to_dict(), "epoch": 1}


def assert_refused(error: UserError, path: Path, marker: Path) -> None:
    assert not marker.exists(), "the payload ran"
    assert error.file == str(path)
    assert "refused" in error.detail and "nothing in it was run" in error.detail
    assert "\n" not in error.detail  # one line (plus the hint)


def test_the_fixture_really_is_malicious(evil, tmp_path):
    """Sanity: the full unpickler runs the payload, so the tests below can fail."""
    path = evil(tmp_path / "x.pt")
    torch.load(path, weights_only=False)
    assert evil.marker.exists()


# ---------------------------------------------------------------- each load path


def test_load_file_refuses(evil, tmp_path):
    path = evil(tmp_path / "x.pt")
    with pytest.raises(UserError) as info:
        load_file(path)
    assert_refused(info.value, path, evil.marker)


def test_teacher_by_path(evil, home, tmp_path):
    from lowrank.teacher import build_teacher

    path = evil(tmp_path / "teacher.pt", our_checkpoint_contents())
    with pytest.raises(UserError) as info:
        build_teacher(make_config([f"teacher.checkpoint={path}"]), 4, (1, 8, 8), torch.device("cpu"), home)
    assert_refused(info.value, path, evil.marker)
    assert info.value.key == "teacher.checkpoint"


@pytest.mark.parametrize("planted", ["checkpoint.pt", "best.pt"])
def test_teacher_by_run_id(evil, home, planted):
    from lowrank.teacher import build_teacher

    run = RunDir.create(make_config().to_dict(), home=home)
    path = evil(run.file(planted), our_checkpoint_contents())
    with pytest.raises(UserError) as info:
        build_teacher(make_config([f"teacher.checkpoint={run.run_id}"]), 4, (1, 8, 8), torch.device("cpu"), home)
    assert_refused(info.value, path, evil.marker)


def test_foreign_teacher_with_teacher_model(evil, home, tmp_path):
    from lowrank.teacher import build_teacher

    path = evil(tmp_path / "foreign.pt", {"state_dict": our_checkpoint_contents()["model"]})
    config = make_config([f"teacher.checkpoint={path}", "teacher.model={name: tiny_convnet, kwargs: {width: 8}}"])
    with pytest.raises(UserError) as info:
        build_teacher(config, 4, (1, 8, 8), torch.device("cpu"), home)
    assert_refused(info.value, path, evil.marker)


def test_distill_load_teacher_and_load_weights(evil, tmp_path):
    from lowrank.distill import load_teacher, load_weights
    from lowrank.models import create_model

    path = evil(tmp_path / "w.pt", {"model": our_checkpoint_contents()["model"]})
    with pytest.raises(UserError) as info:
        load_teacher(path, "tiny_convnet", {"width": 8}, num_classes=4, in_channels=1)
    assert_refused(info.value, path, evil.marker)
    with pytest.raises(UserError) as info:
        load_weights(create_model("tiny_convnet", num_classes=4, in_channels=1, width=8), path)
    assert_refused(info.value, path, evil.marker)


def test_pretrained_model_weights(evil, tmp_path):
    """A model's ``weights_path`` (WRN-50-2's torchvision weights) goes through the same loader."""
    from lowrank.models import create_model

    path = evil(tmp_path / "wrn50_2.pt")
    with pytest.raises(UserError) as info:
        create_model("wrn50_2", num_classes=10, weights_path=str(path))
    assert_refused(info.value, path, evil.marker)


def test_resume_from_a_planted_checkpoint(evil, home):
    run = RunDir.create(make_config().to_dict(), home=home)
    path = evil(run.file("checkpoint.pt"), {**our_checkpoint_contents(), "rng": {}})
    assert main([str(run.path), "--resume"]) == 1
    assert not evil.marker.exists()
    status = run.read_status()
    assert status["state"] == "failed" and str(path) in status["error"] and "refused" in status["error"]


def test_worker_with_a_malicious_teacher_fails_cleanly(evil, home, tmp_path):
    path = evil(tmp_path / "teacher.pt", our_checkpoint_contents())
    run = RunDir.create(make_config([f"teacher.checkpoint={path}"]).to_dict(), home=home)
    assert main([str(run.path)]) == 1
    assert not evil.marker.exists()
    status = run.read_status()
    assert status["state"] == "failed" and str(path) in status["error"] and "refused" in status["error"]


# ---------------------------------------------------------------- no other load path exists


def test_every_torch_load_in_the_code_is_the_safe_one():
    """New code cannot add a load path that skips lowrank.safeload (the only torch.load)."""
    offenders = []
    for root in ("lowrank", "console", "benchmarks"):
        for path in (REPO / root).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            for match in re.finditer(r"torch\.load\(|weights_only\s*=\s*False|pickle\.loads?\(|Unpickler\(", text):
                offenders.append(f"{path.relative_to(REPO)}: {match.group(0)}")
    offenders = [item for item in offenders if not item.startswith("lowrank/safeload.py: torch.load(")]
    assert offenders == []


# ---------------------------------------------------------------- bad files, our own files


def test_a_text_file_as_teacher_says_cannot_read(home, tmp_path):
    from lowrank.teacher import build_teacher

    path = tmp_path / "notes.txt"
    path.write_text("this is my teacher, honest\n")
    with pytest.raises(UserError) as info:
        build_teacher(make_config([f"teacher.checkpoint={path}"]), 4, (1, 8, 8), torch.device("cpu"), home)
    assert "cannot read teacher checkpoint" in info.value.detail and "not a PyTorch checkpoint" in info.value.detail
    assert "carries no config" not in str(info.value) and info.value.file == str(path)


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, b"PK\x03\x04truncated zip"])
def test_truncated_or_empty_files_are_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a PyTorch checkpoint, or truncated") as info:
        load_file(path, what="teacher weights")
    assert info.value.file == str(path)


def test_our_checkpoints_load_weights_only_and_resume_exactly(home):
    run = RunDir.create(make_config().to_dict(), home=home)
    assert main([str(run.path)]) == 0
    for name in ("checkpoint.pt", "best.pt"):
        torch.load(run.file(name), weights_only=True)  # no numpy objects, no allow-list needed
    import random

    import numpy as np

    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    path = run.path / "rng.pt"
    torch.save(state, path)
    set_rng_state(torch.load(path, weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_a_checkpoint_with_python_rng_words_as_a_list_still_restores(home, tmp_path):
    """Checkpoints before issue 12's speed work kept python's 625 state words as a list; now
    they are one int64 tensor (one record for torch.save, not 625 pickled ints). Both restore."""
    import random

    import numpy as np

    state = rng_state()
    assert isinstance(state["python"][1], torch.Tensor) and state["python"][1].dtype == torch.int64
    expected = (random.random(), np.random.rand(), torch.rand(1))
    old = {**state, "python": [state["python"][0], state["python"][1].tolist(), state["python"][2]]}
    for saved in (state, old):
        path = tmp_path / "rng.pt"
        torch.save(saved, path)
        set_rng_state(torch.load(path, weights_only=True))
        assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_an_old_checkpoint_with_numpy_rng_state_still_resumes(home):
    """Checkpoints written before the RNG state became plain types hold numpy's state tuple."""
    import numpy as np

    run = RunDir.create(make_config(["train.epochs=2"]).to_dict(), home=home)
    assert main([str(run.path)]) == 0
    state = torch.load(run.file("checkpoint.pt"), weights_only=True)
    saved = state["rng"]["numpy"]
    state["rng"]["numpy"] = (saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["pos"],
                             saved["has_gauss"], saved["cached_gaussian"])
    state["epoch"] = 1
    torch.save(state, run.file("checkpoint.pt"))
    loaded = load_file(run.file("checkpoint.pt"))
    assert isinstance(loaded["rng"]["numpy"][1], np.ndarray)
    run.update_status(state="killed")
    assert main([str(run.path), "--resume"]) == 0
